package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/fleet"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/reservoir"
	"github.com/tracesampling/controlplane/pkg/rules"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 12, 3, 5, 30, 0, 0, time.UTC)

const interval = 10 * time.Second

// flaky is a store whose ledgers, usage or alerts can be made to fail.
type flaky struct {
	*memstore.Store
	ledgerDown, usageDown, alertsDown atomic.Bool
}

func (f *flaky) RecordReports(ctx context.Context, b store.ReportBatch) ([]store.RateResult, error) {
	if f.ledgerDown.Load() {
		return nil, fmt.Errorf("redis: dial tcp 10.0.0.1:6379: %w", store.ErrUnavailable)
	}
	return f.Store.RecordReports(ctx, b)
}

func (f *flaky) Usage(ctx context.Context, name string, month time.Time) (budget.Usage, error) {
	if f.usageDown.Load() {
		return budget.Usage{}, store.ErrUnavailable
	}
	return f.Store.Usage(ctx, name, month)
}

func (f *flaky) Alerts(ctx context.Context, name string, size int, token string) (store.AlertPage, error) {
	if f.alertsDown.Load() {
		return store.AlertPage{}, store.ErrUnavailable
	}
	return f.Store.Alerts(ctx, name, size, token)
}

type env struct {
	st  *flaky
	srv *httptest.Server
}

// newEnv serves the dashboard over an embedded store holding a rule, a
// budget with a decision and usage this month, and an alert.
func newEnv(t *testing.T) *env {
	t.Helper()
	ms, err := memstore.New(memstore.Options{Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	st := &flaky{Store: ms}
	ctx := context.Background()
	if _, err := st.CreateRule(ctx, rules.Rule{Name: "checkout", Priority: 1, ServiceName: "checkout", FixedRate: 0.1, ReservoirSize: 5}.Normalize(), "test"); err != nil {
		t.Fatal(err)
	}
	// 1.00 a month at 1.00 a thousand traces, the first 100 free.
	b := budget.Budget{Name: "shop", MonthlyAmountMicros: 1_000_000, PricePerMillionMicros: 1_000_000_000, FreeTraces: 100}.Normalize()
	if _, err := st.CreateBudget(ctx, b); err != nil {
		t.Fatal(err)
	}
	month := budget.MonthStart(t0)
	if err := st.PutStates(ctx, []budget.State{{Budget: "shop", MonthStart: month, Computed: t0, Decision: budget.Decision{Spent: 400, Forecast: 950, FixedRateFactor: 0.5, ReservoirFactor: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.FireAlert(ctx, budget.Alert{Budget: "shop", Kind: budget.AlertEnforcementStarted, Time: t0.Add(-time.Hour), MonthStart: month, Currency: "USD", Message: "enforcing"}); err != nil {
		t.Fatal(err)
	}
	l := reservoir.NewLedger(interval)
	usage := []store.UsageIncrement{
		{Budget: "shop", Month: t0, Hour: 0, Rule: "checkout", Requests: 1000, Sampled: 150},
		{Budget: "shop", Month: t0, Hour: 50, Rule: "checkout", Requests: 1000, Sampled: 200},
		{Budget: "shop", Month: t0, Hour: 53, Rule: "checkout", Requests: 1000, Sampled: 50},
	}
	rates := []store.RateUpdate{{Rule: "checkout", Add: reservoir.Receipt{Bucket: l.Bucket(t0), Rate: 20, Sampled: 2}, Reservoir: 5, Client: true}}
	if _, err := st.RecordReports(ctx, store.ReportBatch{Now: t0, Ledger: l, Rates: rates, Usage: usage}); err != nil {
		t.Fatal(err)
	}
	cat := catalog.New(st, catalog.Options{})
	if err := cat.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cat.LoadBudgets(ctx); err != nil {
		t.Fatal(err)
	}
	now := func() time.Time { return t0 }
	h := Handler(Options{
		Fleet: fleet.New(cat, st, interval, now), Catalog: cat, Store: st, History: BudgetHistory{Store: st},
		Now: now, Logger: slog.New(slog.DiscardHandler),
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{st: st, srv: srv}
}

func (e *env) do(t *testing.T, method, path, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func TestPage(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/ui/", "/ui/app.js", "/ui/style.css"} {
		code, h, body := e.do(t, "GET", path, "")
		if code != http.StatusOK || len(body) == 0 {
			t.Errorf("GET %s: %d, %d bytes", path, code, len(body))
		}
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
	if code, _, _ := e.do(t, "GET", "/ui/nothing.js", ""); code != http.StatusNotFound {
		t.Errorf("a missing asset: %d", code)
	}
}

// TestAssetsSelfContained: the page loads nothing from elsewhere (no CDN: it
// must work offline), and every asset the page names is embedded.
func TestAssetsSelfContained(t *testing.T) {
	remote := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import|fetch\(\s*["']https?:`)
	err := fs.WalkDir(assets, "assets", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assets.ReadFile(path)
		if err != nil {
			return err
		}
		if m := remote.Find(b); m != nil {
			t.Errorf("%s refers to another origin: %q", path, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	index, _ := assets.ReadFile("assets/index.html")
	for _, m := range regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllSubmatch(index, -1) {
		if _, err := assets.ReadFile("assets/" + string(m[1])); err != nil {
			t.Errorf("index.html names %s, which is not embedded", m[1])
		}
	}
}

func TestFleetAPI(t *testing.T) {
	e := newEnv(t)
	code, _, body := e.do(t, "GET", "/ui/api/fleet", "")
	if code != http.StatusOK {
		t.Fatalf("GET /ui/api/fleet: %d %s", code, body)
	}
	var got pb.GetFleetStatusResponse
	if err := protojson.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range got.GetRules() {
		names = append(names, fmt.Sprintf("%d %s %g/%g x%d", r.GetPosition(), r.GetRule().GetName(), r.GetRequestRate(), r.GetSampledRate(), r.GetInstances()))
	}
	if diff := cmp.Diff([]string{"1 checkout 20/2 x1", "2 Default 0/0 x0"}, names); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	if !strings.Contains(string(body), `"request_rate"`) {
		t.Errorf("JSON field names are not the .proto's: %s", body)
	}
}

func TestBudgetsAPI(t *testing.T) {
	e := newEnv(t)
	code, _, body := e.do(t, "GET", "/ui/api/budgets", "")
	if code != http.StatusOK {
		t.Fatalf("GET /ui/api/budgets: %d %s", code, body)
	}
	var got struct {
		Budgets []struct {
			Budget             json.RawMessage
			Status             json.RawMessage
			Burn               burnView
			EnforcementStarted *time.Time `json:"enforcement_started"`
		}
		More    int
		Warning string
	}
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Budgets) != 1 || got.Warning != "" {
		t.Fatalf("budgets: %s", body)
	}
	v := got.Budgets[0]
	var st pb.BudgetStatus
	if err := protojson.Unmarshal(v.Status, &st); err != nil {
		t.Fatal(err)
	}
	// 400 traces, 100 free, at 1,000 micros a trace.
	if st.GetSpentMicros() != 300_000 || st.GetFixedRateFactor() != 0.5 {
		t.Errorf("status: spent %d, factor %v; want 300000 and 0.5", st.GetSpentMicros(), st.GetFixedRateFactor())
	}
	// t0 is in hour 53 of the month: 54 hours, cumulative, the free 100 first.
	want := make([]int64, 54)
	for h := range want {
		switch {
		case h >= 53:
			want[h] = 300_000
		case h >= 50:
			want[h] = 250_000
		default:
			want[h] = 50_000
		}
	}
	if diff := cmp.Diff(want, v.Burn.SpentMicros); diff != "" {
		t.Errorf("burn-down (-want +got):\n%s", diff)
	}
	month := budget.MonthStart(t0)
	if !v.Burn.MonthStart.Equal(month) || !v.Burn.MonthEnd.Equal(month.AddDate(0, 1, 0)) {
		t.Errorf("month %v to %v", v.Burn.MonthStart, v.Burn.MonthEnd)
	}
	if v.EnforcementStarted == nil || !v.EnforcementStarted.Equal(t0.Add(-time.Hour)) {
		t.Errorf("enforcement started %v, want %v", v.EnforcementStarted, t0.Add(-time.Hour))
	}

	// Without usage or alerts the budget still shows, and the page says what
	// is missing.
	e.st.usageDown.Store(true)
	e.st.alertsDown.Store(true)
	code, _, body = e.do(t, "GET", "/ui/api/budgets", "")
	got.Budgets, got.Warning = nil, ""
	if err := json.Unmarshal(body, &got); err != nil || code != http.StatusOK {
		t.Fatalf("with the store down: %d %s", code, body)
	}
	if len(got.Budgets) != 1 || got.Budgets[0].Burn.Error == "" || got.Warning == "" || got.Budgets[0].EnforcementStarted != nil {
		t.Errorf("with the store down: %s", body)
	}
}

func TestAlertsAPI(t *testing.T) {
	e := newEnv(t)
	code, _, body := e.do(t, "GET", "/ui/api/alerts", "")
	var got pb.ListAlertsResponse
	if err := protojson.Unmarshal(body, &got); err != nil || code != http.StatusOK {
		t.Fatalf("GET /ui/api/alerts: %d %s %v", code, body, err)
	}
	if len(got.GetAlerts()) != 1 || got.GetAlerts()[0].GetKind() != pb.Alert_KIND_ENFORCEMENT_STARTED {
		t.Errorf("alerts: %s", body)
	}
}

func TestExplainAPI(t *testing.T) {
	e := newEnv(t)
	code, _, body := e.do(t, "POST", "/ui/api/explain", `{"service_name":"checkout","url_path":"/cart"}`)
	var got pb.ExplainResponse
	if err := protojson.Unmarshal(body, &got); err != nil || code != http.StatusOK {
		t.Fatalf("explain: %d %s %v", code, body, err)
	}
	if got.GetRule().GetName() != "checkout" || got.GetPosition() != 1 || got.GetFixedRateFactor() != 0.5 {
		t.Errorf("explain: %s", body)
	}
}

// TestErrors: the one error mapping of the dashboard's API. Bad input is
// 400 with the fields at fault; a store that cannot be reached is 503 with
// no detail of it; unknown paths and methods are refused.
func TestErrors(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name, method, path, body string
		code                     int
		fields                   []string
	}{
		{"page size not a number", "GET", "/ui/api/fleet?page_size=many", "", 400, []string{"page_size"}},
		{"page size too large", "GET", "/ui/api/fleet?page_size=5000", "", 400, []string{"page_size"}},
		{"bad page token", "GET", "/ui/api/fleet?page_token=zz", "", 400, []string{"page_token"}},
		{"explain without a service", "POST", "/ui/api/explain", `{"url_path":"/"}`, 400, []string{"service_name"}},
		{"explain of something else", "POST", "/ui/api/explain", `{"rule_name":"x"}`, 400, nil},
		{"explain not JSON", "POST", "/ui/api/explain", `service=x`, 400, nil},
		{"explain too large", "POST", "/ui/api/explain", `{"service_name":"` + strings.Repeat("x", maxExplainBody) + `"}`, 413, nil},
		{"explain by GET", "GET", "/ui/api/explain", "", 405, nil},
		{"no such API", "GET", "/ui/api/nothing", "", 404, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, h, body := e.do(t, tt.method, tt.path, tt.body)
			var got errorBody
			if err := json.Unmarshal(body, &got); err != nil || code != tt.code || got.Error == "" || h.Get("Content-Type") != "application/json" {
				t.Fatalf("%s %s: %d %s, want %d with an error", tt.method, tt.path, code, body, tt.code)
			}
			var fields []string
			for _, v := range got.Violations {
				fields = append(fields, v.Field)
			}
			if diff := cmp.Diff(tt.fields, fields); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
		})
	}
	e.st.ledgerDown.Store(true)
	code, _, body := e.do(t, "GET", "/ui/api/fleet", "")
	if code != http.StatusServiceUnavailable || strings.Contains(string(body), "10.0.0.1") {
		t.Errorf("fleet with the store down: %d %s", code, body)
	}
	e.st.alertsDown.Store(true)
	if code, _, body := e.do(t, "GET", "/ui/api/alerts", ""); code != http.StatusServiceUnavailable {
		t.Errorf("alerts with the store down: %d %s", code, body)
	}
	// Explain reads no store.
	if code, _, body := e.do(t, "POST", "/ui/api/explain", `{"service_name":"x"}`); code != http.StatusOK {
		t.Errorf("explain with the store down: %d %s", code, body)
	}
}

// TestFailHidesInternalErrors: an error that is not part of the API
// reaches the page only as "internal error".
func TestFailHidesInternalErrors(t *testing.T) {
	h := &handler{opts: Options{Logger: slog.New(slog.DiscardHandler)}}
	w := httptest.NewRecorder()
	h.fail(w, httptest.NewRequest("GET", "/ui/api/fleet", nil), errors.New("secret detail"))
	if w.Code != http.StatusInternalServerError || strings.Contains(w.Body.String(), "secret") {
		t.Errorf("internal error: %d %s", w.Code, w.Body)
	}
}
