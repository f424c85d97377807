package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/output"
	"github.com/tracesampling/controlplane/internal/server"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
)

// budgetServer is a real control plane with the BudgetService (over a
// memstore, its catalog running) on a loopback port, a plain client of it,
// and the store, to check what the CLI did and to fire alerts.
type budgetServer struct {
	addr string
	api  pb.BudgetServiceClient
	st   *signalingStore
}

// signalingStore is the memstore with two signals, so that the watch tests
// fire alerts when the server is known to be watching instead of sleeping:
// subscribed is closed once the catalog's change feed is open, and watching
// receives a value each time a WatchAlerts call has read where the alert
// list stands (alerts fired after that are sent on its stream).
type signalingStore struct {
	*memstore.Store
	once       sync.Once
	subscribed chan struct{}
	watching   chan struct{}
	calls      sync.Map // WatchAlerts stream contexts that read the list already
}

func (s *signalingStore) WatchChanges(ctx context.Context, notify func(store.Topic)) error {
	return s.Store.WatchChanges(ctx, func(t store.Topic) {
		s.once.Do(func() { close(s.subscribed) })
		notify(t)
	})
}

func (s *signalingStore) Alerts(ctx context.Context, budgetName string, pageSize int, pageToken string) (store.AlertPage, error) {
	page, err := s.Store.Alerts(ctx, budgetName, pageSize, pageToken)
	// A WatchAlerts call reads the list first after it registered for alert
	// notifications: the newest alert, or what fired after the one it
	// resumes from.
	if m, _ := grpc.Method(ctx); m == pb.BudgetService_WatchAlerts_FullMethodName {
		if _, seen := s.calls.LoadOrStore(ctx, true); !seen {
			s.watching <- struct{}{}
		}
	}
	return page, err
}

func startBudgetServer(t *testing.T) *budgetServer {
	t.Helper()
	st := &signalingStore{Store: newCLIStore(t), subscribed: make(chan struct{}), watching: make(chan struct{}, 16)}
	log := slog.New(slog.DiscardHandler)
	cat := servetest.Catalog(t, st, catalog.Options{Logger: log, Poll: time.Second})
	srv := server.New(server.Options{Rules: st, Catalog: cat, Ledger: st, Budgets: st, Now: cliNow, Logger: log})
	conn, addr := servetest.Serve(t, srv)
	return &budgetServer{addr: addr, api: pb.NewBudgetServiceClient(conn), st: st}
}

// cli runs `controlplane budgets ARGS... --server ADDR` with stdin.
func (s *budgetServer) cli(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	return runCLI(t, stdin, append(append([]string{"budgets"}, args...), "--server", s.addr)...)
}

func (s *budgetServer) get(t *testing.T, name string) *pb.Budget {
	t.Helper()
	resp, err := s.api.GetBudget(callCtx(t), &pb.GetBudgetRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	b := resp.GetBudget()
	b.CreateTime, b.UpdateTime = nil, nil
	return b
}

func (s *budgetServer) names(t *testing.T) []string {
	t.Helper()
	resp, err := s.api.ListBudgets(callCtx(t), &pb.ListBudgetsRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range resp.GetBudgets() {
		names = append(names, b.GetName())
	}
	return names
}

// fire records an alert in the store, as the budget controller does.
func (s *budgetServer) fire(t *testing.T, name string, kind budget.AlertKind, threshold float64, message string) {
	t.Helper()
	_, fired, err := s.st.FireAlert(callCtx(t), budget.Alert{
		Budget: name, Kind: kind, Threshold: threshold, Time: cliNow(), MonthStart: budget.MonthStart(cliNow()),
		Spent: 500 * threshold, Forecast: 600, Cap: 500, Currency: "USD", Message: message,
	})
	if err != nil || !fired {
		t.Fatalf("FireAlert: fired %v, %v", fired, err)
	}
}

func TestBudgetsCreateGetListUpdateDelete(t *testing.T) {
	s := startBudgetServer(t)
	s.cli(t, "", "create", "shop", "--amount", "500", "--description", "the shop",
		"--service", "shop-*", "--service", "checkout", "--rule-label", "team=payments",
		"--threshold", "0.8", "--threshold", "0.5", "--forecast-threshold", "1.2",
		"--webhook", "https://hooks.example.com/a", "--webhook", "http://alerts.internal/b", "--webhook-secret", "s3cret",
		"--floor", "1.5", "--free-traces", "1000").mustOK(t)
	want := &pb.Budget{
		Name: "shop", Description: "the shop", MonthlyAmountMicros: 500_000_000, CurrencyCode: "USD", PricePerMillionMicros: 5_000_000, FreeTraces: 1000,
		Scope:           &pb.BudgetScope{ServiceNames: []string{"shop-*", "checkout"}, RuleLabels: map[string]string{"team": "payments"}},
		Mode:            pb.Budget_MODE_ENFORCE,
		SpendThresholds: []float64{0.5, 0.8}, ForecastThresholds: []float64{1.2},
		Channels: []*pb.NotificationChannel{
			{WebhookUrl: "https://hooks.example.com/…", Secret: "****"},
			{WebhookUrl: "http://alerts.internal/…", Secret: "****"},
		},
		FloorTracesPerSecond: 1.5, Etag: "1",
		UpdateActor: "local", // the CLI's loopback peer of a server without credentials
	}
	got := s.get(t, "shop")
	if got.GetUid() == "" {
		t.Error("created budget has no uid")
	}
	want.Uid = got.GetUid()
	if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
		t.Fatalf("created budget (-want +got):\n%s", d)
	}
	s.cli(t, "", "create", "-f", "testdata/budgets.yaml").mustOK(t)

	golden(t, "budgets_list.table.golden", s.cli(t, "", "list").mustOK(t).stdout)
	golden(t, "budgets_get.yaml.golden", s.cli(t, "", "get", "platform", "-o", "yaml").mustOK(t).stdout)
	out := s.cli(t, "", "get", "shop", "-o", "json").mustOK(t).stdout
	var fromJSON pb.Budget
	if err := output.UnmarshalJSON([]byte(out), &fromJSON); err != nil {
		t.Fatalf("get -o json: %v\n%s", err, out)
	}
	fromJSON.CreateTime, fromJSON.UpdateTime = nil, nil
	if d := cmp.Diff(want, &fromJSON, protocmp.Transform()); d != "" {
		t.Errorf("get -o json (-want +got):\n%s", d)
	}
	// Money is a number, and the mode is named as in the table and the file.
	for _, field := range []string{`"monthly_amount_micros": 500000000,`, `"mode": "enforce",`} {
		if !strings.Contains(out, field) {
			t.Errorf("get -o json lacks %s:\n%s", field, out)
		}
	}
	out = s.cli(t, "", "list", "-o", "json").mustOK(t).stdout
	var list pb.ListBudgetsResponse
	if err := output.UnmarshalJSON([]byte(out), &list); err != nil || len(list.GetBudgets()) != 3 {
		t.Errorf("list -o json: %v, %d budgets, want 3\n%s", err, len(list.GetBudgets()), out)
	}

	// The update mask is exactly the flags given; --service replaces the
	// services and keeps the rule labels; the webhooks sent again keep their
	// secrets.
	out = s.cli(t, "", "update", "shop", "--amount", "800", "--service", "shop-api", "--mode", "alert_only",
		"--webhook", "https://hooks.example.com/a", "--etag", "1", "-o", "yaml").mustOK(t).stdout
	// A new amount is a new generation of the budget's alerts.
	want.MonthlyAmountMicros, want.Mode, want.Etag, want.Generation = 800_000_000, pb.Budget_MODE_ALERT_ONLY, "2", 1
	want.Scope.ServiceNames = []string{"shop-api"}
	want.Channels = want.Channels[:1]
	if d := cmp.Diff(want, s.get(t, "shop"), protocmp.Transform()); d != "" {
		t.Errorf("after update (-want +got):\n%s", d)
	}
	if b, err := s.st.Budget(callCtx(t), "shop"); err != nil || b.Channels[0].Secret != "s3cret" {
		t.Errorf("after update the webhook's secret is %+v, %v; want s3cret kept", b.Channels, err)
	}
	if !strings.Contains(out, "monthly_amount: 800\n") || !strings.Contains(out, "mode: alert_only\n") {
		t.Errorf("update -o yaml printed\n%s", out)
	}
	// A webhook given as get shows it (redacted) keeps its URL and secret
	// beside a new one.
	s.cli(t, "", "update", "shop", "--webhook", "https://hooks.example.com/…", "--webhook", "https://new.example.com/x").mustOK(t)
	want.Channels = append(want.Channels, &pb.NotificationChannel{WebhookUrl: "https://new.example.com/…"})
	if b, err := s.st.Budget(callCtx(t), "shop"); err != nil || len(b.Channels) != 2 ||
		b.Channels[0] != (budget.Channel{WebhookURL: "https://hooks.example.com/a", Secret: "s3cret"}) || b.Channels[1].WebhookURL != "https://new.example.com/x" {
		t.Errorf("after an update with a redacted webhook: %+v, %v; want hooks.example.com/a kept with its secret", b.Channels, err)
	}
	// --rule-label '' empties the labels and keeps the services; --threshold ''
	// goes back to the defaults.
	s.cli(t, "", "update", "shop", "--rule-label", "", "--threshold", "").mustOK(t)
	want.Scope.RuleLabels, want.SpendThresholds, want.Etag = nil, budget.DefaultSpendThresholds, "4"
	if d := cmp.Diff(want, s.get(t, "shop"), protocmp.Transform()); d != "" {
		t.Errorf("after the second update (-want +got):\n%s", d)
	}

	res := s.cli(t, "", "delete", "shop", "--etag", "4").mustOK(t)
	if res.stdout != "deleted budget \"shop\"\n" {
		t.Errorf("delete printed %q", res.stdout)
	}
	if names := s.names(t); strings.Join(names, " ") != "platform search" {
		t.Errorf("after delete: %v", names)
	}
}

func TestBudgetsErrors(t *testing.T) {
	s := startBudgetServer(t)
	s.cli(t, "", "create", "shop", "--amount", "500").mustOK(t)
	s.cli(t, "", "update", "shop", "--amount", "600").mustOK(t) // etag 2: "1" is stale

	for _, tc := range []struct {
		name     string
		args     []string
		want     int
		messages []string // each in the error
	}{
		{"invalid budget", []string{"create", "bad", "--amount", "0", "--webhook", "ftp://x", "--mode", "always"}, exitInvalid, []string{
			`create budget "bad": invalid budget, nothing was sent`,
			"\n  budget.monthly_amount_micros: must be more than 0 and at most 1000000000000 units, got 0",
			"\n  budget.mode: enforce or alert_only, got \"always\"",
			"\n  budget.channels[0].webhook_url: an http or https URL",
		}},
		{"invalid budget on the server", []string{"create", "bad", "--amount", "0", "--webhook", "ftp://x", "--threshold", "20"}, exitInvalid, []string{
			`create budget "bad": `,
			"\n  budget.monthly_amount_micros: must be more than 0 and at most 1000000000000 units, got 0",
			"\n  budget.spend_thresholds[0]: a share of the cap in (0, 10], got 20",
			"\n  budget.channels[0].webhook_url: an http or https URL",
		}},
		{"invalid update", []string{"update", "shop", "--currency", "dollars"}, exitInvalid, []string{"\n  budget.currency_code: an ISO 4217 code"}},
		{"bad mode on update", []string{"update", "shop", "--mode", "off"}, exitInvalid, []string{"budget.mode: enforce or alert_only"}},
		{"stale etag", []string{"update", "shop", "--amount", "700", "--etag", "1"}, exitConflict, []string{`has etag "2", not "1"`}},
		{"delete stale etag", []string{"delete", "shop", "--etag", "1"}, exitConflict, []string{"conflict"}},
		{"create existing", []string{"create", "shop", "--amount", "1"}, exitConflict, []string{"already exists"}},
		{"a price of 0", []string{"create", "free", "--amount", "5", "--price-per-million", "0"}, exitInvalid, []string{
			"\n  budget.price_per_million_micros: must be more than 0",
		}},
		{"a price of 0 on update", []string{"update", "shop", "--price-per-million", "0"}, exitInvalid, []string{"budget.price_per_million_micros: must be more than 0"}},
		{"an empty webhook secret", []string{"create", "x", "--amount", "5", "--webhook", "https://h.example.com/x", "--webhook-secret", ""}, exitUsage, []string{
			"--webhook-secret is empty",
		}},
		{"an empty webhook secret on update", []string{"update", "shop", "--webhook", "https://h.example.com/x", "--webhook-secret="}, exitUsage, []string{"--webhook-secret is empty"}},
		{"get unknown", []string{"get", "nope"}, exitNotFound, []string{"not found"}},
		{"update unknown", []string{"update", "nope", "--amount", "1"}, exitNotFound, []string{"not found"}},
		{"update unknown scope", []string{"update", "nope", "--service", "x"}, exitNotFound, []string{"not found"}},
		{"status unknown", []string{"status", "nope"}, exitNotFound, []string{"not found"}},
		{"watch unknown", []string{"watch", "--budget", "nope"}, exitNotFound, []string{"not found"}},
		{"unknown field in a file", []string{"create", "-f", "testdata/budgets_unknown_field.yaml"}, exitInvalid, []string{
			"testdata/budgets_unknown_field.yaml: 4 problems found, nothing was changed:",
			`budgets_unknown_field.yaml:6: budget "typo" (#2): monthly_amout: unknown field; did you mean "monthly_amount"?`,
			`budgets_unknown_field.yaml:8: budget "typo" (#2): scope.services: unknown field; a scope has service_names, rule_labels`,
			`budgets_unknown_field.yaml:10: budget "typo" (#2): channels[0].url: unknown field; a channel has webhook_url, secret`,
			`budgets_unknown_field.yaml:5: budget "typo" (#2): monthly_amount: must be more than 0 and at most 1000000000000 units, got 0`,
		}},
		{"missing file", []string{"create", "-f", "testdata/nope.yaml"}, exitInvalid, []string{"nope.yaml"}},
		{"amount missing", []string{"create", "x"}, exitUsage, []string{"--amount is required"}},
		{"create without name", []string{"create", "--amount", "5"}, exitUsage, []string{"exactly one budget name"}},
		{"file and flags", []string{"create", "x", "-f", "testdata/budgets.yaml"}, exitUsage, []string{"not both"}},
		{"file and a webhook secret", []string{"create", "-f", "testdata/budgets.yaml", "--webhook-secret", "s"}, exitUsage, []string{"not both"}},
		{"secret without webhook", []string{"create", "x", "--amount", "5", "--webhook-secret", "s"}, exitUsage, []string{"--webhook-secret"}},
		{"update nothing", []string{"update", "shop"}, exitUsage, []string{"nothing to change"}},
		{"bad threshold", []string{"update", "shop", "--threshold", "80%"}, exitUsage, nil},
		{"watch yaml", []string{"watch", "-o", "yaml"}, exitUsage, []string{"table or json"}},
		{"wide is for rules", []string{"list", "-o", "wide"}, exitUsage, []string{"want table, json or yaml"}},
		{"alerts bad limit", []string{"alerts", "--limit", "-1"}, exitUsage, []string{"--limit"}},
		{"unknown command", []string{"frob"}, exitUsage, []string{`unknown command "frob"`}},
		{"help", []string{"create", "-h"}, exitOK, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := s.cli(t, "", tc.args...)
			if res.code != tc.want {
				t.Fatalf("exit code %d, want %d; err %v\nstderr:\n%s", res.code, tc.want, res.err, res.stderr)
			}
			for _, m := range tc.messages {
				if res.err == nil || !strings.Contains(res.err.Error(), m) {
					t.Errorf("error %q does not contain %q", res.err, m)
				}
			}
		})
	}
	// The server's message names the budget: the CLI does not say it twice.
	if res := s.cli(t, "", "create", "shop", "--amount", "1"); res.err == nil || res.err.Error() != `create budget "shop": already exists` {
		t.Errorf("create existing: %v", res.err)
	}
	// Nothing was created or changed by any of them.
	if names := s.names(t); len(names) != 1 || names[0] != "shop" {
		t.Errorf("budgets after the failures: %v, want shop alone", names)
	}
	if b := s.get(t, "shop"); b.GetEtag() != "2" || b.GetMonthlyAmountMicros() != 600_000_000 {
		t.Errorf("shop after the failures: %v", b)
	}
}

func TestBudgetStatusOfAFreshBudget(t *testing.T) {
	s := startBudgetServer(t)
	s.cli(t, "", "create", "shop", "--amount", "500", "--free-traces", "1000000").mustOK(t)

	golden(t, "budgets_status.table.golden", s.cli(t, "", "status", "shop").mustOK(t).stdout)
	out := s.cli(t, "", "status", "shop", "-o", "json").mustOK(t).stdout
	var st pb.BudgetStatus
	if err := output.UnmarshalJSON([]byte(out), &st); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	want := &pb.BudgetStatus{BudgetName: "shop", CurrencyCode: "USD", CapTraces: 101_000_000, FixedRateFactor: 1, ReservoirFactor: 1}
	if d := cmp.Diff(want, &st, protocmp.Transform()); d != "" {
		t.Errorf("status -o json (-want +got):\n%s", d)
	}
}

func TestBudgetAlerts(t *testing.T) {
	s := startBudgetServer(t)
	if out := s.cli(t, "", "alerts").mustOK(t).stdout; out != "TIME  BUDGET  KIND  THRESHOLD  MESSAGE\n" {
		t.Errorf("alerts with none fired printed %q", out)
	}
	if out := s.cli(t, "", "alerts", "-o", "json").mustOK(t).stdout; out != "{\n  \"alerts\": []\n}\n" {
		t.Errorf("alerts -o json with none fired printed %q", out)
	}
	s.fire(t, "shop", budget.AlertSpend, 0.5, "shop: 50% of 500.00 USD spent")
	s.fire(t, "search", budget.AlertForecast, 1, "search: forecast 130.00 USD, over 100% of 100.00 USD")
	s.fire(t, "shop", budget.AlertExhausted, 0, "shop: exhausted; only the floor is traced")

	golden(t, "budgets_alerts.table.golden", s.cli(t, "", "alerts").mustOK(t).stdout)
	out := s.cli(t, "", "alerts", "--budget", "shop", "--limit", "1").mustOK(t).stdout
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.Contains(lines[1], "exhausted") {
		t.Errorf("alerts --budget shop --limit 1:\n%s", out)
	}
	out = s.cli(t, "", "alerts", "--budget", "shop", "-o", "json").mustOK(t).stdout
	var resp pb.ListAlertsResponse
	if err := output.UnmarshalJSON([]byte(out), &resp); err != nil || len(resp.GetAlerts()) != 2 {
		t.Errorf("alerts -o json: %v, %d alerts, want 2\n%s", err, len(resp.GetAlerts()), out)
	}
}

// lockedBuffer is an output that a command writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// startWatch runs `budgets watch ARGS...` until the returned stop is called,
// which returns what run returned.
func startWatch(t *testing.T, addr string, args ...string) (stdout, stderr *lockedBuffer, stop func() error) {
	t.Helper()
	stdout, stderr = &lockedBuffer{}, &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"budgets", "watch", "--server", addr}, args...), strings.NewReader(""), stdout, stderr)
	}()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(serveWait):
			t.Fatal("watch did not end when its context was canceled")
			return nil
		}
	}
	t.Cleanup(func() { _ = stop() })
	return stdout, stderr, stop
}

// waitFor waits for a signal of the server.
func waitFor(t *testing.T, what string, c <-chan struct{}) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(serveWait):
		t.Fatalf("not within %v: %s", serveWait, what)
	}
}

func TestBudgetWatch(t *testing.T) {
	s := startBudgetServer(t)
	s.fire(t, "shop", budget.AlertSpend, 0.5, "fired before the watch: not printed")
	waitFor(t, "catalog subscribed to the store", s.st.subscribed)

	stdout, stderr, stop := startWatch(t, s.addr)
	waitFor(t, "the server watching", s.st.watching)
	s.fire(t, "shop", budget.AlertSpend, 0.8, "shop: 80% of 500.00 USD spent")
	want := "2026-03-01T12:00:00Z  shop  spend_threshold  80%  shop: 80% of 500.00 USD spent\n"
	pollUntil(t, "the alert printed", func() bool { return stdout.String() != "" })

	if err := stop(); err != nil {
		t.Errorf("watch ended with %v (exit %d), want nil (exit 0) on cancel", err, exitCode(err))
	}
	if got := stdout.String(); got != want {
		t.Errorf("watch printed\n%q\nwant\n%q", got, want)
	}
	if stderr.String() != "" {
		t.Errorf("watch wrote to stderr:\n%s", stderr)
	}
}

// TestBudgetWatchAgainAfterLostStream cuts the connection under a watch,
// fires an alert while it is cut, and checks that the watch prints it once
// it is back, then follows the new stream: after an alert was printed, and
// when the alert list was still empty (nothing to resume after).
func TestBudgetWatchAgainAfterLostStream(t *testing.T) {
	for _, tt := range []struct {
		name         string
		firstPrinted bool
		want         string
	}{
		{"after an alert printed", true, "first, while cut, after"},
		{"from an empty alert list", false, "while cut, after"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := startBudgetServer(t)
			s.cli(t, "", "create", "shop", "--amount", "500").mustOK(t)
			waitFor(t, "catalog subscribed to the store", s.st.subscribed)
			p := startCutProxy(t, s.addr)

			stdout, stderr, stop := startWatch(t, p.addr(), "--budget", "shop", "-o", "json")
			waitFor(t, "the server watching", s.st.watching)
			if tt.firstPrinted {
				s.fire(t, "other", budget.AlertSpend, 0.5, "not shop's")
				s.fire(t, "shop", budget.AlertSpend, 0.5, "first")
				pollUntil(t, "the first alert printed", func() bool { return strings.Contains(stdout.String(), "first") })
			}

			p.cut()
			s.fire(t, "shop", budget.AlertSpend, 0.8, "while cut")
			p.resume()
			waitFor(t, "the server watching again", s.st.watching)
			s.fire(t, "shop", budget.AlertSpend, 1, "after")
			pollUntil(t, "the last alert printed", func() bool { return strings.Contains(stdout.String(), "after") })

			if err := stop(); err != nil {
				t.Errorf("watch ended with %v, want nil on cancel", err)
			}
			var messages []string
			for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
				var a pb.Alert
				if err := output.UnmarshalJSON([]byte(line), &a); err != nil {
					t.Fatalf("watch -o json printed a line that is not an Alert: %v\n%s", err, line)
				}
				messages = append(messages, a.GetMessage())
			}
			if got := strings.Join(messages, ", "); got != tt.want {
				t.Errorf("watch printed %s; want %s", got, tt.want)
			}
			if !strings.Contains(stderr.String(), "lost the alert stream") {
				t.Errorf("watch did not say it lost the stream; stderr:\n%s", stderr)
			}
		})
	}
}

// cutProxy forwards TCP connections to a server; cut closes them all and
// refuses new ones until resume.
type cutProxy struct {
	lis    net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	paused bool
	conns  map[net.Conn]struct{}
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{lis: lis, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		lis.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) addr() string { return p.lis.Addr().String() }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.lis.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		if p.paused {
			p.mu.Unlock()
			in.Close()
			out.Close()
			continue
		}
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		for _, pair := range [][2]net.Conn{{in, out}, {out, in}} {
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				_, _ = io.Copy(pair[0], pair[1])
				pair[0].Close()
				pair[1].Close()
			}()
		}
	}
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

func (p *cutProxy) resume() {
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
}

func TestBudgetsFileRoundTrip(t *testing.T) {
	s := startBudgetServer(t)
	s.cli(t, "", "create", "-f", "testdata/budgets.yaml").mustOK(t)
	before := s.cli(t, "", "list", "-o", "json").mustOK(t).stdout

	// What list -o yaml prints creates the same budgets elsewhere once the
	// masked secrets and redacted URLs are written out again.
	out := s.cli(t, "", "list", "-o", "yaml").mustOK(t).stdout
	other := startBudgetServer(t)
	res := other.cli(t, out, "create", "-f", "-")
	if res.code != exitInvalid || !strings.Contains(res.err.Error(), `channels[0].secret: "****" is how the server masks a secret`) {
		t.Fatalf("create -f with masked secrets: exit %d, %v", res.code, res.err)
	}
	out = strings.Replace(out, "'****'", "s3cret", 1)
	res = other.cli(t, out, "create", "-f", "-")
	for _, want := range []string{`channels[0].webhook_url: a redacted URL`, `channels[1].webhook_url: a redacted URL`} {
		if res.code != exitInvalid || !strings.Contains(res.err.Error(), want) {
			t.Errorf("create -f with redacted URLs: exit %d, %v; want %q", res.code, res.err, want)
		}
	}
	out = strings.NewReplacer("https://hooks.example.com/…", "https://hooks.example.com/platform",
		"http://alerts.internal:8080/…", "http://alerts.internal:8080/budget").Replace(out)
	other.cli(t, out, "create", "-f", "-").mustOK(t)
	if after := other.cli(t, "", "list", "-o", "json").mustOK(t).stdout; stripTimes(after) != stripTimes(before) {
		t.Errorf("budgets created from list -o yaml:\n%s\nwant\n%s", after, before)
	}
}

// stripTimes removes the create and update times, and the uids the server
// gives each budget, from JSON output.
func stripTimes(s string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if !strings.Contains(line, `"create_time"`) && !strings.Contains(line, `"update_time"`) && !strings.Contains(line, `"uid"`) {
			b.WriteString(line)
		}
	}
	return b.String()
}

func TestBudgetsHelp(t *testing.T) {
	res := runCLI(t, "", "budgets", "--help").mustOK(t)
	for _, want := range []string{"watch", "CONTROLPLANE_SERVER", "Exit codes"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("budgets --help lacks %q:\n%s", want, res.stdout)
		}
	}
	res = runCLI(t, "", "budgets", "create", "-h")
	// The limits of the money flags are in their help.
	for _, want := range []string{"at most 1000000000000,", "at most 1000000 (default 5)"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("create -h lacks %q:\n%s", want, res.stdout)
		}
	}
	if res.code != exitOK || !strings.Contains(res.stdout, "controlplane budgets create (NAME --amount AMOUNT") || !strings.Contains(res.stdout, "--webhook-secret") {
		t.Errorf("create -h: exit %d\n%s", res.code, res.stdout)
	}
	if res := runCLI(t, "", "--help").mustOK(t); !strings.Contains(res.stdout, "budgets ") || !strings.Contains(res.stdout, "completion") {
		t.Errorf("--help lacks budgets or completion:\n%s", res.stdout)
	}
}

// TestWatchAlertsResumesAfterID: WatchAlerts with after_id first sends, oldest
// first, what fired after that alert, then new alerts as they fire; with an
// after_id no longer kept, every alert kept; with neither after_id nor
// from_oldest, only new alerts; a bad after_id is refused with a field
// violation.
func TestWatchAlertsResumesAfterID(t *testing.T) {
	s := startBudgetServer(t)
	waitFor(t, "catalog subscribed to the store", s.st.subscribed)
	for i, threshold := range []float64{0.5, 0.8, 0.9} {
		s.fire(t, "shop", budget.AlertSpend, threshold, fmt.Sprint("alert ", i))
	}
	list, err := s.api.ListAlerts(callCtx(t), &pb.ListAlertsRequest{BudgetName: "shop"})
	if err != nil || len(list.GetAlerts()) != 3 {
		t.Fatalf("ListAlerts: %v, %v", list, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), serveWait)
	defer cancel()
	stream, err := s.api.WatchAlerts(ctx, &pb.WatchAlertsRequest{BudgetName: "shop", AfterId: list.GetAlerts()[2].GetId()})
	if err != nil {
		t.Fatal(err)
	}
	recv := func() string {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetAlert().GetMessage()
	}
	if got := recv() + ", " + recv(); got != "alert 1, alert 2" {
		t.Errorf("resumed with %s, want alert 1, alert 2", got)
	}
	s.fire(t, "shop", budget.AlertExhausted, 1, "alert 3")
	if got := recv(); got != "alert 3" {
		t.Errorf("then %s, want alert 3", got)
	}

	// An after_id no longer kept: every alert kept, oldest first.
	gone, err := s.api.WatchAlerts(ctx, &pb.WatchAlertsRequest{BudgetName: "shop", AfterId: "trimmed-long-ago"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 4 {
		resp, err := gone.Recv()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, resp.GetAlert().GetMessage())
	}
	if fmt.Sprint(got) != "[alert 0 alert 1 alert 2 alert 3]" {
		t.Errorf("after an after_id no longer kept: %v, want alerts 0 to 3", got)
	}
	// Neither after_id nor from_oldest: only what fires after the call.
	// The call cannot say when it has started, so new alerts fire until one
	// arrives; none of those before it may.
	fresh, err := s.api.WatchAlerts(ctx, &pb.WatchAlertsRequest{BudgetName: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan string, 1)
	go func() {
		resp, err := fresh.Recv()
		if err != nil {
			first <- err.Error()
			return
		}
		first <- resp.GetAlert().GetMessage()
	}()
	for i := 0; ; i++ {
		s.fire(t, "shop", budget.AlertForecast, float64(i+1), fmt.Sprint("new ", i))
		select {
		case m := <-first:
			if !strings.HasPrefix(m, "new ") {
				t.Errorf("a watch from now got %q first, want a new alert", m)
			}
		case <-time.After(50 * time.Millisecond):
			continue
		}
		break
	}

	bad, err := s.api.WatchAlerts(callCtx(t), &pb.WatchAlertsRequest{AfterId: strings.Repeat("9", 200)})
	if err == nil {
		_, err = bad.Recv()
	}
	st := status.Convert(err)
	var fields []string
	for _, v := range fieldViolations(st) {
		fields = append(fields, v.GetField())
	}
	if st.Code() != codes.InvalidArgument || fmt.Sprint(fields) != "[after_id]" {
		t.Errorf("a 200-character after_id: %v, field violations %v; want INVALID_ARGUMENT on after_id", err, fields)
	}
}

// TestBudgetsPlanFlags: priorities, a pricing preset (a flag given beside it
// wins), coverage and burn-rate alerts from flags; bad ones are refused
// before anything is sent.
func TestBudgetsPlanFlags(t *testing.T) {
	s := startBudgetServer(t)
	s.cli(t, "", "create", "shop", "--amount", "100", "--priority", "tier=critical:10", "--priority", "health:-1",
		"--pricing", "aws-xray", "--retrievals-per-trace", "2", "--coverage-minutes", "5", "--burn-rate", "14.4").mustOK(t)
	got := s.get(t, "shop")
	want := &pb.Budget{
		Name: "shop", MonthlyAmountMicros: 100_000_000, CurrencyCode: "USD", PricePerMillionMicros: 5_000_000, FreeTraces: 100_000,
		RetrievedPricePerMillionMicros: 500_000, RetrievalsPerTrace: 2, Mode: pb.Budget_MODE_ENFORCE,
		SpendThresholds: budget.DefaultSpendThresholds, ForecastThresholds: budget.DefaultForecastThresholds,
		RulePriorities: []*pb.RulePriority{
			{RuleLabels: map[string]string{"tier": "critical"}, Priority: 10},
			{RuleNames: []string{"health"}, Priority: -1},
		},
		CoverageMinutes: 5, BurnRateThresholds: []float64{14.4}, Etag: "1", Uid: got.GetUid(), UpdateActor: "local",
	}
	if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
		t.Errorf("created (-want +got):\n%s", d)
	}
	// --priority '' empties the list; a raised price is a new generation.
	s.cli(t, "", "update", "shop", "--priority", "", "--price-per-million", "6").mustOK(t)
	if got := s.get(t, "shop"); len(got.GetRulePriorities()) != 0 || got.GetGeneration() != 1 || got.GetPricePerMillionMicros() != 6_000_000 {
		t.Errorf("after update: %v", got)
	}
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"create", "x", "--amount", "1", "--priority", "checkout"}, exitUsage, "want SELECTOR:N"},
		{[]string{"create", "x", "--amount", "1", "--pricing", "acme"}, exitInvalid, `pricing: a preset: aws-xray, aws-xray-insights; got "acme"`},
		{[]string{"create", "x", "--amount", "10", "--floor", "1"}, exitInvalid, "a floor of 1 trace per second costs $13.39"},
		{[]string{"create", "x", "--amount", "1", "--coverage-minutes", "5000"}, exitInvalid, "coverage_minutes"},
	} {
		res := s.cli(t, "", tt.args...)
		if res.code != tt.code || res.err == nil || !strings.Contains(res.err.Error()+res.stderr, tt.want) {
			t.Errorf("%q: exit %d, %v; want %d saying %q", tt.args, res.code, res.err, tt.code, tt.want)
		}
	}
	if names := s.names(t); !slices.Equal(names, []string{"shop"}) {
		t.Errorf("budgets %v after refused creates", names)
	}
}

// TestBudgetHistoryCmd: the month hour by hour, as a table and as the API's
// JSON; a bad --month is a usage error.
func TestBudgetHistoryCmd(t *testing.T) {
	s := startBudgetServer(t)
	s.cli(t, "", "create", "shop", "--amount", "100").mustOK(t)
	out := s.cli(t, "", "history", "shop").mustOK(t).stdout
	hours := int(cliNow().Sub(budget.MonthStart(cliNow()))/time.Hour) + 1
	if lines := strings.Count(out, "\n"); !strings.Contains(out, "HOUR") || lines != hours+3 {
		t.Errorf("history printed %d lines, want a header and %d hours:\n%s", lines, hours, out)
	}
	var resp pb.GetBudgetHistoryResponse
	if err := output.UnmarshalJSON([]byte(s.cli(t, "", "history", "shop", "-o", "json").mustOK(t).stdout), &resp); err != nil || len(resp.GetHours()) != hours {
		t.Errorf("history -o json: %v, %d hours, want %d", err, len(resp.GetHours()), hours)
	}
	if res := s.cli(t, "", "history", "shop", "--month", "May"); res.code != exitUsage {
		t.Errorf("--month May: exit %d, %v", res.code, res.err)
	}
	if res := s.cli(t, "", "history", "nope"); res.code != exitNotFound {
		t.Errorf("an unknown budget: exit %d, %v", res.code, res.err)
	}
}

// TestBudgetWatchSaysWhileTheServerIsAway: while the server cannot be
// reached, watch says so on stderr at each attempt, and when it watches
// again.
func TestBudgetWatchSaysWhileTheServerIsAway(t *testing.T) {
	s := startBudgetServer(t)
	s.cli(t, "", "create", "shop", "--amount", "500").mustOK(t)
	waitFor(t, "catalog subscribed to the store", s.st.subscribed)
	p := startCutProxy(t, s.addr)
	_, stderr, stop := startWatch(t, p.addr(), "--budget", "shop")
	waitFor(t, "the server watching", s.st.watching)

	p.cut()
	away := "cannot reach the control plane at " + p.addr()
	pollUntil(t, "two failed attempts said", func() bool { return strings.Count(stderr.String(), away) >= 2 })
	if !strings.Contains(stderr.String(), "trying again in ") {
		t.Errorf("watch does not say when it tries again:\n%s", stderr)
	}
	p.resume()
	waitFor(t, "the server watching again", s.st.watching)
	pollUntil(t, "watching again said", func() bool { return strings.Contains(stderr.String(), "watch: watching again") })
	if err := stop(); err != nil {
		t.Errorf("watch ended with %v, want nil on cancel", err)
	}
}

// TestBudgetWatchGivesUp: with --give-up-after, watch ends with exit code 6
// once the server has been away that long.
func TestBudgetWatchGivesUp(t *testing.T) {
	s := startBudgetServer(t)
	waitFor(t, "catalog subscribed to the store", s.st.subscribed)
	p := startCutProxy(t, s.addr)
	var stdout, stderr lockedBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(t.Context(), []string{"budgets", "watch", "--server", p.addr(), "--give-up-after", "1s"}, strings.NewReader(""), &stdout, &stderr)
	}()
	waitFor(t, "the server watching", s.st.watching)
	p.cut()
	select {
	case err := <-done:
		if code := exitCode(err); code != exitUnavailable || !strings.Contains(fmt.Sprint(err), "gave up") {
			t.Errorf("watch ended with exit %d, %v; want %d saying it gave up\nstderr:\n%s", code, err, exitUnavailable, stderr.String())
		}
	case <-time.After(serveWait):
		t.Fatalf("watch did not give up within %v\nstderr:\n%s", serveWait, stderr.String())
	}
}
