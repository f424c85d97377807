package xray

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// X-Ray's request limits that the domain rule model does not already have.
const (
	maxStatisticsDocs = 25
	maxAttributes     = 5
	clientIDLen       = 24
	maxTags           = 50
	maxTagKeyLen      = 128
	maxTagValueLen    = 256
	// maxCooldownMinutes bounds CooldownWindowMinutes: X-Ray publishes no
	// bound, and a day is longer than any useful window.
	maxCooldownMinutes = 24 * 60
	defaultInterval    = 10 * time.Second
	// DefaultMaxBodyBytes bounds a request body: 25 statistics documents
	// and 25 boost documents take under 10 KiB, a rule with 50 tags under
	// 25 KiB.
	DefaultMaxBodyBytes = 256 << 10
	// DefaultBodyTimeout bounds the time a request body takes to arrive:
	// clients send theirs at once, and a peer that trickles one (slowloris)
	// would otherwise hold a connection and its buffer for as long as it
	// likes (serve's ports bound only the headers' time).
	DefaultBodyTimeout = 10 * time.Second
)

// DefaultAccount is the account rule ARNs name unless told otherwise: no
// AWS account's, so that an ARN of this control plane is never taken for
// one of AWS's.
const DefaultAccount = "000000000000"

// Options configure a Handler.
type Options struct {
	// Region and Account are what rule ARNs say
	// (arn:aws:xray:REGION:ACCOUNT:sampling-rule/NAME). Defaults: us-east-1
	// and DefaultAccount.
	Region  string
	Account string
	// MaxBodyBytes bounds a request body; larger ones are refused. Default:
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// BodyTimeout bounds the time a request body takes to arrive; a slower
	// one is refused. Default: DefaultBodyTimeout.
	BodyTimeout time.Duration
	// Verifier checks who sent each request. Default: nil, SigV4 headers are
	// parsed (a malformed one is refused) but not verified.
	Verifier Verifier
	// Logger gets the errors that are not the caller's. Default:
	// slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

// Handler serves X-Ray's sampling API. It is an http.Handler, safe for
// concurrent use.
type Handler struct {
	core     Core
	arns     ruleARNs
	maxBody  int64
	bodyTime time.Duration
	verifier Verifier
	log      *slog.Logger
	now      func() time.Time
	started  time.Time
	ops      map[string]operation
}

type operation struct {
	name string
	run  func(ctx context.Context, body []byte) (out any, resource string, err error)
}

// NewHandler returns a Handler that serves the X-Ray API from core.
func NewHandler(core Core, opts Options) (*Handler, error) {
	if core == nil {
		return nil, errors.New("xray: no core")
	}
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.Account == "" {
		opts.Account = DefaultAccount
	}
	if err := CheckARNParts(opts.Region, opts.Account); err != nil {
		return nil, fmt.Errorf("xray: %w", err)
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.BodyTimeout <= 0 {
		opts.BodyTimeout = DefaultBodyTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	h := &Handler{
		core:     core,
		arns:     newRuleARNs(opts.Region, opts.Account),
		maxBody:  opts.MaxBodyBytes,
		bodyTime: opts.BodyTimeout,
		verifier: opts.Verifier,
		log:      opts.Logger,
		now:      opts.Now,
		started:  opts.Now(),
	}
	h.ops = h.operations()
	return h, nil
}

// operations are the API's calls, by path.
func (h *Handler) operations() map[string]operation {
	return map[string]operation{
		"/GetSamplingRules":           {opGetSamplingRules, h.getSamplingRules},
		"/SamplingTargets":            {opGetSamplingTargets, h.getSamplingTargets},
		"/SamplingStatisticSummaries": {opGetSamplingSummaries, h.getSamplingStatisticSummaries},
		"/CreateSamplingRule":         {opCreateSamplingRule, h.createSamplingRule},
		"/UpdateSamplingRule":         {opUpdateSamplingRule, h.updateSamplingRule},
		"/DeleteSamplingRule":         {opDeleteSamplingRule, h.deleteSamplingRule},
		"/TagResource":                {opTagResource, h.tagResource},
		"/UntagResource":              {opUntagResource, h.untagResource},
		"/ListTagsForResource":        {opListTagsForResource, h.listTagsForResource},
	}
}

// Routes returns the paths the API serves, sorted (each takes a POST).
func Routes() []string {
	return slices.Sorted(maps.Keys((&Handler{}).operations()))
}

// CheckARNParts checks the region and account that rule ARNs are built
// with: a region of lower-case letters, digits and '-', an account of 12
// digits.
func CheckARNParts(region, account string) error {
	if region == "" || region != strings.ToLower(region) || strings.Trim(region, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" || len(region) > 32 {
		return fmt.Errorf("region %q: want lower-case letters, digits and '-'", region)
	}
	if len(account) != 12 || strings.Trim(account, "0123456789") != "" {
		return fmt.Errorf("account %q: want 12 digits", account)
	}
	return nil
}

// ServeHTTP decodes one call, runs it and writes its answer or its error.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Amzn-Requestid", rand.Text())
	op, ok := h.ops[r.URL.Path]
	if !ok {
		h.writeError(w, &apiError{Status: http.StatusNotFound, Type: typeUnknownOperation, Message: "no X-Ray sampling operation at this path"})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Type: typeUnknownOperation, Message: op.name + " takes a POST"})
		return
	}
	body, err := ReadBody(w, r, h.maxBody, h.bodyTime)
	if err != nil {
		var mbe *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &mbe):
			h.writeError(w, invalidRequest(fmt.Sprintf("the request body is over %d bytes", h.maxBody)))
		case errors.As(err, &ne) && ne.Timeout():
			h.writeError(w, invalidRequest(fmt.Sprintf("the request body did not arrive within %v", h.bodyTime)))
		default:
			h.writeError(w, invalidRequest("could not read the request body"))
		}
		return
	}
	ctx, err := h.authenticate(r, body)
	if err != nil {
		h.writeError(w, mapError(r.Context(), h.log, op.name, "", err))
		return
	}
	out, resource, err := op.run(ctx, body)
	if err != nil {
		h.writeError(w, mapError(ctx, h.log, op.name, resource, err))
		return
	}
	b, err := json.Marshal(out)
	if err != nil {
		h.writeError(w, mapError(ctx, h.log, op.name, resource, fmt.Errorf("encode %s answer: %w", op.name, err)))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// ReadBody reads a request body of at most limit bytes (a larger one is
// an *http.MaxBytesError) that arrives within timeout of now (a slower one
// is a net.Error whose Timeout is true). Once the body is read, the
// connection's read deadline is cleared, so that a long call is not cut
// short by it; after a failure it stays, so that the server does not wait
// for the rest of the body before it answers and closes the connection.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64, timeout time.Duration) ([]byte, error) {
	rc := http.NewResponseController(w)
	deadline := rc.SetReadDeadline(time.Now().Add(timeout)) == nil
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err == nil && deadline {
		_ = rc.SetReadDeadline(time.Time{})
	}
	return body, err
}

func (h *Handler) writeError(w http.ResponseWriter, e *apiError) {
	b, _ := json.Marshal(errorOut{Type: e.Type, Message: e.Message, ResourceName: e.ResourceName})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-Errortype", e.Type)
	w.WriteHeader(e.Status)
	w.Write(b)
}

// authenticate checks a request's signature and returns the context its
// call runs in: the Verifier's, which carries the caller's identity for the
// core (the audit log's actor, the principal's scope). Without a Verifier
// nobody is verified: a malformed SigV4 header is still refused, and the
// core sees the request's own context.
func (h *Handler) authenticate(r *http.Request, body []byte) (context.Context, error) {
	var sig *Signature
	if a := r.Header.Get("Authorization"); a != "" {
		s, err := parseSignature(a)
		if err != nil {
			return nil, err
		}
		sig = s
	}
	if h.verifier != nil {
		return h.verifier.Verify(r.Context(), r, body, sig)
	}
	return r.Context(), nil
}

func badBody(err error) error { return invalidRequest(err.Error()) }

// checkNextToken refuses a NextToken this server did not issue: it answers
// every call in one page, as the X-Ray SDKs (which never page) expect.
func checkNextToken(tok *string) error {
	if tok != nil && *tok != "" {
		return invalidField("NextToken", "is not a token this server issued (every answer is one page)")
	}
	return nil
}

func (h *Handler) getSamplingRules(ctx context.Context, body []byte) (any, string, error) {
	var in getSamplingRulesIn
	if err := decode(body, &in); err != nil {
		return nil, "", badBody(err)
	}
	if err := checkNextToken(in.NextToken); err != nil {
		return nil, "", err
	}
	rs, err := h.core.Rules(ctx)
	if err != nil {
		return nil, "", err
	}
	out := samplingRulesOut{SamplingRuleRecords: make([]ruleRecordOut, 0, len(rs))}
	for i := range rs {
		out.SamplingRuleRecords = append(out.SamplingRuleRecords, h.record(&rs[i]))
	}
	return out, "", nil
}

// record is a rule as X-Ray lists it. Empty globs are "*", and Attributes
// is always an object.
func (h *Handler) record(r *Rule) ruleRecordOut {
	glob := func(s string) string {
		if s == "" {
			return "*"
		}
		return s
	}
	attrs := r.Attributes
	if attrs == nil {
		attrs = map[string]string{}
	}
	out := ruleRecordOut{
		SamplingRule: ruleOut{
			RuleName:      r.Name,
			RuleARN:       h.arns.rule(r.Name),
			ResourceARN:   glob(r.ResourceARN),
			Priority:      r.Priority,
			FixedRate:     finite(r.FixedRate),
			ReservoirSize: r.ReservoirSize,
			ServiceName:   glob(r.ServiceName),
			ServiceType:   glob(r.ServiceType),
			Host:          glob(r.Host),
			HTTPMethod:    glob(r.HTTPMethod),
			URLPath:       glob(r.URLPath),
			Version:       1,
			Attributes:    attrs,
		},
		CreatedAt:  epochTime(r.CreateTime),
		ModifiedAt: epochTime(r.UpdateTime),
	}
	if r.Boost != nil {
		out.SamplingRule.SamplingRateBoost = &boostOut{MaxRate: finite(r.Boost.MaxRate), CooldownWindowMinutes: int64(r.Boost.Cooldown / time.Minute)}
	}
	return out
}

func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func (h *Handler) getSamplingTargets(ctx context.Context, body []byte) (any, string, error) {
	var in getSamplingTargetsIn
	if err := decode(body, &in); err != nil {
		return nil, "", badBody(err)
	}
	var vs []rules.FieldViolation
	bad := func(field, format string, args ...any) {
		vs = append(vs, rules.FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
	}
	if n := len(in.SamplingStatisticsDocuments); n > maxStatisticsDocs {
		bad("SamplingStatisticsDocuments", "at most %d documents, got %d", maxStatisticsDocs, n)
	}
	if n := len(in.SamplingBoostStatisticsDocuments); n > maxStatisticsDocs {
		bad("SamplingBoostStatisticsDocuments", "at most %d documents, got %d", maxStatisticsDocs, n)
	}
	if len(vs) > 0 {
		return nil, "", &rules.ValidationError{Violations: vs}
	}
	rep := Report{}
	for i, d := range in.SamplingStatisticsDocuments {
		f := fmt.Sprintf("SamplingStatisticsDocuments[%d].", i)
		id := strings.ToLower(str(d.ClientID))
		switch {
		case !isClientID(id):
			bad(f+"ClientID", "must be %d hexadecimal digits", clientIDLen)
		case rep.ClientID == "":
			rep.ClientID = id
		case id != rep.ClientID:
			bad(f+"ClientID", "every document of a request must carry the same ClientID")
		}
		if !isRuleName(str(d.RuleName)) {
			bad(f+"RuleName", "must be 1-%d characters", rules.MaxNameLen)
		}
		rep.Statistics = append(rep.Statistics, Statistics{
			Rule: str(d.RuleName), Requests: int64(d.RequestCount), Sampled: int64(d.SampledCount),
			Borrowed: int64(d.BorrowCount), Time: d.Timestamp.time(),
		})
	}
	for i, d := range in.SamplingBoostStatisticsDocuments {
		f := fmt.Sprintf("SamplingBoostStatisticsDocuments[%d].", i)
		if !isRuleName(str(d.RuleName)) {
			bad(f+"RuleName", "must be 1-%d characters", rules.MaxNameLen)
		}
		if n := utf8.RuneCountInString(str(d.ServiceName)); n < 1 || n > rules.MaxServiceNameLen {
			bad(f+"ServiceName", "must be 1-%d characters", rules.MaxServiceNameLen)
		}
		rep.Boosts = append(rep.Boosts, BoostStatistics{
			Rule: str(d.RuleName), Service: str(d.ServiceName), Total: int64(d.TotalCount),
			Anomalies: int64(d.AnomalyCount), SampledAnomalies: int64(d.SampledAnomalyCount), Time: d.Timestamp.time(),
		})
	}
	if len(vs) > 0 {
		return nil, "", &rules.ValidationError{Violations: vs}
	}
	var ts Targets
	if len(rep.Statistics) > 0 || len(rep.Boosts) > 0 {
		var err error
		if ts, err = h.core.Report(ctx, rep); err != nil {
			return nil, "", err
		}
	}
	modified, err := h.core.RulesModified(ctx)
	if err != nil {
		return nil, "", err
	}
	if modified.IsZero() {
		// Never zero on the wire: the X-Ray SDK for Node.js drops an answer
		// without it. A replica's start is a safe stand-in: at worst,
		// clients fetch rules they already have once more.
		modified = h.started
	}
	now := h.now()
	out := samplingTargetsOut{
		SamplingTargetDocuments:    make([]targetOut, 0, len(ts.Targets)),
		LastRuleModification:       epochTime(modified),
		UnprocessedStatistics:      unprocessed(ts.Rejected),
		UnprocessedBoostStatistics: unprocessed(ts.BoostRejected),
	}
	for _, t := range ts.Targets {
		out.SamplingTargetDocuments = append(out.SamplingTargetDocuments, target(rep.ClientID, &t, now))
	}
	return out, "", nil
}

// target is one target document: the client's share of the reservoir as a
// whole quota (see WholeQuota), its expiry, and the boost in force.
func target(clientID string, t *Target, now time.Time) targetOut {
	interval := t.Interval
	if interval <= 0 {
		interval = defaultInterval
	}
	expiry := t.Expiry
	if expiry.IsZero() {
		expiry = now.Add(2 * interval)
	}
	quota := finite(t.Quota)
	phase := t.Phase
	if !t.RunningPhase {
		phase = rotationPhase(clientID, t.Rule, quota, now, interval)
	}
	out := targetOut{
		RuleName:          t.Rule,
		FixedRate:         min(max(finite(t.FixedRate), 0), 1),
		ReservoirQuota:    WholeQuota(quota, phase),
		ReservoirQuotaTTL: epochTime(expiry),
	}
	if t.Interval > 0 {
		out.Interval = int32(min(max(math.Round(t.Interval.Seconds()), 1), math.MaxInt32))
	}
	if t.Boost != nil {
		out.SamplingBoost = &samplingBoostOut{BoostRate: min(max(finite(t.Boost.Rate), 0), 1), BoostRateTTL: epochTime(t.Boost.Expiry)}
	}
	return out
}

// unprocessed lists rejections as X-Ray does: ErrorCode "400" (the client's
// fault), which makes the X-Ray SDKs refresh their rules.
func unprocessed(rs []Rejection) []unprocessedOut {
	out := make([]unprocessedOut, 0, len(rs))
	for _, r := range rs {
		msg := r.Message
		if r.Code != "" {
			msg = r.Code + ": " + msg
		}
		out = append(out, unprocessedOut{RuleName: r.Rule, ErrorCode: "400", Message: msg})
	}
	return out
}

func isClientID(s string) bool {
	return len(s) == clientIDLen && strings.Trim(s, "0123456789abcdef") == ""
}

func isRuleName(s string) bool {
	n := utf8.RuneCountInString(s)
	return n >= 1 && n <= rules.MaxNameLen
}

func (h *Handler) getSamplingStatisticSummaries(ctx context.Context, body []byte) (any, string, error) {
	var in summariesIn
	if err := decode(body, &in); err != nil {
		return nil, "", badBody(err)
	}
	if err := checkNextToken(in.NextToken); err != nil {
		return nil, "", err
	}
	ss, err := h.core.Summaries(ctx)
	if err != nil {
		return nil, "", err
	}
	out := summariesOut{SamplingStatisticSummaries: make([]summaryOut, 0, len(ss))}
	for _, s := range ss {
		out.SamplingStatisticSummaries = append(out.SamplingStatisticSummaries, summaryOut{
			RuleName: s.Rule, Timestamp: epochTime(s.Start), RequestCount: s.Requests, SampledCount: s.Sampled, BorrowCount: s.Borrowed,
		})
	}
	return out, "", nil
}

func (h *Handler) createSamplingRule(ctx context.Context, body []byte) (any, string, error) {
	var in createSamplingRuleIn
	if err := decode(body, &in); err != nil {
		return nil, "", badBody(err)
	}
	if in.SamplingRule == nil {
		return nil, "", invalidField("SamplingRule", "is required")
	}
	var vs violations
	r := h.newRule(&vs, in.SamplingRule)
	tags := parseTags(&vs, "Tags", in.Tags)
	if err := vs.err(); err != nil {
		return nil, r.Name, err
	}
	created, err := h.core.CreateRule(ctx, r, tags)
	if err != nil {
		return nil, r.Name, err
	}
	return ruleRecordEnvelope{h.record(&created)}, r.Name, nil
}

type violations []rules.FieldViolation

func (vs *violations) add(field, format string, args ...any) {
	*vs = append(*vs, rules.FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

func (vs violations) err() error {
	if len(vs) == 0 {
		return nil
	}
	return &rules.ValidationError{Violations: vs}
}

// newRule reads a CreateSamplingRule's rule: every field X-Ray requires
// must be there. Limits are the core's (rules.Validate), but for those only
// X-Ray has.
func (h *Handler) newRule(vs *violations, in *ruleIn) Rule {
	const f = "SamplingRule."
	var r Rule
	r.Name = str(in.RuleName)
	if r.Name == "" {
		vs.add(f+"RuleName", "is required")
	} else if in.RuleARN != nil && *in.RuleARN != "" && *in.RuleARN != h.arns.rule(r.Name) {
		vs.add(f+"RuleARN", "names another rule than RuleName (leave it out: the ARN is made from the name)")
	}
	for _, s := range []struct {
		name string
		v    *string
		dst  *string
	}{
		{"ResourceARN", in.ResourceARN, &r.ResourceARN},
		{"ServiceName", in.ServiceName, &r.ServiceName},
		{"ServiceType", in.ServiceType, &r.ServiceType},
		{"Host", in.Host, &r.Host},
		{"HTTPMethod", in.HTTPMethod, &r.HTTPMethod},
		{"URLPath", in.URLPath, &r.URLPath},
	} {
		if s.v == nil {
			vs.add(f+s.name, "is required")
			continue
		}
		*s.dst = *s.v
	}
	if in.Priority == nil {
		vs.add(f+"Priority", "is required")
	} else {
		r.Priority = priority(vs, f, *in.Priority)
	}
	if in.FixedRate == nil {
		vs.add(f+"FixedRate", "is required")
	} else {
		r.FixedRate = *in.FixedRate
	}
	if in.ReservoirSize == nil {
		vs.add(f+"ReservoirSize", "is required")
	} else {
		r.ReservoirSize = int64(*in.ReservoirSize)
	}
	switch {
	case in.Version == nil:
		vs.add(f+"Version", "is required")
	case *in.Version != 1:
		vs.add(f+"Version", "must be 1, got %d", int64(*in.Version))
	}
	r.Attributes = attributes(vs, f, in.Attributes)
	if b, set := boost(vs, f, in.SamplingRateBoost); set {
		r.Boost = b
		if b != nil && r.IsDefault() {
			vs.add(f+"SamplingRateBoost", "the Default rule cannot have one")
		}
	}
	return r
}

func priority(vs *violations, f string, p wireInt) int32 {
	if p < math.MinInt32 || p > math.MaxInt32 {
		vs.add(f+"Priority", "must be between %d and %d, got %d", rules.MinPriority, rules.MaxPriority, int64(p))
		return 0
	}
	return int32(p)
}

func attributes(vs *violations, f string, attrs map[string]string) map[string]string {
	if len(attrs) > maxAttributes {
		vs.add(f+"Attributes", "at most %d attributes, got %d", maxAttributes, len(attrs))
	}
	if len(attrs) == 0 {
		return nil
	}
	return attrs
}

// boost reads a SamplingRateBoost member: set is false when it is absent,
// and b nil when it is JSON null (on an update: remove the boost).
func boost(vs *violations, f string, raw json.RawMessage) (b *RateBoost, set bool) {
	if len(raw) == 0 {
		return nil, false
	}
	if string(raw) == "null" {
		return nil, true
	}
	var in boostIn
	if err := json.Unmarshal(raw, &in); err != nil {
		vs.add(f+"SamplingRateBoost", "must be an object with MaxRate and CooldownWindowMinutes")
		return nil, true
	}
	b = &RateBoost{}
	switch {
	case in.MaxRate == nil:
		vs.add(f+"SamplingRateBoost.MaxRate", "is required")
	case math.IsNaN(*in.MaxRate) || *in.MaxRate < 0 || *in.MaxRate > 1:
		vs.add(f+"SamplingRateBoost.MaxRate", "must be between 0 and 1, got %v", *in.MaxRate)
	default:
		b.MaxRate = *in.MaxRate
	}
	switch {
	case in.CooldownWindowMinutes == nil:
		vs.add(f+"SamplingRateBoost.CooldownWindowMinutes", "is required")
	case *in.CooldownWindowMinutes < 1 || *in.CooldownWindowMinutes > maxCooldownMinutes:
		vs.add(f+"SamplingRateBoost.CooldownWindowMinutes", "must be between 1 and %d, got %d", maxCooldownMinutes, int64(*in.CooldownWindowMinutes))
	default:
		b.Cooldown = time.Duration(*in.CooldownWindowMinutes) * time.Minute
	}
	return b, true
}

// ruleName returns the rule a call names by RuleName, RuleARN or both.
func (h *Handler) ruleName(vs *violations, f string, name, arn *string) (string, error) {
	n, a := str(name), str(arn)
	if a != "" {
		fromARN, err := h.arns.name(a)
		if errors.Is(err, errNotARN) {
			vs.add(f+"RuleARN", "%s", err)
			return n, nil
		}
		if err != nil {
			return a, err
		}
		if n != "" && n != fromARN {
			vs.add(f+"RuleARN", "names another rule than RuleName")
		}
		n = fromARN
	}
	if n == "" {
		vs.add(f+"RuleName", "RuleName or RuleARN is required")
	}
	return n, nil
}

func (h *Handler) updateSamplingRule(ctx context.Context, body []byte) (any, string, error) {
	var in updateSamplingRuleIn
	if err := decode(body, &in); err != nil {
		return nil, "", badBody(err)
	}
	u := in.SamplingRuleUpdate
	if u == nil {
		return nil, "", invalidField("SamplingRuleUpdate", "is required")
	}
	const f = "SamplingRuleUpdate."
	var vs violations
	name, err := h.ruleName(&vs, f, u.RuleName, u.RuleARN)
	if err != nil {
		return nil, name, err
	}
	up := RuleUpdate{Name: name}
	p := &up.Patch
	set := func(field string) { up.Fields = append(up.Fields, field) }
	for _, s := range []struct {
		field string
		v     *string
		dst   *string
	}{
		{FieldResourceARN, u.ResourceARN, &p.ResourceARN},
		{FieldServiceName, u.ServiceName, &p.ServiceName},
		{FieldServiceType, u.ServiceType, &p.ServiceType},
		{FieldHost, u.Host, &p.Host},
		{FieldHTTPMethod, u.HTTPMethod, &p.HTTPMethod},
		{FieldURLPath, u.URLPath, &p.URLPath},
	} {
		if s.v != nil {
			*s.dst = *s.v
			set(s.field)
		}
	}
	if u.Priority != nil {
		p.Priority = priority(&vs, f, *u.Priority)
		set(FieldPriority)
	}
	if u.FixedRate != nil {
		p.FixedRate = *u.FixedRate
		set(FieldFixedRate)
	}
	if u.ReservoirSize != nil {
		p.ReservoirSize = int64(*u.ReservoirSize)
		set(FieldReservoirSize)
	}
	if u.Attributes != nil {
		p.Attributes = attributes(&vs, f, u.Attributes)
		set(FieldAttributes)
	}
	if b, ok := boost(&vs, f, u.SamplingRateBoost); ok {
		p.Boost = b
		set(FieldBoost)
	}
	if name == rules.DefaultName {
		up.Fields = defaultFields(&vs, f, &up)
	}
	if err := vs.err(); err != nil {
		return nil, name, err
	}
	if len(up.Fields) == 0 {
		r, err := h.findRule(ctx, name)
		if err != nil {
			return nil, name, err
		}
		return ruleRecordEnvelope{h.record(&r)}, name, nil
	}
	updated, err := h.core.UpdateRule(ctx, up, "")
	if err != nil {
		return nil, name, err
	}
	return ruleRecordEnvelope{h.record(&updated)}, name, nil
}

// defaultFields returns the fields of an update of the Default rule that
// change it. X-Ray lets only FixedRate and ReservoirSize change; a field
// set to the value it always has ("*", no attributes, no boost) is accepted
// and dropped, so that a record read from GetSamplingRules can be sent back.
func defaultFields(vs *violations, f string, u *RuleUpdate) []string {
	def := rules.Default()
	var keep []string
	for _, field := range u.Fields {
		p := &u.Patch
		var same bool
		switch field {
		case FieldFixedRate, FieldReservoirSize:
			keep = append(keep, field)
			continue
		case FieldPriority:
			same = p.Priority == def.Priority
		case FieldResourceARN:
			same = p.ResourceARN == "*"
		case FieldServiceName:
			same = p.ServiceName == "*"
		case FieldServiceType:
			same = p.ServiceType == "*"
		case FieldHost:
			same = p.Host == "*"
		case FieldHTTPMethod:
			same = p.HTTPMethod == "*"
		case FieldURLPath:
			same = p.URLPath == "*"
		case FieldAttributes:
			same = len(p.Attributes) == 0
		case FieldBoost:
			same = p.Boost == nil
		}
		if !same {
			vs.add(f+xrayField(field), "the Default rule: only FixedRate and ReservoirSize can be changed")
		}
	}
	return keep
}

// findRule returns one rule from the core's list, or store.ErrNotFound.
func (h *Handler) findRule(ctx context.Context, name string) (Rule, error) {
	rs, err := h.core.Rules(ctx)
	if err != nil {
		return Rule{}, err
	}
	for _, r := range rs {
		if r.Name == name {
			return r, nil
		}
	}
	return Rule{}, fmt.Errorf("rule %q: %w", name, store.ErrNotFound)
}

func (h *Handler) deleteSamplingRule(ctx context.Context, body []byte) (any, string, error) {
	var in deleteSamplingRuleIn
	if err := decode(body, &in); err != nil {
		return nil, "", badBody(err)
	}
	var vs violations
	name, err := h.ruleName(&vs, "", in.RuleName, in.RuleARN)
	if err != nil {
		return nil, name, err
	}
	if err := vs.err(); err != nil {
		return nil, name, err
	}
	if name == rules.DefaultName {
		return nil, name, invalidRequest("the Default rule cannot be deleted")
	}
	deleted, err := h.core.DeleteRule(ctx, name, "")
	if err != nil {
		return nil, name, err
	}
	return ruleRecordEnvelope{h.record(&deleted)}, name, nil
}

// parseTags reads X-Ray tags: at most 50, keys 1-128 and values 0-256
// characters of letters, digits, spaces and _.:/=+-@, no key twice and
// none starting with "aws:", which AWS reserves.
func parseTags(vs *violations, f string, in []tagIn) Tags {
	if len(in) > maxTags {
		vs.add(f, "at most %d tags, got %d", maxTags, len(in))
		return nil
	}
	if len(in) == 0 {
		return nil
	}
	tags := make(Tags, len(in))
	for i, t := range in {
		tf := fmt.Sprintf("%s[%d].", f, i)
		if t.Key == nil {
			vs.add(tf+"Key", "is required")
			continue
		}
		if t.Value == nil {
			vs.add(tf+"Value", "is required")
			continue
		}
		k, v := *t.Key, *t.Value
		if !tagKey(vs, tf+"Key", k) {
			continue
		}
		if n := utf8.RuneCountInString(v); n > maxTagValueLen || !tagText(v) {
			vs.add(tf+"Value", "must be at most %d letters, digits, spaces or _.:/=+-@", maxTagValueLen)
			continue
		}
		if _, dup := tags[k]; dup {
			vs.add(tf+"Key", "appears more than once")
			continue
		}
		tags[k] = v
	}
	return tags
}

func tagKey(vs *violations, f, k string) bool {
	switch n := utf8.RuneCountInString(k); {
	case n < 1 || n > maxTagKeyLen || !tagText(k):
		vs.add(f, "must be 1-%d letters, digits, spaces or _.:/=+-@", maxTagKeyLen)
	case len(k) >= 4 && strings.EqualFold(k[:4], "aws:"):
		vs.add(f, "the prefix aws: is reserved")
	default:
		return true
	}
	return false
}

func tagText(s string) bool {
	for _, c := range s {
		if !isTagChar(c) {
			return false
		}
	}
	return true
}

func (h *Handler) resourceRule(vs *violations, arn *string) (string, error) {
	if arn == nil || *arn == "" {
		vs.add("ResourceARN", "is required")
		return "", nil
	}
	name, err := h.arns.name(*arn)
	if errors.Is(err, errNotARN) {
		vs.add("ResourceARN", "%s", err)
		return "", nil
	}
	return name, err
}

func (h *Handler) tagResource(ctx context.Context, body []byte) (any, string, error) {
	var in tagResourceIn
	if err := decode(body, &in); err != nil {
		return nil, "", badBody(err)
	}
	var vs violations
	name, err := h.resourceRule(&vs, in.ResourceARN)
	if err != nil {
		return nil, str(in.ResourceARN), err
	}
	if in.Tags == nil {
		vs.add("Tags", "is required")
	}
	tags := parseTags(&vs, "Tags", in.Tags)
	if err := vs.err(); err != nil {
		return nil, str(in.ResourceARN), err
	}
	if err := h.core.TagRule(ctx, name, tags); err != nil {
		return nil, str(in.ResourceARN), err
	}
	return struct{}{}, "", nil
}

func (h *Handler) untagResource(ctx context.Context, body []byte) (any, string, error) {
	var in untagResourceIn
	if err := decode(body, &in); err != nil {
		return nil, "", badBody(err)
	}
	var vs violations
	name, err := h.resourceRule(&vs, in.ResourceARN)
	if err != nil {
		return nil, str(in.ResourceARN), err
	}
	switch {
	case in.TagKeys == nil:
		vs.add("TagKeys", "is required")
	case len(in.TagKeys) > maxTags:
		vs.add("TagKeys", "at most %d keys, got %d", maxTags, len(in.TagKeys))
	default:
		for i, k := range in.TagKeys {
			if n := utf8.RuneCountInString(k); n < 1 || n > maxTagKeyLen {
				vs.add(fmt.Sprintf("TagKeys[%d]", i), "must be 1-%d characters", maxTagKeyLen)
			}
		}
	}
	if err := vs.err(); err != nil {
		return nil, str(in.ResourceARN), err
	}
	if err := h.core.UntagRule(ctx, name, in.TagKeys); err != nil {
		return nil, str(in.ResourceARN), err
	}
	return struct{}{}, "", nil
}

func (h *Handler) listTagsForResource(ctx context.Context, body []byte) (any, string, error) {
	var in listTagsIn
	if err := decode(body, &in); err != nil {
		return nil, "", badBody(err)
	}
	var vs violations
	name, err := h.resourceRule(&vs, in.ResourceARN)
	if err != nil {
		return nil, str(in.ResourceARN), err
	}
	if err := vs.err(); err != nil {
		return nil, str(in.ResourceARN), err
	}
	if err := checkNextToken(in.NextToken); err != nil {
		return nil, "", err
	}
	tags, err := h.core.RuleTags(ctx, name)
	if err != nil {
		return nil, str(in.ResourceARN), err
	}
	out := listTagsOut{Tags: make([]tagOut, 0, len(tags))}
	for _, k := range sortedKeys(tags) {
		out.Tags = append(out.Tags, tagOut{Key: k, Value: tags[k]})
	}
	return out, "", nil
}

func isTagChar(c rune) bool {
	return unicode.IsLetter(c) || unicode.IsNumber(c) || unicode.Is(unicode.Z, c) || strings.ContainsRune("_.:/=+-@", c)
}

func sortedKeys(m Tags) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
