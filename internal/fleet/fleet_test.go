package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/fleet"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/reservoir"
	"github.com/tracesampling/controlplane/pkg/rules"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 12, 10, 12, 0, 0, 0, time.UTC)

const interval = 10 * time.Second

type env struct {
	st  *memstore.Store
	cat *catalog.Catalog
	svc *fleet.Service
	l   reservoir.Ledger
}

// newEnv is an embedded store holding rs and budgets bs, a catalog loaded
// from it, and a Service at t0.
func newEnv(t *testing.T, rs []rules.Rule, bs []budget.Budget, states []budget.State) *env {
	t.Helper()
	st, err := memstore.New(memstore.Options{Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	for _, r := range rs {
		if _, err := st.CreateRule(ctx, r, "test"); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range bs {
		if _, err := st.CreateBudget(ctx, b.Normalize()); err != nil {
			t.Fatal(err)
		}
	}
	if len(states) > 0 {
		if err := st.PutStates(ctx, states); err != nil {
			t.Fatal(err)
		}
	}
	cat := catalog.New(st, catalog.Options{})
	if err := cat.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cat.LoadBudgets(ctx); err != nil {
		t.Fatal(err)
	}
	return &env{st: st, cat: cat, svc: fleet.New(cat, st, interval, func() time.Time { return t0 }), l: reservoir.NewLedger(interval)}
}

// report records one client's report of rule: rate requests and sampled
// traces per second.
func (e *env) report(t *testing.T, rule string, rate, sampled float64) {
	t.Helper()
	u := store.RateUpdate{Rule: rule, Add: reservoir.Receipt{Bucket: e.l.Bucket(t0), Rate: rate, Sampled: sampled}, Reservoir: 10, Client: true}
	if _, err := e.st.RecordReports(context.Background(), store.ReportBatch{Now: t0, Ledger: e.l, Rates: []store.RateUpdate{u}}); err != nil {
		t.Fatal(err)
	}
}

func rule(name string, priority int32, service string, labels ...string) rules.Rule {
	r := rules.Rule{Name: name, Priority: priority, FixedRate: 0.1, ReservoirSize: 10, ServiceName: service}
	for i := 0; i+1 < len(labels); i += 2 {
		if r.Labels == nil {
			r.Labels = map[string]string{}
		}
		r.Labels[labels[i]] = labels[i+1]
	}
	return r.Normalize()
}

// row is what a test compares of a RuleStatus.
type row struct {
	Name                   string
	Position               int
	Rate, Sampled, Granted float64
	Instances              int64
	Budgets                []fleet.Enforcement
}

func rows(st fleet.Status) []row {
	var out []row
	for _, r := range st.Rules {
		out = append(out, row{r.Rule.Name, r.Position, r.Rate, r.Sampled, r.Granted, r.Instances, r.Budgets})
	}
	return out
}

func TestStatus(t *testing.T) {
	month := budget.MonthStart(t0)
	e := newEnv(t,
		[]rules.Rule{rule("checkout", 10, "checkout", "team", "pay"), rule("search", 20, "search*"), rule("health", 5, "*")},
		[]budget.Budget{
			{Name: "pay", MonthlyAmountMicros: 100e6, Scope: budget.Scope{RuleLabels: map[string]string{"team": "pay"}, Services: []string{"check*"}}},
			{Name: "all", MonthlyAmountMicros: 100e6, Mode: budget.AlertOnly},
		},
		[]budget.State{
			{Budget: "pay", MonthStart: month, Decision: budget.Decision{FixedRateFactor: 0.5, ReservoirFactor: 0.25}},
			{Budget: "all", MonthStart: month, Decision: budget.Decision{FixedRateFactor: 0.1, ReservoirFactor: 0.1, Exhausted: true}},
		})
	// Three instances of checkout, one of search, none of health.
	e.report(t, "checkout", 30, 3)
	e.report(t, "checkout", 10, 1)
	e.report(t, "checkout", 0, 0)
	e.report(t, "search", 5, 5)

	all := fleet.Enforcement{Budget: "all", Mode: budget.AlertOnly, FixedRateFactor: 1, ReservoirFactor: 1, Exhausted: true}
	pay := fleet.Enforcement{Budget: "pay", Services: []string{"check*"}, Mode: budget.Enforce, FixedRateFactor: 0.5, ReservoirFactor: 0.25}
	want := []row{
		{"health", 0, 0, 0, 0, 0, []fleet.Enforcement{all}},
		{"checkout", 1, 40, 4, 10, 3, []fleet.Enforcement{all, pay}},
		{"search", 2, 5, 5, 10, 1, []fleet.Enforcement{all}},
		{rules.DefaultName, 3, 0, 0, 0, 0, []fleet.Enforcement{all}},
	}
	ctx := context.Background()
	got, err := e.svc.Status(ctx, fleet.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, rows(got), cmpopts.EquateApprox(0, 1e-9), cmpopts.EquateEmpty(), cmpopts.SortSlices(func(a, b fleet.Enforcement) bool { return a.Budget < b.Budget })); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	if got.Total != 4 || got.NextToken != "" || got.RulesVersion != e.cat.Current().Version || got.Interval != interval || !got.Time.Equal(t0) {
		t.Errorf("status header: total %d, next %q, version %d, interval %v, time %v", got.Total, got.NextToken, got.RulesVersion, got.Interval, got.Time)
	}

	// Pages of two, in order, and a service filter that keeps positions.
	var paged []row
	q := fleet.Query{PageSize: 2}
	for range 3 {
		page, err := e.svc.Status(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, rows(page)...)
		if q.PageToken = page.NextToken; q.PageToken == "" {
			break
		}
	}
	if diff := cmp.Diff(rows(got), paged); diff != "" {
		t.Errorf("pages of two (-all +paged):\n%s", diff)
	}
	filtered, err := e.svc.Status(ctx, fleet.Query{Service: "search-api"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rows(filtered) {
		names = append(names, r.Name+"@"+string(rune('0'+r.Position)))
	}
	if diff := cmp.Diff([]string{"health@0", "search@2", "Default@3"}, names); diff != "" || filtered.Total != 3 {
		t.Errorf("service filter: total %d (-want +got):\n%s", filtered.Total, diff)
	}
}

// failing is a ledger whose store is down.
type failing struct{}

func (failing) RecordReports(context.Context, store.ReportBatch) ([]store.RateResult, error) {
	return nil, store.ErrUnavailable
}

func TestStatusErrors(t *testing.T) {
	e := newEnv(t, nil, nil, nil)
	ctx := context.Background()
	tests := []struct {
		name  string
		q     fleet.Query
		field string
	}{
		{"negative page size", fleet.Query{PageSize: -1}, "page_size"},
		{"page size too large", fleet.Query{PageSize: fleet.MaxPageSize + 1}, "page_size"},
		{"garbage token", fleet.Query{PageToken: "%%%"}, "page_token"},
		{"another listing's token", fleet.Query{PageToken: "MTA"}, "page_token"},
		{"a zero position", fleet.Query{PageToken: "ZmxlZXQ6MA"}, "page_token"},
		{"service name too long", fleet.Query{Service: strings.Repeat("s", rules.MaxServiceNameLen+1)}, "service_name"},
		{"service name not UTF-8", fleet.Query{Service: "\xff"}, "service_name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.Status(ctx, tt.q)
			var ve *rules.ValidationError
			if !errors.As(err, &ve) || len(ve.Violations) != 1 || ve.Violations[0].Field != tt.field {
				t.Errorf("Status(%+v) = %v, want a violation of %s", tt.q, err, tt.field)
			}
		})
	}
	down := fleet.New(e.cat, failing{}, interval, nil)
	if _, err := down.Status(ctx, fleet.Query{}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Status with the store down = %v, want ErrUnavailable", err)
	}
	// A page past the end is empty, not an error.
	page, err := e.svc.Status(ctx, fleet.Query{PageToken: "ZmxlZXQ6OTk"}) // fleet:99
	if err != nil || len(page.Rules) != 0 || page.NextToken != "" {
		t.Errorf("page past the end = %+v, %v", page, err)
	}
}

func TestExplain(t *testing.T) {
	month := budget.MonthStart(t0)
	checkout := rule("checkout", 10, "checkout", "team", "pay")
	checkout.HTTPMethod, checkout.URLPath = "POST", "/cart/*"
	gold := rule("gold", 5, "*")
	gold.Attributes = map[string]string{"tier": "gold"}
	e := newEnv(t, []rules.Rule{checkout, gold, rule("search", 20, "search")},
		[]budget.Budget{{Name: "pay", MonthlyAmountMicros: 100e6, Scope: budget.Scope{RuleLabels: map[string]string{"team": "pay"}}}},
		[]budget.State{{Budget: "pay", MonthStart: month, Decision: budget.Decision{FixedRateFactor: 0.5, ReservoirFactor: 0.25}}})

	got, err := e.svc.Explain(rules.Request{ServiceName: "checkout", HTTPMethod: "POST", URLPath: "/cart/add", Attributes: map[string]string{"tier": "silver"}})
	if err != nil {
		t.Fatal(err)
	}
	want := fleet.Explanation{
		RulesVersion: e.cat.Current().Version,
		Rule:         &checkout,
		Position:     1,
		Skipped:      []fleet.Mismatch{{Rule: "gold", Position: 0, Field: "attributes.tier", Pattern: "gold", Value: "silver"}},
		FixedRate:    0.05, Reservoir: 2.5, FixedRateFactor: 0.5, ReservoirFactor: 0.25,
		Budgets: []string{"pay"},
		Summary: fmt.Sprintf(`Rule "checkout" matches (position 2 of rules version %d; 1 rule before it did not match): 2.5 traces/s of reservoir for the fleet, then 5 %% of the rest, budgets pay applying ×0.5 to the fixed rate and ×0.25 to the reservoir.`, e.cat.Current().Version),
	}
	ignore := cmpopts.IgnoreFields(rules.Rule{}, "Revision", "CreateTime", "UpdateTime", "RulesVersion")
	if diff := cmp.Diff(want, got, ignore); diff != "" {
		t.Errorf("Explain (-want +got):\n%s", diff)
	}

	// No attribute at all: "absent"; another service falls to the Default
	// rule past every other, with no budget.
	got, err = e.svc.Explain(rules.Request{ServiceName: "billing", HTTPMethod: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	wantSkipped := []fleet.Mismatch{
		{Rule: "gold", Position: 0, Field: "attributes.tier", Pattern: "gold", Absent: true},
		{Rule: "checkout", Position: 1, Field: "service_name", Pattern: "checkout", Value: "billing"},
		{Rule: "search", Position: 2, Field: "service_name", Pattern: "search", Value: "billing"},
	}
	if diff := cmp.Diff(wantSkipped, got.Skipped); diff != "" || got.Rule.Name != rules.DefaultName || got.Position != 3 || got.Budgets != nil || got.FixedRateFactor != 1 {
		t.Errorf("Explain for billing: rule %s at %d, budgets %v, factor %v; skipped (-want +got):\n%s", got.Rule.Name, got.Position, got.Budgets, got.FixedRateFactor, diff)
	}
}

// TestExplainByResource: a request explained with the instance's resource
// attributes matches the rule for its environment, and says why the other
// environment's rule did not match, by its resource attribute.
func TestExplainByResource(t *testing.T) {
	staging := rule("shop-staging", 1, "shop")
	staging.ResourceAttributes = map[string]string{"deployment.environment.name": "staging"}
	prod := rule("shop-prod", 2, "shop")
	prod.ResourceAttributes = map[string]string{"deployment.environment.name": "prod*"}
	e := newEnv(t, []rules.Rule{staging, prod}, nil, nil)
	got, err := e.svc.Explain(rules.Request{ServiceName: "shop", Resource: map[string]string{"deployment.environment.name": "production"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []fleet.Mismatch{{Rule: "shop-staging", Position: 0, Field: "resource_attributes.deployment.environment.name", Pattern: "staging", Value: "production"}}
	if diff := cmp.Diff(want, got.Skipped); diff != "" || got.Rule.Name != "shop-prod" {
		t.Errorf("Explain: rule %s; skipped (-want +got):\n%s", got.Rule.Name, diff)
	}
	got, err = e.svc.Explain(rules.Request{ServiceName: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Rule.Name != rules.DefaultName || len(got.Skipped) != 2 || !got.Skipped[1].Absent || got.Skipped[1].Field != "resource_attributes.deployment.environment.name" {
		t.Errorf("Explain without a resource: rule %s, skipped %+v; want Default past both, the attribute absent", got.Rule.Name, got.Skipped)
	}
}

func TestExplainErrors(t *testing.T) {
	e := newEnv(t, nil, nil, nil)
	many := map[string]string{}
	for i := range fleet.MaxExplainAttributes + 1 {
		many[strings.Repeat("k", i+1)] = "v"
	}
	tests := []struct {
		name   string
		req    rules.Request
		fields []string
	}{
		{"no service", rules.Request{}, []string{"service_name"}},
		{"long fields", rules.Request{
			ServiceName: "s", ServiceType: strings.Repeat("t", 65), Host: strings.Repeat("h", fleet.MaxExplainHostLen+1),
			HTTPMethod: strings.Repeat("m", fleet.MaxExplainMethodLen+1), URLPath: strings.Repeat("/", fleet.MaxExplainPathLen+1),
			ResourceARN: strings.Repeat("a", fleet.MaxExplainARNLen+1),
		}, []string{"service_type", "host", "http_method", "url_path", "resource_arn"}},
		{"bad attributes", rules.Request{ServiceName: "s", Attributes: map[string]string{"": "x", "ok": strings.Repeat("v", fleet.MaxExplainAttrValueLen+1), "fine": "\xff"}},
			[]string{"attributes", "attributes.fine", "attributes.ok"}},
		{"too many attributes", rules.Request{ServiceName: "s", Attributes: many}, []string{"attributes"}},
		{"a resource attribute too long", rules.Request{ServiceName: "s", Resource: map[string]string{"service.version": strings.Repeat("9", rules.MaxInstanceResourceValueLen+1)}},
			[]string{"resource_attributes.service.version"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.Explain(tt.req)
			var ve *rules.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Explain = %v, want a validation error", err)
			}
			var fields []string
			for _, v := range ve.Violations {
				fields = append(fields, v.Field)
			}
			if diff := cmp.Diff(tt.fields, fields); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}
}
