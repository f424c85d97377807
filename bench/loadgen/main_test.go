package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/server"
	"github.com/tracesampling/controlplane/internal/store/memstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestAuditsAnEnforcingBudget runs the load generator against a real
// server whose budget enforces half the rule's fixed rate. The instances
// must decide at the rate the targets carry (0.25), not the rule's (0.5)
// nor a rate of their own, by trace ID as the SDK does; borrow nothing from
// a reservoir of 0; and report exactly what they sampled,
// so that the budget's count in the store is what the run says it sampled.
// The rule set already carries the rate in force, so the instances sample
// at 0.25 from their first request.
func TestAuditsAnEnforcingBudget(t *testing.T) {
	for _, mode := range []string{"stream", "unary"} {
		t.Run(mode, func(t *testing.T) { auditsAnEnforcingBudget(t, mode) })
	}
}

func auditsAnEnforcingBudget(t *testing.T, mode string) {
	st, err := memstore.New(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	now := time.Now()
	month := budget.MonthStart(now)
	if _, err := st.CreateBudget(ctx, budget.Budget{Name: "lg", Scope: budget.Scope{Services: []string{"loadgen"}}, Mode: budget.Enforce,
		MonthlyAmountMicros: 1_000_000_000, PricePerMillionMicros: 1_000_000}); err != nil {
		t.Fatal(err)
	}
	// As the controller would decide it: half the fixed rates.
	if err := st.PutStates(ctx, []budget.State{{Budget: "lg", MonthStart: month, Computed: now,
		Decision: budget.Decision{FixedRateFactor: 0.5, ReservoirFactor: 1}}}); err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, st)

	var stdout, stderr bytes.Buffer
	args := []string{"-mode", mode, "-server", addr, "-http", "127.0.0.1:1", "-clients", "4", "-rules", "2", "-duration", "3s", "-warmup", "1s",
		"-interval", "200ms", "-fleet-rps", "4000", "-zipf", "0", "-reservoir", "0", "-fixed-rate", "0.5", "-edit=false", "-tick", "20ms"}
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	var res Result
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout.String())), &res); err != nil {
		t.Fatalf("output is not one JSON result: %v\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	tr := res.Traces
	if res.FixedRateMin != 0.25 || res.FixedRateMax != 0.25 {
		t.Errorf("fixed rate in force %g-%g, want 0.25 (the rule's 0.5, halved by the budget)", res.FixedRateMin, res.FixedRateMax)
	}
	// A reservoir of 0 lends nothing, not even to new instances before
	// their first targets (their rule set withholds it).
	if tr.Reservoir != 0 || tr.Borrowed != 0 {
		t.Errorf("%d reservoir and %d borrowed traces: want none from a reservoir of 0", tr.Reservoir, tr.Borrowed)
	}
	// Binomial: 0.25 of about 12,000 requests is 3,000 ± 47; 15 % is over
	// 9 standard deviations.
	eligible := tr.Requests - tr.Borrowed
	if want := 0.25 * float64(eligible); eligible < 1000 || math.Abs(float64(tr.FixedRate)-want) > 0.15*want {
		t.Errorf("%d fixed-rate traces of %d requests, want about %.0f (0.25)", tr.FixedRate, eligible, want)
	}
	if tr.Sampled != tr.Reservoir+tr.Borrowed+tr.FixedRate {
		t.Errorf("sampled %d is not reservoir + borrowed + fixed rate (%d + %d + %d)", tr.Sampled, tr.Reservoir, tr.Borrowed, tr.FixedRate)
	}
	if want := (Reported{Requests: tr.Requests, Sampled: tr.Sampled, Borrowed: tr.Borrowed}); res.Reported != want || res.FlushFailed != 0 {
		t.Errorf("reported %+v with %d final reports failed, want all that was sampled: %+v", res.Reported, res.FlushFailed, want)
	}
	// The audit: what the budget counted is what the instances reported.
	u, err := st.Usage(ctx, "lg", now)
	if err != nil {
		t.Fatal(err)
	}
	var requests, sampled float64
	for h := range u.Sampled {
		requests += u.Requests[h]
		sampled += u.Sampled[h]
	}
	if int64(sampled) != res.Reported.Sampled || int64(requests) != res.Reported.Requests {
		t.Errorf("the budget counted %.0f sampled of %.0f requests, the load generator reported %d of %d", sampled, requests, res.Reported.Sampled, res.Reported.Requests)
	}
}

// startServer serves the rule and sampling services on a loopback port in
// front of st, with a report interval of 1 s, until the test ends.
func startServer(t *testing.T, st *memstore.Store) string {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cat := catalog.New(st, catalog.Options{Logger: log, Poll: time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	if err := cat.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cat.LoadBudgets(ctx); err != nil {
		t.Fatal(err)
	}
	catDone := make(chan struct{})
	go func() {
		defer close(catDone)
		_ = cat.Run(ctx)
	}()
	srv := server.New(server.Options{Rules: st, Catalog: cat, Ledger: st, Budgets: st, Logger: log, ReportInterval: time.Second})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		srv.Stop(sctx)
		<-done
		cancel()
		<-catDone
	})
	return lis.Addr().String()
}

// TestScaleOut runs the scale-out mode briefly against a real server: two
// instances first, four more a second later; every instance reports all
// it sampled, and the windows and seconds count from the start. Bad
// scale-out flags are refused before anything runs.
func TestScaleOut(t *testing.T) {
	st, err := memstore.New(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addr := startServer(t, st)
	var stdout, stderr bytes.Buffer
	args := []string{"-server", addr, "-http", "127.0.0.1:1", "-clients", "6", "-scale-from", "2", "-scale-at", "1s", "-rules", "1",
		"-duration", "3s", "-warmup", "0", "-interval", "500ms", "-fleet-rps", "600", "-zipf", "0", "-reservoir", "10", "-fixed-rate", "0", "-edit=false", "-tick", "20ms"}
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	var res Result
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout.String())), &res); err != nil {
		t.Fatalf("output is not one JSON result: %v\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "scale-out: 4 more instances started") {
		t.Errorf("no scale-out in the log:\n%s", stderr.String())
	}
	tr := res.Traces
	if want := (Reported{Requests: tr.Requests, Sampled: tr.Sampled, Borrowed: tr.Borrowed}); res.Reported != want || res.FlushFailed != 0 || tr.Requests == 0 {
		t.Errorf("reported %+v with %d final reports failed, want all that was sampled: %+v", res.Reported, res.FlushFailed, want)
	}
	var bySecond int64
	for _, n := range res.SampledBySecond {
		bySecond += n
	}
	// Windows are a second at least.
	if len(res.SampledBySecond) < 3 || len(res.Windows) < 3 || bySecond > tr.Sampled {
		t.Errorf("%d seconds (%d sampled) and %d windows of a 3 s run, %d sampled in all", len(res.SampledBySecond), bySecond, len(res.Windows), tr.Sampled)
	}

	for _, bad := range [][]string{{"-clients", "5", "-scale-from", "6"}, {"-scale-from", "2", "-scale-at", "0s"}, {"-scale-from", "2", "-duration", "10s", "-scale-at", "10s"}} {
		if err := run(ctx, bad, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "--scale-") {
			t.Errorf("run(%q) = %v, want a --scale- error", bad, err)
		}
	}
}
