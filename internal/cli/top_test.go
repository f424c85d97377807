package cli

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/fleet"
	"github.com/tracesampling/controlplane/internal/output"
	"github.com/tracesampling/controlplane/internal/server"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/internal/ui"
)

// fleetServer is a replica with the StatusService (rules, reports, budgets
// over a memstore at cliNow), and the dashboard's handler on the same
// catalog.
type fleetServer struct {
	addr     string
	rules    pb.RuleServiceClient
	sampling pb.SamplingServiceClient
	status   pb.StatusServiceClient
	budgets  pb.BudgetServiceClient
	catalog  *catalog.Catalog
	ui       http.Handler
}

func startFleetServer(t *testing.T) *fleetServer {
	t.Helper()
	st := newCLIStore(t)
	log := slog.New(slog.DiscardHandler)
	cat := servetest.Catalog(t, st, catalog.Options{Logger: log, Poll: time.Second})
	srv := server.New(server.Options{Rules: st, Catalog: cat, Ledger: st, Budgets: st, Now: cliNow, Logger: log, ReportInterval: 10 * time.Second})
	conn, addr := servetest.Serve(t, srv)
	return &fleetServer{
		addr: addr, rules: pb.NewRuleServiceClient(conn), sampling: pb.NewSamplingServiceClient(conn),
		status: pb.NewStatusServiceClient(conn), budgets: pb.NewBudgetServiceClient(conn), catalog: cat,
		ui: ui.Handler(ui.Options{Fleet: fleet.New(cat, st, 10*time.Second, cliNow), Catalog: cat, Store: st, History: ui.BudgetHistory{Store: st}, Now: cliNow, Logger: log}),
	}
}

// waitRules waits until the replica's catalog holds n rules.
func (s *fleetServer) waitRules(t *testing.T, n int) {
	t.Helper()
	pollUntil(t, "the catalog's rules", func() bool { return len(s.catalog.Current().Rules) == n })
}

// report sends one client's report of 10 s: requests and sampled per rule,
// applying the rules version applied (0: it does not say).
func (s *fleetServer) report(t *testing.T, client, service string, applied int64, counts map[string][2]int64) {
	t.Helper()
	var docs []*pb.SamplingStatistics
	for rule, c := range counts {
		docs = append(docs, &pb.SamplingStatistics{RuleName: rule, RequestCount: c[0], SampledCount: c[1], Interval: durationpb.New(10 * time.Second)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: client, ServiceName: service, Statistics: docs, AppliedRulesVersion: applied})
	if err != nil || len(resp.GetRejected()) > 0 {
		t.Fatalf("report: %v, %v", resp, err)
	}
}

// fleetFixture is a fleet of three instances of two services under three
// rules, one budget on the payments team's rules.
func fleetFixture(t *testing.T) *fleetServer {
	t.Helper()
	s := startFleetServer(t)
	ctx := t.Context()
	for _, r := range []*pb.Rule{
		{Name: "health", Priority: 1, UrlPath: "/healthz"},
		{Name: "checkout", Priority: 10, FixedRate: 0.1, ReservoirSize: 5, ServiceName: "shop-*", HttpMethod: "POST", UrlPath: "/checkout*", Labels: map[string]string{"team": "payments"}},
		{Name: "search", Priority: 20, FixedRate: 0.01, ReservoirSize: 2, ServiceName: "search"},
	} {
		if _, err := s.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: r}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{
		Name: "payments", MonthlyAmountMicros: 500_000_000, PricePerMillionMicros: 2_000_000, Mode: pb.Budget_MODE_ENFORCE,
		Scope: &pb.BudgetScope{RuleLabels: map[string]string{"team": "payments"}},
	}}); err != nil {
		t.Fatal(err)
	}
	s.waitRules(t, 4)
	pollUntil(t, "the budget in the catalog", func() bool { return len(s.catalog.CurrentBudgets().Budgets) == 1 })
	// shop-1 and search-1 run the current rules; shop-2 applied the rules
	// before search was created (it has health and checkout as they are);
	// Default has not changed since.
	v := s.catalog.Current().Version
	s.report(t, "shop-1", "shop-api", v, map[string][2]int64{"health": {300, 0}, "checkout": {1200, 60}, "Default": {50, 3}})
	s.report(t, "shop-2", "shop-api", v-2, map[string][2]int64{"health": {300, 0}, "checkout": {800, 40}})
	s.report(t, "search-1", "search", v, map[string][2]int64{"search": {5000, 55}, "health": {100, 0}})
	return s
}

// TestTopOnce: top --once prints each rule's live figures in match order
// (golden file), and -o json is GetFleetStatus itself.
func TestTopOnce(t *testing.T) {
	s := fleetFixture(t)
	res := runCLI(t, "", "top", "--once", "--server", s.addr).mustOK(t)
	golden(t, "top.once.golden", res.stdout)

	res = runCLI(t, "", "top", "--once", "-o", "json", "--server", s.addr).mustOK(t)
	var got pb.GetFleetStatusResponse
	if err := output.UnmarshalJSON([]byte(res.stdout), &got); err != nil {
		t.Fatalf("top -o json: %v\n%s", err, res.stdout)
	}
	want, err := s.status.GetFleetStatus(t.Context(), &pb.GetFleetStatusRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, &got, protocmp.Transform()); diff != "" {
		t.Errorf("top -o json is not GetFleetStatus (-want +got):\n%s", diff)
	}

	res = runCLI(t, "", "top", "--once", "--service", "search", "--server", s.addr).mustOK(t)
	if strings.Contains(res.stdout, "checkout") || !strings.Contains(res.stdout, "search") {
		t.Errorf("top --service search:\n%s", res.stdout)
	}
}

// TestTopRefreshes: without --once, top draws a frame per interval until
// it is stopped, and says when it cannot reach the server instead of
// giving up.
func TestTopRefreshes(t *testing.T) {
	s := fleetFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	out := &lockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"top", "--interval", "100ms", "--server", s.addr}, strings.NewReader(""), out, out)
	}()
	pollUntil(t, "three frames", func() bool { return strings.Count(out.String(), "rules version") >= 3 })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("top after Ctrl-C: %v, want nil", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	out = &lockedBuffer{}
	go func() {
		done <- run(ctx, []string{"top", "--interval", "100ms", "--server", "127.0.0.1:1", "--timeout", "1s"}, strings.NewReader(""), out, out)
	}()
	pollUntil(t, "two failed frames", func() bool { return strings.Count(out.String(), "trying again every 100ms") >= 2 })
	if !strings.Contains(out.String(), "cannot reach the control plane at 127.0.0.1:1") {
		t.Errorf("top without a server printed:\n%s", out.String())
	}
	cancel()
	<-done
	if res := runCLI(t, "", "top", "--once", "--server", "127.0.0.1:1", "--timeout", "1s"); res.code != exitUnavailable {
		t.Errorf("top --once without a server: exit %d (%v), want %d", res.code, res.err, exitUnavailable)
	}
}

// TestExplain: explain prints the server's answer (golden file), and its
// JSON is the very answer of the dashboard's explain form.
func TestExplain(t *testing.T) {
	s := fleetFixture(t)
	args := []string{"explain", "--service", "shop-api", "--method", "POST", "--path", "/checkout/pay", "--attr", "tier=gold", "--server", s.addr}
	golden(t, "explain.table.golden", runCLI(t, "", args...).mustOK(t).stdout)

	res := runCLI(t, "", append(args, "-o", "json")...).mustOK(t)
	var cli pb.ExplainResponse
	if err := output.UnmarshalJSON([]byte(res.stdout), &cli); err != nil {
		t.Fatal(err)
	}
	body, _ := protojson.Marshal(&pb.ExplainRequest{ServiceName: "shop-api", HttpMethod: "POST", UrlPath: "/checkout/pay", Attributes: map[string]string{"tier": "gold"}})
	rec := httptest.NewRecorder()
	s.ui.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/ui/api/explain", bytes.NewReader(body)))
	if rec.Code != http.StatusOK {
		t.Fatalf("dashboard explain: %d %s", rec.Code, rec.Body)
	}
	var form pb.ExplainResponse
	if err := protojson.Unmarshal(rec.Body.Bytes(), &form); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&form, &cli, protocmp.Transform()); diff != "" {
		t.Errorf("explain differs from the dashboard's form (-form +cli):\n%s", diff)
	}

	// A request the server refuses: each bad field on its own line.
	res = runCLI(t, "", "explain", "--service", strings.Repeat("s", 65), "--server", s.addr)
	if res.code != exitInvalid || !strings.Contains(res.err.Error(), "\n  service_name: ") {
		t.Errorf("explain with a bad service: exit %d, %v", res.code, res.err)
	}
	// --resource-attr reaches the server, which names the bad one.
	res = runCLI(t, "", "explain", "--service", "shop-api", "--resource-attr", "deployment.environment.name="+strings.Repeat("x", 257), "--server", s.addr)
	if res.code != exitInvalid || !strings.Contains(res.err.Error(), "resource_attributes.deployment.environment.name: ") {
		t.Errorf("explain with a resource attribute too long: exit %d, %v", res.code, res.err)
	}
	if res := runCLI(t, "", "explain", "--service", "shop-api", "--resource-attr", "deployment.environment.name=production", "--server", s.addr); res.code != 0 {
		t.Errorf("explain with a resource: exit %d, %v", res.code, res.err)
	}
	if res := runCLI(t, "", "explain", "--server", s.addr); res.code != exitUsage {
		t.Errorf("explain without --service: exit %d, want %d", res.code, exitUsage)
	}
}
