package xray

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"time"
)

// X-Ray's JSON, as its clients write and read it. Requests use pointers
// where X-Ray distinguishes "absent" from "zero" (updates, required fields);
// responses always carry every field the clients read (the X-Ray SDK for
// Node.js ignores a rule without an "Attributes" object, and every target
// answer without "LastRuleModification").

type getSamplingRulesIn struct {
	NextToken *string
}

type samplingRulesOut struct {
	SamplingRuleRecords []ruleRecordOut `json:"SamplingRuleRecords"`
}

type ruleIn struct {
	RuleName          *string
	RuleARN           *string
	ResourceARN       *string
	Priority          *wireInt
	FixedRate         *float64
	ReservoirSize     *wireInt
	ServiceName       *string
	ServiceType       *string
	Host              *string
	HTTPMethod        *string
	URLPath           *string
	Version           *wireInt
	Attributes        map[string]string
	SamplingRateBoost json.RawMessage
}

type boostIn struct {
	MaxRate               *float64
	CooldownWindowMinutes *wireInt
}

type tagIn struct {
	Key   *string
	Value *string
}

type createSamplingRuleIn struct {
	SamplingRule *ruleIn
	Tags         []tagIn
}

type updateSamplingRuleIn struct {
	SamplingRuleUpdate *ruleIn
}

type deleteSamplingRuleIn struct {
	RuleName *string
	RuleARN  *string
}

type ruleRecordOut struct {
	SamplingRule ruleOut   `json:"SamplingRule"`
	CreatedAt    epochTime `json:"CreatedAt"`
	ModifiedAt   epochTime `json:"ModifiedAt"`
}

type ruleRecordEnvelope struct {
	SamplingRuleRecord ruleRecordOut `json:"SamplingRuleRecord"`
}

type ruleOut struct {
	RuleName          string            `json:"RuleName"`
	RuleARN           string            `json:"RuleARN"`
	ResourceARN       string            `json:"ResourceARN"`
	Priority          int32             `json:"Priority"`
	FixedRate         float64           `json:"FixedRate"`
	ReservoirSize     int64             `json:"ReservoirSize"`
	ServiceName       string            `json:"ServiceName"`
	ServiceType       string            `json:"ServiceType"`
	Host              string            `json:"Host"`
	HTTPMethod        string            `json:"HTTPMethod"`
	URLPath           string            `json:"URLPath"`
	Version           int32             `json:"Version"`
	Attributes        map[string]string `json:"Attributes"`
	SamplingRateBoost *boostOut         `json:"SamplingRateBoost,omitempty"`
}

type boostOut struct {
	MaxRate               float64 `json:"MaxRate"`
	CooldownWindowMinutes int64   `json:"CooldownWindowMinutes"`
}

type getSamplingTargetsIn struct {
	SamplingStatisticsDocuments      []statisticsIn
	SamplingBoostStatisticsDocuments []boostStatisticsIn
}

type statisticsIn struct {
	ClientID     *string
	RuleName     *string
	RequestCount wireInt
	SampledCount wireInt
	BorrowCount  wireInt
	Timestamp    epochTime
}

type boostStatisticsIn struct {
	RuleName            *string
	ServiceName         *string
	TotalCount          wireInt
	AnomalyCount        wireInt
	SampledAnomalyCount wireInt
	Timestamp           epochTime
}

type samplingTargetsOut struct {
	SamplingTargetDocuments    []targetOut      `json:"SamplingTargetDocuments"`
	LastRuleModification       epochTime        `json:"LastRuleModification"`
	UnprocessedStatistics      []unprocessedOut `json:"UnprocessedStatistics"`
	UnprocessedBoostStatistics []unprocessedOut `json:"UnprocessedBoostStatistics"`
}

type targetOut struct {
	RuleName          string            `json:"RuleName"`
	FixedRate         float64           `json:"FixedRate"`
	ReservoirQuota    int32             `json:"ReservoirQuota"`
	ReservoirQuotaTTL epochTime         `json:"ReservoirQuotaTTL"`
	Interval          int32             `json:"Interval,omitempty"`
	SamplingBoost     *samplingBoostOut `json:"SamplingBoost,omitempty"`
}

type samplingBoostOut struct {
	BoostRate    float64   `json:"BoostRate"`
	BoostRateTTL epochTime `json:"BoostRateTTL"`
}

type unprocessedOut struct {
	RuleName  string `json:"RuleName"`
	ErrorCode string `json:"ErrorCode"`
	Message   string `json:"Message"`
}

type summariesIn struct {
	NextToken *string
}

type summariesOut struct {
	SamplingStatisticSummaries []summaryOut `json:"SamplingStatisticSummaries"`
}

type summaryOut struct {
	RuleName     string    `json:"RuleName"`
	Timestamp    epochTime `json:"Timestamp"`
	RequestCount int64     `json:"RequestCount"`
	SampledCount int64     `json:"SampledCount"`
	BorrowCount  int64     `json:"BorrowCount"`
}

type tagResourceIn struct {
	ResourceARN *string
	Tags        []tagIn
}

type untagResourceIn struct {
	ResourceARN *string
	TagKeys     []string
}

type listTagsIn struct {
	ResourceARN *string
	NextToken   *string
}

type listTagsOut struct {
	Tags []tagOut `json:"Tags"`
}

type tagOut struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

type errorOut struct {
	Type         string `json:"__type"`
	Message      string `json:"Message"`
	ResourceName string `json:"ResourceName,omitempty"`
}

// decode reads a request body into v. An empty body and a JSON null count
// as {}: clients send "{}", `{"NextToken": null}` or nothing for calls that
// take no arguments. Unknown members are ignored, as AWS services do, so
// newer clients keep working; anything after the one JSON value is refused.
func decode(body []byte, v any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || bytes.Equal(body, []byte("null")) {
		return nil
	}
	if body[0] != '{' {
		return errors.New("the request body must be a JSON object")
	}
	d := json.NewDecoder(bytes.NewReader(body))
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("the request body is not valid JSON for this call: %w", jsonError(err))
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return errors.New("the request body has data after its JSON object")
	}
	return nil
}

// jsonError keeps a decoding error's meaning without echoing Go type names.
func jsonError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Type == badValueType {
			// One of this package's values (wireInt, epochTime), which
			// encoding/json named the field of.
			return fmt.Errorf("%s: %s", cmp.Or(te.Field, "a value"), te.Value)
		}
		if te.Field != "" {
			return fmt.Errorf("%s has the wrong type (%s)", te.Field, te.Value)
		}
		return fmt.Errorf("a value has the wrong type (%s)", te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("syntax error at byte %d", se.Offset)
	}
	return errors.New("malformed JSON")
}

// badValueType marks the errors of this package's JSON values.
var badValueType = reflect.TypeFor[badValue]()

type badValue struct{}

// badValueError is what this package's UnmarshalJSON methods return: a
// *json.UnmarshalTypeError, the one error encoding/json adds the field's
// path to ("SamplingStatisticsDocuments.RequestCount"), so that the
// refusal names the field.
func badValueError(format string, args ...any) error {
	return &json.UnmarshalTypeError{Value: fmt.Sprintf(format, args...), Type: badValueType}
}

// maxExactInt is the largest integer every client's JSON parser reads
// exactly (2^53).
const maxExactInt = 1 << 53

// wireInt is a JSON integer. Clients write counts as integers, but an
// integral number in another form ("10.0", "1e3") is read too.
type wireInt int64

func (n *wireInt) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	s := string(b)
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		if i > maxExactInt || i < -maxExactInt {
			return badValueError("an integer out of range, got %.40s", s)
		}
		*n = wireInt(i)
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > maxExactInt {
		return badValueError("want an integer, got %.40s", s)
	}
	*n = wireInt(f)
	return nil
}

// epochTime is an X-Ray timestamp. X-Ray writes seconds since 1970 as a
// number, and so do this package's answers (to the millisecond). Requests
// may also carry milliseconds (OpenTelemetry Java and the X-Ray SDK for Java
// serialize java.util.Date so), integer or fractional seconds, or a string
// holding either or an RFC 3339 time. A number above 1e11 is taken as
// milliseconds: as seconds it would be after the year 5000, while 1e11
// milliseconds is 1973.
type epochTime time.Time

// msThreshold separates seconds from milliseconds, see epochTime.
const msThreshold = 1e11

// maxEpochMillis bounds accepted times (the year 5138 in milliseconds).
const maxEpochMillis = 1e14

func (t *epochTime) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*t = epochTime{}
		return nil
	}
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return badValueError("malformed timestamp")
		}
		if ts, err := time.Parse(time.RFC3339Nano, str); err == nil {
			*t = epochTime(ts)
			return nil
		}
		s = str
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || f < 0 || f >= maxEpochMillis {
		return badValueError("want a timestamp in seconds or milliseconds since 1970, got %.40s", s)
	}
	ms := f * 1000
	if f > msThreshold {
		ms = f
	}
	*t = epochTime(time.UnixMilli(int64(math.Round(ms))).UTC())
	return nil
}

// MarshalJSON writes seconds since 1970 with millisecond precision, as a
// plain number ("1717171717.123"): every client reads it so.
func (t epochTime) MarshalJSON() ([]byte, error) {
	ms := time.Time(t).UnixMilli()
	if time.Time(t).IsZero() || ms < 0 {
		ms = 0
	}
	return strconv.AppendFloat(nil, float64(ms)/1000, 'f', -1, 64), nil
}

func (t epochTime) time() time.Time { return time.Time(t) }
