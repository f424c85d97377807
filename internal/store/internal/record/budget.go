package record

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/store"
)

// Budget is the stored JSON form of budget.Budget. Its field names are part
// of the stored format (redisstore's Lua reads "revision"), so they must not
// change. Channel secrets are stored as given: masking them is the API's job.
type Budget struct {
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	Services    []string          `json:"scope_services,omitempty"`
	RuleLabels  map[string]string `json:"scope_rule_labels,omitempty"`
	// Amounts in micros (budget.MicrosPerUnit). Records written before
	// them hold only MonthlyAmount and PricePerMillion, in units; those are
	// still written, for replicas of earlier versions during an upgrade,
	// and read only when the micros are absent.
	MonthlyAmountMicros   int64   `json:"monthly_amount_micros,omitempty"`
	PricePerMillionMicros int64   `json:"price_per_million_micros,omitempty"`
	MonthlyAmount         float64 `json:"monthly_amount"`
	PricePerMillion       float64 `json:"price_per_million"`

	Currency           string    `json:"currency,omitempty"`
	FreeTraces         int64     `json:"free_traces,omitempty"`
	Mode               string    `json:"mode"`
	SpendThresholds    []float64 `json:"spend_thresholds,omitempty"`
	ForecastThresholds []float64 `json:"forecast_thresholds,omitempty"`
	Channels           []Channel `json:"channels,omitempty"`
	FloorPerSecond     float64   `json:"floor_per_second,omitempty"`
	Revision           int64     `json:"revision"`
	CreateTime         time.Time `json:"create_time"`
	UpdateTime         time.Time `json:"update_time"`
	UpdatedBy          string    `json:"updated_by,omitempty"`

	RetrievedPricePerMillionMicros int64          `json:"retrieved_price_per_million_micros,omitempty"`
	RetrievalsPerTrace             float64        `json:"retrievals_per_trace,omitempty"`
	SpanPricePerMillionMicros      int64          `json:"span_price_per_million_micros,omitempty"`
	SpansPerTrace                  float64        `json:"spans_per_trace,omitempty"`
	Priorities                     []RulePriority `json:"rule_priorities,omitempty"`
	CoverageMinutes                int32          `json:"coverage_minutes,omitempty"`
	BurnRateThresholds             []float64      `json:"burn_rate_thresholds,omitempty"`
	UID                            string         `json:"uid,omitempty"`
	Generation                     int64          `json:"generation,omitempty"`
}

// RulePriority is the stored form of budget.RulePriority.
type RulePriority struct {
	RuleNames  []string          `json:"rule_names,omitempty"`
	RuleLabels map[string]string `json:"rule_labels,omitempty"`
	Priority   int32             `json:"priority"`
}

// Channel is the stored form of budget.Channel.
type Channel struct {
	WebhookURL string `json:"webhook_url"`
	Secret     string `json:"secret,omitempty"`
}

// CloneBudget returns a deep copy of b, sharing nothing with it.
func CloneBudget(b budget.Budget) budget.Budget {
	b.Scope.Services = slices.Clone(b.Scope.Services)
	b.Scope.RuleLabels = maps.Clone(b.Scope.RuleLabels)
	b.SpendThresholds = slices.Clone(b.SpendThresholds)
	b.ForecastThresholds = slices.Clone(b.ForecastThresholds)
	b.Channels = slices.Clone(b.Channels)
	b.BurnRateThresholds = slices.Clone(b.BurnRateThresholds)
	if b.Priorities != nil {
		ps := make([]budget.RulePriority, len(b.Priorities))
		for i, p := range b.Priorities {
			ps[i] = budget.RulePriority{RuleNames: slices.Clone(p.RuleNames), RuleLabels: maps.Clone(p.RuleLabels), Priority: p.Priority}
		}
		b.Priorities = ps
	}
	return b
}

// MarshalBudget encodes b in its stored form.
func MarshalBudget(b *budget.Budget) ([]byte, error) {
	rec := Budget{
		Name:                  b.Name,
		Description:           b.Description,
		Services:              b.Scope.Services,
		RuleLabels:            b.Scope.RuleLabels,
		MonthlyAmountMicros:   b.MonthlyAmountMicros,
		PricePerMillionMicros: b.PricePerMillionMicros,
		MonthlyAmount:         budget.Units(b.MonthlyAmountMicros),
		PricePerMillion:       budget.Units(b.PricePerMillionMicros),
		Currency:              b.Currency,
		FreeTraces:            b.FreeTraces,
		Mode:                  b.Mode.String(),
		SpendThresholds:       b.SpendThresholds,
		ForecastThresholds:    b.ForecastThresholds,
		FloorPerSecond:        b.FloorPerSecond,
		Revision:              b.Revision,
		CreateTime:            b.CreateTime,
		UpdateTime:            b.UpdateTime,
		UpdatedBy:             b.UpdatedBy,

		RetrievedPricePerMillionMicros: b.RetrievedPricePerMillionMicros,
		RetrievalsPerTrace:             b.RetrievalsPerTrace,
		SpanPricePerMillionMicros:      b.SpanPricePerMillionMicros,
		SpansPerTrace:                  b.SpansPerTrace,
		CoverageMinutes:                b.CoverageMinutes,
		BurnRateThresholds:             b.BurnRateThresholds,
		UID:                            b.UID,
		Generation:                     b.Generation,
	}
	for _, c := range b.Channels {
		rec.Channels = append(rec.Channels, Channel(c))
	}
	for _, p := range b.Priorities {
		rec.Priorities = append(rec.Priorities, RulePriority(p))
	}
	out, err := json.Marshal(&rec)
	if err != nil {
		return nil, fmt.Errorf("encode budget %q: %w", b.Name, err)
	}
	return out, nil
}

// UnmarshalBudget decodes a budget stored by MarshalBudget.
func UnmarshalBudget(data []byte) (budget.Budget, error) {
	var rec Budget
	if err := json.Unmarshal(data, &rec); err != nil {
		return budget.Budget{}, fmt.Errorf("decode stored budget: %w", err)
	}
	mode, err := parseMode(rec.Mode)
	if err != nil {
		return budget.Budget{}, fmt.Errorf("decode stored budget %q: %w", rec.Name, err)
	}
	b := budget.Budget{
		Name:                  rec.Name,
		Description:           rec.Description,
		Scope:                 budget.Scope{Services: rec.Services, RuleLabels: rec.RuleLabels},
		MonthlyAmountMicros:   rec.MonthlyAmountMicros,
		PricePerMillionMicros: rec.PricePerMillionMicros,
		Currency:              rec.Currency,
		FreeTraces:            rec.FreeTraces,
		Mode:                  mode,
		SpendThresholds:       rec.SpendThresholds,
		ForecastThresholds:    rec.ForecastThresholds,
		FloorPerSecond:        rec.FloorPerSecond,
		Revision:              rec.Revision,
		CreateTime:            rec.CreateTime,
		UpdateTime:            rec.UpdateTime,
		UpdatedBy:             rec.UpdatedBy,

		RetrievedPricePerMillionMicros: rec.RetrievedPricePerMillionMicros,
		RetrievalsPerTrace:             rec.RetrievalsPerTrace,
		SpanPricePerMillionMicros:      rec.SpanPricePerMillionMicros,
		SpansPerTrace:                  rec.SpansPerTrace,
		CoverageMinutes:                rec.CoverageMinutes,
		BurnRateThresholds:             rec.BurnRateThresholds,
		UID:                            rec.UID,
		Generation:                     rec.Generation,
	}
	for _, p := range rec.Priorities {
		b.Priorities = append(b.Priorities, budget.RulePriority(p))
	}
	if b.MonthlyAmountMicros == 0 {
		b.MonthlyAmountMicros = budget.Micros(rec.MonthlyAmount)
	}
	if b.PricePerMillionMicros == 0 {
		b.PricePerMillionMicros = budget.Micros(rec.PricePerMillion)
	}
	for _, c := range rec.Channels {
		b.Channels = append(b.Channels, budget.Channel(c))
	}
	return b, nil
}

func parseMode(s string) (budget.Mode, error) {
	for _, m := range []budget.Mode{budget.Enforce, budget.AlertOnly} {
		if m.String() == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown budget mode %q", s)
}

// Alert is the stored JSON form of budget.Alert, without its ID: the store
// assigns that and keeps it beside the record (a stream entry ID, a
// sequence number).
type Alert struct {
	Budget     string    `json:"budget"`
	Kind       string    `json:"kind"`
	Threshold  float64   `json:"threshold"`
	Time       time.Time `json:"time"`
	MonthStart time.Time `json:"month_start"`
	Spent      float64   `json:"spent"`
	Forecast   float64   `json:"forecast"`
	Cap        float64   `json:"cap"`
	Currency   string    `json:"currency,omitempty"`
	Message    string    `json:"message,omitempty"`
	BudgetUID  string    `json:"budget_uid,omitempty"`
	Generation int64     `json:"generation,omitempty"`
	Episode    string    `json:"episode,omitempty"`
}

// NormalizeAlert returns a as a store keeps it: its times in UTC without a
// monotonic reading, so that an alert read back equals the one FireAlert
// returned.
func NormalizeAlert(a budget.Alert) budget.Alert {
	a.Time = Timestamp(a.Time)
	a.MonthStart = Timestamp(a.MonthStart)
	return a
}

// FromAlert returns a's stored form.
func FromAlert(a *budget.Alert) Alert {
	return Alert{
		Budget:     a.Budget,
		Kind:       a.Kind.String(),
		Threshold:  a.Threshold,
		Time:       a.Time,
		MonthStart: a.MonthStart,
		Spent:      a.Spent,
		Forecast:   a.Forecast,
		Cap:        a.Cap,
		Currency:   a.Currency,
		Message:    a.Message,
		BudgetUID:  a.BudgetUID,
		Generation: a.Generation,
		Episode:    a.Episode,
	}
}

// ToAlert returns the alert rec stores, with the given ID.
func (rec *Alert) ToAlert(id string) (budget.Alert, error) {
	kind, err := parseKind(rec.Kind)
	if err != nil {
		return budget.Alert{}, err
	}
	return budget.Alert{
		ID:         id,
		Budget:     rec.Budget,
		Kind:       kind,
		Threshold:  rec.Threshold,
		Time:       rec.Time,
		MonthStart: rec.MonthStart,
		Spent:      rec.Spent,
		Forecast:   rec.Forecast,
		Cap:        rec.Cap,
		Currency:   rec.Currency,
		Message:    rec.Message,
		BudgetUID:  rec.BudgetUID,
		Generation: rec.Generation,
		Episode:    rec.Episode,
	}, nil
}

// MarshalAlert encodes a in its stored form (without its ID).
func MarshalAlert(a *budget.Alert) ([]byte, error) {
	b, err := json.Marshal(FromAlert(a))
	if err != nil {
		return nil, fmt.Errorf("encode alert of budget %q: %w", a.Budget, err)
	}
	return b, nil
}

// UnmarshalAlert decodes an alert stored by MarshalAlert and gives it id.
func UnmarshalAlert(data []byte, id string) (budget.Alert, error) {
	var rec Alert
	if err := json.Unmarshal(data, &rec); err != nil {
		return budget.Alert{}, fmt.Errorf("decode stored alert: %w", err)
	}
	return rec.ToAlert(id)
}

func parseKind(s string) (budget.AlertKind, error) {
	for _, k := range budget.AlertKinds {
		if k.String() == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown alert kind %q", s)
}

// State is the stored JSON form of budget.State.
type State struct {
	Budget             string               `json:"budget"`
	BudgetUID          string               `json:"budget_uid,omitempty"`
	BudgetCreated      time.Time            `json:"budget_created,omitzero"`
	BudgetRevision     int64                `json:"budget_revision,omitempty"`
	MonthStart         time.Time            `json:"month_start"`
	Computed           time.Time            `json:"computed"`
	Spent              float64              `json:"spent"`
	Forecast           float64              `json:"forecast"`
	ForecastUnenforced float64              `json:"forecast_unenforced"`
	FixedRateFactor    float64              `json:"fixed_rate_factor"`
	ReservoirFactor    float64              `json:"reservoir_factor"`
	Exhausted          bool                 `json:"exhausted,omitempty"`
	Requests           float64              `json:"requests"`
	Rules              map[string]RuleUsage `json:"rules,omitempty"`
	Plans              []RulePlan           `json:"plans,omitempty"`
	Explain            *Explain             `json:"explain,omitempty"`
	CoverageReserve    float64              `json:"coverage_reserve,omitempty"`
	LastHour           float64              `json:"last_hour,omitempty"`
	Memory             *Memory              `json:"memory,omitempty"`
}

// RuleUsage is the stored form of budget.RuleUsage.
type RuleUsage struct {
	Requests int64 `json:"requests"`
	Sampled  int64 `json:"sampled"`
}

// RulePlan is the stored form of budget.RulePlan.
type RulePlan struct {
	Name               string  `json:"name"`
	Priority           int32   `json:"priority,omitempty"`
	FixedRateFactor    float64 `json:"fixed_rate_factor"`
	ReservoirFactor    float64 `json:"reservoir_factor"`
	Reservoir          float64 `json:"reservoir,omitempty"`
	Requests           float64 `json:"requests,omitempty"`
	Forecast           float64 `json:"forecast,omitempty"`
	ForecastUnenforced float64 `json:"forecast_unenforced,omitempty"`
}

// Explain is the stored form of budget.Explain.
type Explain struct {
	Method       string    `json:"method"`
	Profile      []float64 `json:"profile,omitempty"`
	Level        float64   `json:"level,omitempty"`
	Trend        float64   `json:"trend,omitempty"`
	CurrentRate  float64   `json:"current_rate,omitempty"`
	ExpectedRate float64   `json:"expected_rate,omitempty"`
	Requests     float64   `json:"requests,omitempty"`
}

// Memory is the stored form of budget.Memory.
type Memory struct {
	Observed     time.Time `json:"observed"`
	Requests     float64   `json:"requests,omitempty"`
	FirstSeen    time.Time `json:"first_seen,omitzero"`
	RecentRate   float64   `json:"recent_rate,omitempty"`
	AboveSince   time.Time `json:"above_since,omitzero"`
	Episode      int       `json:"episode,omitempty"`
	EpisodeOpen  bool      `json:"episode_open,omitempty"`
	LastEnforced time.Time `json:"last_enforced,omitzero"`
	Backfilled   bool      `json:"backfilled,omitempty"`
}

// FromState returns st's stored form, with its times in UTC.
func FromState(st *budget.State) State {
	d := &st.Decision
	rec := State{
		Budget:             st.Budget,
		BudgetUID:          st.BudgetUID,
		BudgetCreated:      Timestamp(st.BudgetCreated),
		BudgetRevision:     st.BudgetRevision,
		MonthStart:         Timestamp(st.MonthStart),
		Computed:           Timestamp(st.Computed),
		Spent:              d.Spent,
		Forecast:           d.Forecast,
		ForecastUnenforced: d.ForecastUnenforced,
		FixedRateFactor:    d.FixedRateFactor,
		ReservoirFactor:    d.ReservoirFactor,
		Exhausted:          d.Exhausted,
		Requests:           st.Requests,
		CoverageReserve:    d.CoverageReserve,
		LastHour:           d.LastHour,
	}
	if len(st.Rules) > 0 {
		rec.Rules = make(map[string]RuleUsage, len(st.Rules))
		for name, u := range st.Rules {
			rec.Rules[name] = RuleUsage(u)
		}
	}
	for _, p := range d.Rules {
		rec.Plans = append(rec.Plans, RulePlan(p))
	}
	if e := d.Explain; e.Method != "" {
		rec.Explain = &Explain{Method: e.Method, Profile: slices.Clone(e.Profile), Level: e.Level, Trend: e.Trend,
			CurrentRate: e.CurrentRate, ExpectedRate: e.ExpectedRate, Requests: e.Requests}
	}
	if m := d.Memory; m != (budget.Memory{}) {
		rec.Memory = &Memory{
			Observed: Timestamp(m.Observed), Requests: m.Requests, FirstSeen: Timestamp(m.FirstSeen), RecentRate: m.RecentRate,
			AboveSince: Timestamp(m.AboveSince), Episode: m.Episode, EpisodeOpen: m.EpisodeOpen, LastEnforced: Timestamp(m.LastEnforced),
			Backfilled: m.Backfilled,
		}
	}
	return rec
}

// ToState returns the state rec stores. It shares nothing with rec.
func (rec *State) ToState() budget.State {
	st := budget.State{
		Budget:         rec.Budget,
		BudgetUID:      rec.BudgetUID,
		BudgetCreated:  rec.BudgetCreated,
		BudgetRevision: rec.BudgetRevision,
		MonthStart:     rec.MonthStart,
		Computed:       rec.Computed,
		Decision: budget.Decision{
			Spent:              rec.Spent,
			Forecast:           rec.Forecast,
			ForecastUnenforced: rec.ForecastUnenforced,
			FixedRateFactor:    rec.FixedRateFactor,
			ReservoirFactor:    rec.ReservoirFactor,
			Exhausted:          rec.Exhausted,
			CoverageReserve:    rec.CoverageReserve,
			LastHour:           rec.LastHour,
		},
		Requests: rec.Requests,
		Rules:    make(map[string]budget.RuleUsage, len(rec.Rules)),
	}
	for name, u := range rec.Rules {
		st.Rules[name] = budget.RuleUsage(u)
	}
	for _, p := range rec.Plans {
		st.Decision.Rules = append(st.Decision.Rules, budget.RulePlan(p))
	}
	if e := rec.Explain; e != nil {
		st.Decision.Explain = budget.Explain{Method: e.Method, Profile: slices.Clone(e.Profile), Level: e.Level, Trend: e.Trend,
			CurrentRate: e.CurrentRate, ExpectedRate: e.ExpectedRate, Requests: e.Requests}
	}
	if m := rec.Memory; m != nil {
		st.Decision.Memory = budget.Memory{
			Observed: m.Observed, Requests: m.Requests, FirstSeen: m.FirstSeen, RecentRate: m.RecentRate,
			AboveSince: m.AboveSince, Episode: m.Episode, EpisodeOpen: m.EpisodeOpen, LastEnforced: m.LastEnforced,
			Backfilled: m.Backfilled,
		}
	}
	return st
}

// Point is the stored form of budget.HistoryPoint.
type Point struct {
	Hour               int       `json:"hour"`
	Computed           time.Time `json:"computed"`
	Spent              float64   `json:"spent"`
	Forecast           float64   `json:"forecast"`
	ForecastUnenforced float64   `json:"forecast_unenforced"`
	FixedRateFactor    float64   `json:"fixed_rate_factor"`
	ReservoirFactor    float64   `json:"reservoir_factor"`
	Exhausted          bool      `json:"exhausted,omitempty"`
}

// MarshalPoint encodes a history point in its stored form.
func MarshalPoint(p *budget.HistoryPoint) ([]byte, error) {
	q := Point(*p)
	q.Computed = Timestamp(q.Computed)
	b, err := json.Marshal(&q)
	if err != nil {
		return nil, fmt.Errorf("encode history point: %w", err)
	}
	return b, nil
}

// UnmarshalPoint decodes a history point stored by MarshalPoint.
func UnmarshalPoint(data []byte) (budget.HistoryPoint, error) {
	var q Point
	if err := json.Unmarshal(data, &q); err != nil {
		return budget.HistoryPoint{}, fmt.Errorf("decode stored history point: %w", err)
	}
	return budget.HistoryPoint(q), nil
}

// StateOrder is a string that sorts as budget.CompareStates orders states
// (for times from 1970 to 2262): fixed-width decimal fields of the budget's
// creation, revision and computation, so that a Lua script can compare two
// states, and read when one was computed (StateOrderComputed), without
// decoding them.
func StateOrder(st *budget.State) string {
	return fmt.Sprintf("%019d|%019d|%019d", unixNanos(st.BudgetCreated), max(st.BudgetRevision, 0), unixNanos(st.Computed))
}

// unixNanos is t in nanoseconds since 1970, 0 for the zero time and before.
func unixNanos(t time.Time) int64 {
	if t.IsZero() || t.Before(time.Unix(0, 0)) {
		return 0
	}
	return t.UnixNano()
}

// MarshalState encodes st in its stored form.
func MarshalState(st *budget.State) ([]byte, error) {
	b, err := json.Marshal(FromState(st))
	if err != nil {
		return nil, fmt.Errorf("encode state of budget %q: %w", st.Budget, err)
	}
	return b, nil
}

// UnmarshalState decodes a state stored by MarshalState.
func UnmarshalState(data []byte) (budget.State, error) {
	var rec State
	if err := json.Unmarshal(data, &rec); err != nil {
		return budget.State{}, fmt.Errorf("decode stored state: %w", err)
	}
	return rec.ToState(), nil
}

// UsageRetention is how long a budget's month of usage, and an alert's
// "fired" mark, are kept after the month ends: long enough to answer for
// last month's bill.
const UsageRetention = 70 * 24 * time.Hour

// UsageExpiry returns when a month's usage may be dropped.
func UsageExpiry(month time.Time) time.Time {
	return budget.MonthStart(month).AddDate(0, 1, 0).Add(UsageRetention)
}

// CheckUsage returns an error for an increment that does not name a place
// in a month: stores check the whole batch before applying any of it.
func CheckUsage(budgetName string, month time.Time, hour int, requests, sampled int64) error {
	if budgetName == "" {
		return fmt.Errorf("usage increment without a budget")
	}
	if month.IsZero() {
		return fmt.Errorf("usage increment of budget %q without a month", budgetName)
	}
	if n := hoursIn(month); hour < 0 || hour >= n {
		return fmt.Errorf("usage increment of budget %q: hour %d is outside %s (hours 0-%d)",
			budgetName, hour, budget.MonthKey(month), n-1)
	}
	if requests < 0 || sampled < 0 {
		return fmt.Errorf("usage increment of budget %q: negative counts %d/%d", budgetName, requests, sampled)
	}
	return nil
}

// hoursIn is budget.HoursIn(budget.MonthStart(t)) by arithmetic, as it is
// asked for every increment of a report batch. UTC months have no daylight
// saving changes, so a month is 24 hours a day.
func hoursIn(t time.Time) int {
	y, m, _ := t.UTC().Date()
	days := [...]int{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}[m-1]
	if m == time.February && y%4 == 0 && (y%100 != 0 || y%400 == 0) {
		days = 29
	}
	return 24 * days
}

// EncodeNameToken returns a page token that lists the names after name in a
// listing whose tokens start with prefix. The name is quoted, so a token
// that was cut short or added to does not decode.
func EncodeNameToken(prefix, name string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(prefix + strconv.Quote(name)))
}

// DecodeNameToken returns the name a token of EncodeNameToken holds, or the
// error of InvalidPageToken.
func DecodeNameToken(prefix, token string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return "", InvalidPageToken()
	}
	quoted, ok := strings.CutPrefix(string(b), prefix)
	if !ok {
		return "", InvalidPageToken()
	}
	name, err := strconv.Unquote(quoted)
	if err != nil || !strings.HasPrefix(quoted, `"`) {
		return "", InvalidPageToken()
	}
	return name, nil
}

// CheckSequenced returns an error for a numbered report that names no
// client or whose seq is out of range, or for one of its increments.
func CheckSequenced(s *store.SequencedUsage) error {
	if s.Client == "" {
		return fmt.Errorf("numbered report without a client")
	}
	if s.Seq == 0 || s.Seq > store.MaxSeq {
		return fmt.Errorf("report %d of client %q: seq outside 1-%d", s.Seq, s.Client, uint64(store.MaxSeq))
	}
	for _, u := range s.Usage {
		if err := CheckUsage(u.Budget, u.Month, u.Hour, u.Requests, u.Sampled); err != nil {
			return err
		}
	}
	return nil
}

// CheckSeen returns an error if a batch's Seen is set but not one entry per
// numbered report.
func CheckSeen(b *store.ReportBatch) error {
	if b.Seen != nil && len(b.Seen) != len(b.Sequenced) {
		return fmt.Errorf("%d entries in Seen for %d numbered reports", len(b.Seen), len(b.Sequenced))
	}
	return nil
}
