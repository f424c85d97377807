package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/internal/fleet"
	"github.com/tracesampling/controlplane/internal/server"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/internal/xray/xraytest"
	"github.com/tracesampling/controlplane/internal/xraycore"
	"github.com/tracesampling/controlplane/pkg/clocktest"
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
// With --numbered the reports must carry seqs (the store sees them as
// numbered), be acknowledged, and be billed once each.
func TestAuditsAnEnforcingBudget(t *testing.T) {
	for _, mode := range []string{"stream", "unary"} {
		for _, numbered := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/numbered=%t", mode, numbered), func(t *testing.T) { auditsAnEnforcingBudget(t, mode, numbered) })
		}
	}
}

// countingLedger is the store, counting the numbered reports recorded.
type countingLedger struct {
	*memstore.Store
	numbered atomic.Int64
}

func (l *countingLedger) RecordReports(ctx context.Context, b store.ReportBatch) ([]store.RateResult, error) {
	l.numbered.Add(int64(len(b.Sequenced)))
	return l.Store.RecordReports(ctx, b)
}

func auditsAnEnforcingBudget(t *testing.T, mode string, numbered bool) {
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
	ledger := &countingLedger{Store: st}
	addr, _ := startServerOn(t, st, ledger)

	var stdout, stderr bytes.Buffer
	args := []string{"-mode", mode, "-server", addr, "-http", "127.0.0.1:1", "-clients", "4", "-rules", "2", "-duration", "3s", "-warmup", "1s",
		"-interval", "200ms", "-fleet-rps", "4000", "-zipf", "0", "-reservoir", "0", "-fixed-rate", "0.5", "-edit=false", "-tick", "20ms",
		fmt.Sprintf("-numbered=%t", numbered)}
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	var res Result
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout.String())), &res); err != nil {
		t.Fatalf("output is not one JSON result: %v\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if n := ledger.numbered.Load(); numbered != (n > 0) {
		t.Errorf("the store recorded %d numbered reports (%d reports made)", n, res.Reports)
	}
	switch u := res.Unacknowledged; {
	case numbered && u == nil:
		t.Error("instances whose last report was not acknowledged: not said, want 0")
	case numbered && *u != 0:
		t.Errorf("instances whose last report was not acknowledged: %d, want 0", *u)
	case !numbered && u != nil:
		t.Errorf("instances whose last report was not acknowledged: %d, want none said (not numbered)", *u)
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
// front of st, with a report interval of 1 s, and the X-Ray API on another
// on the same report pipeline (as serve wires it), until the test ends.
// It returns the two addresses.
func startServer(t *testing.T, st *memstore.Store) (grpcAddr, xrayAddr string) {
	t.Helper()
	return startServerOn(t, st, st)
}

// startServerOn is startServer with the report path's store apart.
func startServerOn(t *testing.T, st *memstore.Store, ledger server.LedgerStore) (grpcAddr, xrayAddr string) {
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
	srv := server.New(server.Options{Rules: st, Catalog: cat, Ledger: ledger, Budgets: st, Logger: log, ReportInterval: time.Second})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	core, err := xraycore.New(xraycore.Options{Catalog: cat, Rules: edit.NewRules(st), Sampling: srv.Sampling(),
		Fleet: fleet.New(cat, st, time.Second, nil), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	h, err := xray.NewHandler(core, xray.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(h)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		web.Close()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		srv.Stop(sctx)
		<-done
		cancel()
		<-catDone
	})
	return lis.Addr().String(), strings.TrimPrefix(web.URL, "http://")
}

// TestMixedFleet runs SDK instances and X-Ray instances on one rule of a
// real server, the X-Ray API on the same report pipeline as serve has it,
// for each way X-Ray clients count borrowed traces. Both kinds must take
// from the one reservoir, the X-Ray instances must borrow only before
// their first target (a client whose reports were refused would borrow
// every second), both must follow the edit, and every trace sampled must
// be reported.
func TestMixedFleet(t *testing.T) {
	for _, counting := range []string{countingSDK, countingOTel} {
		t.Run(counting, func(t *testing.T) { mixedFleet(t, counting) })
	}
}

func mixedFleet(t *testing.T, counting string) {
	st, err := memstore.New(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	grpcAddr, xrayAddr := startServer(t, st)

	var stdout, stderr bytes.Buffer
	// Reports more than a second apart, so that an instance without a
	// target has borrowed in every one, as with X-Ray's 10 s.
	args := []string{"-server", grpcAddr, "-http", "127.0.0.1:1", "-xray", xrayAddr, "-clients", "3", "-xray-clients", "3", "-rules", "2",
		"-duration", "5s", "-warmup", "1s", "-interval", "1500ms", "-fleet-rps", "3000", "-zipf", "0", "-reservoir", "30",
		"-fixed-rate", "0", "-tick", "20ms", "-xray-counting", counting}
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	var res Result
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout.String())), &res); err != nil {
		t.Fatalf("output is not one JSON result: %v\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	x := res.XRay
	if x == nil {
		t.Fatalf("no X-Ray part in %s", stdout.String())
	}
	sdkReservoir := res.Traces.Reservoir - x.Traces.Reservoir
	if sdkReservoir == 0 || x.Traces.Reservoir == 0 {
		t.Errorf("reservoir traces: %d by the SDK instances, %d by the X-Ray instances; want both kinds to take from it", sdkReservoir, x.Traces.Reservoir)
	}
	// Each X-Ray instance borrows in the seconds before its first target
	// (within 1.5 s: three seconds touched at most), and never again while
	// it reports on time.
	if x.Traces.Borrowed > 3*3 {
		t.Errorf("%d traces borrowed by 3 X-Ray instances: more than before their first targets", x.Traces.Borrowed)
	}
	if x.PropagationSeen != 3 || res.PropagationSeen != 3 {
		t.Errorf("the edit seen by %d X-Ray instances and %d streams, want 3 and 3", x.PropagationSeen, res.PropagationSeen)
	}
	if want := (Reported{Requests: res.Traces.Requests, Sampled: res.Traces.Sampled, Borrowed: res.Traces.Borrowed}); res.Reported != want || res.FlushFailed != 0 {
		t.Errorf("reported %+v with %d final reports failed, want all that was sampled: %+v", res.Reported, res.FlushFailed, want)
	}
	if res.ReportErrors != 0 || x.Errors != 0 {
		t.Errorf("%d gRPC and %d X-Ray errors (the first X-Ray one: %q)", res.ReportErrors, x.Errors, x.FirstError)
	}
}

// TestXRayFleet runs X-Ray instances alone against the X-Ray API (the
// in-memory core of package xraytest), making and editing the rules through
// it. Every instance must report with a 24-hex ClientID (counting borrowed
// traces apart from sampled ones, or among them, as --xray-counting says),
// borrow before its
// first quota only and take from its quota after, follow the edit through its
// targets, and report exactly what it sampled.
func TestXRayFleet(t *testing.T) {
	for _, counting := range []string{countingSDK, countingOTel} {
		t.Run(counting, func(t *testing.T) { xrayFleet(t, counting) })
	}
}

func xrayFleet(t *testing.T, counting string) {
	core, err := xraytest.New(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer core.Close()
	var mu sync.Mutex
	clients := map[string]int{}
	var wire Reported // what the statistics documents said
	core.Observe = func(r xray.Report) {
		mu.Lock()
		clients[r.ClientID]++
		for _, s := range r.Statistics {
			wire.Requests += s.Requests
			wire.Sampled += s.Sampled
			wire.Borrowed += s.Borrowed
		}
		mu.Unlock()
	}
	h, err := xray.NewHandler(core, xray.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var stdout, stderr bytes.Buffer
	args := []string{"-server", "", "-xray", strings.TrimPrefix(srv.URL, "http://"), "-xray-clients", "4", "-clients", "0", "-rules", "2",
		"-duration", "4s", "-warmup", "1s", "-interval", "300ms", "-fleet-rps", "2000", "-zipf", "0", "-reservoir", "40",
		"-fixed-rate", "0.25", "-tick", "20ms", "-xray-counting", counting}
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	var res Result
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout.String())), &res); err != nil {
		t.Fatalf("output is not one JSON result: %v\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	x := res.XRay
	if x == nil {
		t.Fatalf("no X-Ray part in %s", stdout.String())
	}
	mu.Lock()
	for id, n := range clients {
		if len(id) != 24 || strings.Trim(id, "0123456789abcdef") != "" || n < 2 {
			t.Errorf("client %q made %d reports, want a 24-hex ID and several", id, n)
		}
	}
	if len(clients) != 4 {
		t.Errorf("%d clients reported, want 4", len(clients))
	}
	// As the X-Ray SDKs count them, SampledCount leaves borrowed traces
	// out; as the OpenTelemetry samplers do, it has them.
	want := Reported{Requests: res.Traces.Requests, Sampled: res.Traces.Sampled - res.Traces.Borrowed, Borrowed: res.Traces.Borrowed}
	if counting == countingOTel {
		want.Sampled = res.Traces.Sampled
	}
	if wire != want {
		t.Errorf("the statistics documents said %+v, want %+v", wire, want)
	}
	mu.Unlock()
	if x.Traces != res.Traces {
		t.Errorf("X-Ray traces %+v, fleet %+v: the fleet is X-Ray instances only", x.Traces, res.Traces)
	}
	tr := x.Traces
	if tr.Borrowed == 0 || tr.Reservoir == 0 {
		t.Errorf("%d borrowed and %d reservoir traces: want borrowing before the first quota and quota after", tr.Borrowed, tr.Reservoir)
	}
	// Each instance borrows in the seconds before its first quota (its
	// first report, within 300 ms), and never again: the quota's TTL (20 s)
	// outlives the run. An instance that misread the TTL would borrow
	// every second.
	if tr.Borrowed > 4*2 {
		t.Errorf("%d borrowed traces: more than 4 instances borrow before their first quota", tr.Borrowed)
	}
	if x.FixedRateMin != 0.5 || x.FixedRateMax != 0.5 || x.PropagationSeen != 4 {
		t.Errorf("fixed rate in force %g-%g, %d instances saw the edit: want 0.5 (the edit doubled 0.25) on all 4", x.FixedRateMin, x.FixedRateMax, x.PropagationSeen)
	}
	if want := (Reported{Requests: tr.Requests, Sampled: tr.Sampled, Borrowed: tr.Borrowed}); x.Reported != want || x.FlushFailed != 0 {
		t.Errorf("reported %+v with %d final reports failed, want all that was sampled: %+v", x.Reported, x.FlushFailed, want)
	}
	if x.Reports == 0 || x.Errors != 0 {
		t.Errorf("%d reports, %d errors", x.Reports, x.Errors)
	}
	// The run removed its rules.
	rs, err := core.Rules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 {
		t.Errorf("%d rules left, want the Default rule only", len(rs))
	}
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
	addr, _ := startServer(t, st)
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
	// At fixed rate 0 each second's traces are the reservoir's and the
	// borrowed ones, and the quotas held are within R, some of the time
	// not none.
	if n := len(res.SampledBySecond); len(res.ReservoirBySecond) != n || len(res.BorrowedBySecond) != n || len(res.QuotaHeldBySecond) != n {
		t.Fatalf("seconds: %d sampled, %d reservoir, %d borrowed, %d quota held", n, len(res.ReservoirBySecond), len(res.BorrowedBySecond), len(res.QuotaHeldBySecond))
	}
	var maxHeld float64
	for i, n := range res.SampledBySecond {
		if res.ReservoirBySecond[i]+res.BorrowedBySecond[i] != n {
			t.Errorf("second %d: %d sampled, %d reservoir and %d borrowed", i, n, res.ReservoirBySecond[i], res.BorrowedBySecond[i])
		}
		maxHeld = max(maxHeld, res.QuotaHeldBySecond[i])
	}
	if maxHeld <= 0 || maxHeld > 10.05 {
		t.Errorf("quotas held at most %v a second, want some, within R = 10", maxHeld)
	}

	for _, bad := range [][]string{{"-clients", "5", "-scale-from", "6"}, {"-scale-from", "2", "-scale-at", "0s"}, {"-scale-from", "2", "-duration", "10s", "-scale-at", "10s"}} {
		if err := run(ctx, bad, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "--scale-") {
			t.Errorf("run(%q) = %v, want a --scale- error", bad, err)
		}
	}
}

// TestFirstReportSpansSinceTheRules: the first report's interval runs from
// the first rules, as the SDK's does, so its rate is the instance's
// traffic; a default interval back made it a tenth of it.
func TestFirstReportSpansSinceTheRules(t *testing.T) {
	run := &loadRun{}
	run.setInterval(10 * time.Second)
	in := &instance{run: run, rules: []string{"r"}}
	t0 := time.Unix(1_700_000_000, 0)
	in.rulesAt.Store(t0.UnixNano())
	in.requests.Add(40)
	docs := in.statistics(t0.Add(2*time.Second), false)
	if got := docs[0].GetInterval().AsDuration(); got != 2*time.Second {
		t.Errorf("first report's interval %v, want 2s (since the rules)", got)
	}
	docs = in.statistics(t0.Add(12*time.Second), false)
	if got := docs[0].GetInterval().AsDuration(); got != 10*time.Second {
		t.Errorf("second report's interval %v, want 10s (since the first)", got)
	}
}

// steady is a member with a constant rate that holds its rules from a given
// time and samples nothing; it counts what it is asked to decide.
type steady struct {
	rate    float64
	since   int64
	decided int
}

func (s *steady) load() float64                     { return s.rate }
func (s *steady) heldSince() int64                  { return s.since }
func (s *steady) decide(int64, *rand.Rand) decision { s.decided++; return notSampled }
func (s *steady) tallies() (*counts, bool, float64) { return &counts{}, true, 0 }

// TestPacerMakesUpLateSteps plays steps on a fake clock, some late and
// some dropped, as a busy machine's ticker gives them: each member's time
// due adds up to the time since it got its rules, so none of its traffic is
// lost, and none is played before it has its rules.
func TestPacerMakesUpLateSteps(t *testing.T) {
	clock := clocktest.New(time.Unix(1_700_000_000, 0))
	t0 := clock.Now().UnixNano()
	held := []int64{0, t0 + int64(70*time.Millisecond), t0 + int64(1200*time.Millisecond)}
	// On time, on time, 250 ms late (four ticks dropped), a second stalled,
	// on time.
	steps := []time.Duration{50 * time.Millisecond, 50 * time.Millisecond, 300 * time.Millisecond, time.Second, 50 * time.Millisecond}
	var p pacer
	due := make([]time.Duration, len(held))
	for _, d := range steps {
		now := clock.Add(d).UnixNano()
		for i, h := range held {
			due[i] += p.due(now, h)
		}
		p.advance(now)
	}
	end := clock.Now().UnixNano()
	want := []time.Duration{0, time.Duration(end - held[1]), time.Duration(end - held[2])}
	if diff := cmp.Diff(want, due); diff != "" {
		t.Errorf("time due by member (-want +got):\n%s", diff)
	}
}

// TestPlayerDeliversTheRateAsked plays a fleet through steps that fall
// behind, as on a loaded machine: the requests delivered are the rate
// asked over the time each member held its rules (within the Poisson
// arrivals' chance, under 1 % here), and what the result reports as asked.
// A fixed count per step delivered 15 % of them.
func TestPlayerDeliversTheRateAsked(t *testing.T) {
	clock := clocktest.New(time.Unix(1_700_000_000, 0))
	t0 := clock.Now().UnixNano()
	a := &steady{rate: 20_000, since: t0}
	b := &steady{rate: 5_000, since: t0 + int64(500*time.Millisecond)}
	run := newRun(config{duration: time.Minute}, io.Discard)
	run.measuring.Store(t0)
	p := &player{run: run, members: []member{a, b}, rng: rand.New(rand.NewPCG(3, 4)), lastSec: -1}
	for _, d := range []time.Duration{50, 50, 400, 50, 1500, 50} {
		p.step(clock.Add(d * time.Millisecond))
	}
	end := clock.Now().UnixNano()
	wantA, wantB := 20_000*float64(end-t0)/1e9, 5_000*float64(end-b.since)/1e9
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"a", float64(a.decided), wantA},
		{"b", float64(b.decided), wantB},
		{"asked", p.asked(), wantA + wantB},
		{"counted", float64(run.fleet.requests), wantA + wantB},
	} {
		if math.Abs(c.got-c.want) > 0.01*c.want {
			t.Errorf("%s: %.0f requests, want %.0f (±1 %%)", c.name, c.got, c.want)
		}
	}
	var bySecond int64
	for _, n := range run.requestsSec {
		bySecond += n
	}
	if bySecond != run.fleet.requests {
		t.Errorf("requests by second add up to %d, want the %d played", bySecond, run.fleet.requests)
	}
}

// TestLateStepDecidesAtTheRateThenInForce stalls the player across a
// budget's cut (fixed rate 1, then 0 from the second second): the requests
// due before the cut are sampled, those after it are not, and each second
// counts its own, as an SDK deciding each request when it comes would. A
// late step that decided all it played at the rate in force when played
// sampled none of them.
func TestLateStepDecidesAtTheRateThenInForce(t *testing.T) {
	clock := clocktest.New(time.Unix(1_700_000_000, 0))
	t0 := clock.Now().UnixNano()
	in := &instance{rate: 10_000}
	in.rulesAt.Store(t0)
	in.setFixedRate(t0, 1)
	run := newRun(config{duration: time.Minute}, io.Discard)
	run.measuring.Store(t0)
	p := &player{run: run, members: []member{in}, rng: rand.New(rand.NewPCG(5, 6)), lastSec: -1}
	p.step(clock.Add(50 * time.Millisecond))
	in.setFixedRate(t0+int64(time.Second), 0) // the cut, seen while the player stalls
	p.step(clock.Add(1950 * time.Millisecond))

	if got := in.fixedRate(); got != 0 {
		t.Errorf("fixed rate in force %v, want 0", got)
	}
	if got, want := in.cutAt.Load(), t0+int64(time.Second); got != want {
		t.Errorf("cut at %v, want %v", time.Duration(got-t0), time.Second)
	}
	got := []int64{run.sampledSec[0].Load(), run.sampledSec[1].Load()}
	if math.Abs(float64(got[0])-10_000) > 300 || got[1] != 0 {
		t.Errorf("sampled by second %v, want [10000±300 0]", got)
	}
	if math.Abs(float64(run.requestsSec[1])-10_000) > 300 {
		t.Errorf("requests in the second second %d, want 10000±300", run.requestsSec[1])
	}
}

// TestInstantsWeighByRate: the fleet's instant is its members' weighted by
// their rates, as its traffic is; members without one are left out.
func TestInstantsWeighByRate(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	ms := []member{
		&steady{rate: 30, since: t0.Add(100 * time.Millisecond).UnixNano()},
		&steady{rate: 10, since: t0.Add(500 * time.Millisecond).UnixNano()},
		&steady{rate: 1000},
	}
	got := instantsOf(t0, ms, member.heldSince)
	want := &Instants{First: 100, RateWeight: 200, Last: 500, Instances: 2}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("instants (-want +got):\n%s", diff)
	}
	if got := instantsOf(t0, ms[2:], member.heldSince); got != nil {
		t.Errorf("no member with an instant: %+v, want nil", got)
	}
}
