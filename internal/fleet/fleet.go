// Package fleet answers "what is the fleet doing?", transport-neutral: each
// rule's live figures in match order, from the fleet ledger that splits the
// reservoirs (request and sampled rates, instances, quotas held) with the
// budgets in force on it, and which rule a request matches and why. The
// gRPC StatusService and the dashboard both call it, and both answer with
// the API's messages (StatusToProto, ExplanationToProto).
package fleet

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/reservoir"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// Ledger is what Status needs of the store: reads of the fleet ledgers
// (a batch of updates without a reservoir, rate, receipt or client changes
// nothing). Safe for concurrent use.
type Ledger interface {
	RecordReports(ctx context.Context, b store.ReportBatch) ([]store.RateResult, error)
}

// Service answers from a replica's catalog and the store's ledgers. It holds
// no state of its own and is safe for concurrent use.
type Service struct {
	catalog *catalog.Catalog
	ledger  Ledger
	l       reservoir.Ledger
	now     func() time.Time
}

// New returns a Service; interval is the SDKs' report interval (the ledger's
// bucket length) and now the clock (nil: time.Now).
func New(cat *catalog.Catalog, ledger Ledger, interval time.Duration, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{catalog: cat, ledger: ledger, l: reservoir.NewLedger(interval), now: now}
}

// Page sizes of Status.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// Query selects a page of Status.
type Query struct {
	// PageSize is at most MaxPageSize; 0 means DefaultPageSize.
	PageSize  int
	PageToken string
	// Service keeps only the rules whose service glob matches it, when set.
	Service string
}

// Status is one page of rules with their live figures.
type Status struct {
	RulesVersion int64
	Time         time.Time     // when the ledger was read
	Interval     time.Duration // the SDKs' report interval
	Rules        []RuleStatus  // in match order
	NextToken    string        // empty on the last page
	Total        int           // rules in every page, after the filter
}

// RuleStatus is one rule and the fleet's figures under it.
type RuleStatus struct {
	Rule rules.Rule
	// Position is the rule's index in match order among all the rules.
	Position int
	// Rate and Sampled are the fleet's requests and sampled traces per
	// second, Instances the SDK instances whose latest report is live, and
	// Granted the reservoir quota they may hold (reservoir.Totals).
	Rate, Sampled, Granted float64
	Instances              int64
	// Current is how many of the Instances run the rule as it is: their
	// latest report says they applied its RulesVersion or a later one.
	Current int64
	// Budgets are those whose rule labels cover the rule, by name.
	Budgets []Enforcement
}

// Enforcement is what one budget does to a rule's targets.
type Enforcement struct {
	Budget   string
	Services []string // the scope's service globs; empty: every service
	Mode     budget.Mode
	// The factors in force now: 1 unless the budget enforces and the
	// controller decided for this month.
	FixedRateFactor, ReservoirFactor float64
	Exhausted                        bool
}

// Status returns a page of the current rules with the fleet's figures: one
// read of the page's ledgers.
func (s *Service) Status(ctx context.Context, q Query) (Status, error) {
	size, start, err := checkQuery(q)
	if err != nil {
		return Status{}, err
	}
	view := s.catalog.Current()
	now := s.now()
	out := Status{RulesVersion: view.Version, Time: now, Interval: s.l.Interval}
	cs := view.Set().Rules() // in match order
	var picked []int         // positions in match order
	for i := range cs {
		if q.Service == "" || cs[i].ServiceName.Match(q.Service) {
			picked = append(picked, i)
		}
	}
	out.Total = len(picked)
	if start > len(picked) {
		start = len(picked)
	}
	end := min(start+size, len(picked))
	if end < len(picked) {
		out.NextToken = encodeToken(end)
	}
	picked = picked[start:end]
	if len(picked) == 0 {
		return out, nil
	}
	reads := make([]store.RateUpdate, len(picked))
	for k, i := range picked {
		reads[k] = store.RateUpdate{Rule: cs[i].Rule.Name, Add: reservoir.Receipt{Bucket: s.l.Bucket(now)}, RuleVersion: cs[i].Rule.SinceVersion()}
	}
	res, err := s.ledger.RecordReports(ctx, store.ReportBatch{Now: now, Ledger: s.l, Rates: reads})
	if err != nil {
		return Status{}, fmt.Errorf("read fleet ledgers: %w", err)
	}
	if len(res) != len(reads) {
		return Status{}, fmt.Errorf("read fleet ledgers: %d results for %d rules", len(res), len(reads))
	}
	budgets := s.catalog.CurrentBudgets()
	for k, i := range picked {
		r := &cs[i].Rule
		out.Rules = append(out.Rules, RuleStatus{
			Rule: r.Clone(), Position: i,
			Rate: res[k].Fleet, Sampled: res[k].Sampled, Granted: res[k].Granted, Instances: res[k].Instances, Current: res[k].Applied,
			Budgets: enforcements(budgets, r, now),
		})
	}
	return out, nil
}

// enforcements returns the budgets whose rule labels cover r, with the
// factors each applies now (as catalog.Budgets.Factors decides them for a
// service in its scope).
func enforcements(bs *catalog.Budgets, r *rules.Rule, now time.Time) []Enforcement {
	var out []Enforcement
	month := budget.MonthStart(now)
	for i := range bs.Budgets {
		b := &bs.Budgets[i]
		if !(budget.Scope{RuleLabels: b.Scope.RuleLabels}).Covers("", r) {
			continue
		}
		e := Enforcement{Budget: b.Name, Services: slices.Clone(b.Scope.Services), Mode: b.Mode, FixedRateFactor: 1, ReservoirFactor: 1}
		if st, ok := bs.States[b.Name]; ok && st.MonthStart.Equal(month) {
			e.Exhausted = st.Decision.Exhausted
			if b.Mode == budget.Enforce {
				e.FixedRateFactor, e.ReservoirFactor = st.Decision.FixedRateFactor, st.Decision.ReservoirFactor
			}
		}
		out = append(out, e)
	}
	return out
}

// checkQuery returns the page size and the position a page starts at.
func checkQuery(q Query) (size, start int, err error) {
	var vs []rules.FieldViolation
	size = q.PageSize
	switch {
	case size == 0:
		size = DefaultPageSize
	case size < 0 || size > MaxPageSize:
		vs = append(vs, rules.FieldViolation{Field: "page_size", Description: fmt.Sprintf("must be between 0 and %d", MaxPageSize)})
	}
	if q.PageToken != "" {
		if start, err = decodeToken(q.PageToken); err != nil {
			vs = append(vs, rules.FieldViolation{Field: "page_token", Description: "not a token from GetFleetStatus"})
		}
	}
	if !utf8.ValidString(q.Service) || utf8.RuneCountInString(q.Service) > rules.MaxServiceNameLen {
		vs = append(vs, rules.FieldViolation{Field: "service_name", Description: fmt.Sprintf("at most %d characters of UTF-8", rules.MaxServiceNameLen)})
	}
	if len(vs) > 0 {
		return 0, 0, &rules.ValidationError{Violations: vs}
	}
	return size, start, nil
}

// tokenPrefix marks page tokens, so that another listing's token is refused.
const tokenPrefix = "fleet:"

func encodeToken(pos int) string {
	return base64.RawURLEncoding.EncodeToString([]byte(tokenPrefix + strconv.Itoa(pos)))
}

func decodeToken(tok string) (int, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) > 32 || string(b[:min(len(b), len(tokenPrefix))]) != tokenPrefix {
		return 0, fmt.Errorf("malformed page token")
	}
	pos, err := strconv.Atoi(string(b[len(tokenPrefix):]))
	if err != nil || pos <= 0 {
		return 0, fmt.Errorf("malformed page token")
	}
	return pos, nil
}
