package faults

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
)

// Result is what one fault cost.
type Result struct {
	Fault  string
	NotRun string // why the fault was not run; the rest is empty then

	Instances int
	// Decisions the fleet made; Slow took over slowDecision; Panics
	// panicked.
	Decisions, Slow, Panics int64
	MaxDecision             time.Duration
	// ControlSlow counts the control sampler's calls over slowDecision:
	// the machine's share of Slow.
	ControlSlow int64
	// CloseHung counts instances whose Close did not return in
	// Mode.CloseWait.
	CloseHung int
	// SDKGoroutinesLeft counts the SDK's goroutines still running 10 s
	// after every Close returned (those of hung instances included).
	SDKGoroutinesLeft int

	// Edits sent, acknowledged, and acknowledged but lost.
	EditsSent, EditsAcked, EditsLost int
	LostEdits                        []string

	// What the instances decided and what the store recorded for the
	// budget, once every instance was closed and every replica stopped.
	CountedRequests, RecordedRequests int64
	CountedSampled, RecordedSampled   int64
	// UsageDropped sums the replicas' controlplane_usage_dropped_total
	// just before they stop (a killed replica's count died with it).
	UsageDropped float64
	// Clamped sums their controlplane_report_traces_clamped_total: sampled
	// traces cut from reports as more than their client can have sampled.
	Clamped float64

	// Rates are the fleet's sampled traces per second in each window, as a
	// multiple of R; the fault covers windows [FaultFrom, FaultTo).
	Rates              []float64
	Baseline           int // first measured window (after the warm-up)
	FaultFrom, FaultTo int
	Window             time.Duration
	Tolerance          float64
	// Off is the first window off target from the fault's start, -1 if
	// none; Back is the window from which the rate was back on target
	// for good (see recovery), -1 if it did not come back.
	Off, Back int

	// Warnings counts the replicas' log lines at WARN or above.
	Warnings int
	Notes    []string
}

// runFault runs one fault from a fresh Redis to the last figure. bin is the
// controlplane binary. Only setup failures are errors; what the fault did
// is in the Result.
func runFault(ctx context.Context, tb testing.TB, m Mode, bin string, f fault) (res Result, err error) {
	res = Result{Fault: f.name, Instances: m.Instances, Window: m.Window, Tolerance: m.Tolerance, Off: -1, Back: -1}
	if f.todo != "" {
		res.NotRun = f.todo
		return res, nil
	}
	dir := tb.TempDir()
	e := &env{tb: tb, mode: m}
	e.startTopology(f)
	url := e.url
	if f.proxied {
		if e.proxy, err = newProxy(e.redis.Addr()); err != nil {
			return res, err
		}
		defer e.proxy.close()
		url = "redis://" + e.proxy.addr()
	}
	if err := seed(ctx, bin, dir, url, m); err != nil {
		return res, err
	}

	defer func() {
		for _, r := range e.replicas {
			r.stop()
		}
	}()
	var addrs []string
	for i := range m.Replicas {
		var r replica
		if f.skewed && i == 1 {
			r, err = startSkewedReplica(ctx, url, m.Interval)
		} else {
			r, err = startProcReplica(ctx, bin, dir, fmt.Sprintf("replica-%d", i), url, m.Interval)
		}
		if err != nil {
			return res, err
		}
		e.replicas = append(e.replicas, r)
		addrs = append(addrs, r.addr())
	}

	editConn, err := roundRobin(addrs)
	if err != nil {
		return res, err
	}
	defer editConn.Close()

	length := f.length(m)
	total := m.Warmup + m.Before + length + m.After
	sdkBefore := sdkGoroutines()
	// Ending a fault can take a while (a Sentinel or Cluster node rejoins):
	// windows for two minutes more than planned.
	fl, err := startFleet(m.Instances, m.Rates, addrs, f.how, m.Window, int((total+2*time.Minute)/m.Window))
	if err != nil {
		return res, err
	}
	ed := startEditor(pb.NewRuleServiceClient(editConn), m.EditEvery)
	stopped := false
	defer func() {
		if !stopped {
			ed.stop()
			fl.stopTraffic()
			fl.closeAll(m.CloseWait)
		}
	}()

	// The timeline, from the fleet's start.
	if err := sleepUntil(ctx, fl.start.Add(m.Warmup+m.Before)); err != nil {
		return res, err
	}
	faultAt := time.Now()
	end, err := f.inject(ctx, e)
	if err != nil {
		return res, fmt.Errorf("inject: %w", err)
	}
	if err := sleepUntil(ctx, faultAt.Add(length)); err != nil {
		return res, err
	}
	if end != nil {
		if err := end(ctx); err != nil {
			return res, fmt.Errorf("end the fault: %w", err)
		}
	}
	endAt := time.Now()
	if err := sleepUntil(ctx, endAt.Add(m.After)); err != nil {
		return res, err
	}
	runEnd := time.Now()

	// The end: traffic stops, every instance closes (sending its last
	// counts), edits are read back, replicas stop gracefully (sending the
	// spend they hold), then the store is read.
	stopped = true
	ed.stop()
	fl.stopTraffic()
	res.CloseHung = fl.closeAll(m.CloseWait)
	res.SDKGoroutinesLeft = sdkGoroutinesLeft(sdkBefore, 10*time.Second)
	res.Decisions, res.Slow, res.Panics = fl.decisions.Load(), fl.slow.Load(), fl.panics.Load()
	res.MaxDecision = time.Duration(fl.maxNs.Load())
	res.ControlSlow = fl.controlSlow.Load()
	res.CountedRequests, res.CountedSampled = fl.totals()

	ec, err := ed.verify(ctx)
	if err != nil {
		return res, err
	}
	res.EditsSent, res.EditsAcked, res.EditsLost, res.LostEdits = ec.sent, ec.acked, ec.lost, ec.lostOps

	for _, r := range e.replicas {
		res.UsageDropped += r.counter(droppedMetric)
		res.Clamped += r.counter(clampedMetric)
		r.stop()
		res.Warnings += r.warnings()
	}
	if res.RecordedRequests, res.RecordedSampled, err = recorded(ctx, e.url, fl.start, runEnd); err != nil {
		return res, err
	}

	res.Rates = make([]float64, min(int(runEnd.Sub(fl.start)/m.Window), len(fl.windows)))
	perWindow := float64(m.Reservoir) * m.Window.Seconds()
	for i := range res.Rates {
		res.Rates[i] = float64(fl.windows[i].Load()) / perWindow
	}
	res.Baseline = int(m.Warmup / m.Window)
	res.FaultFrom = int(faultAt.Sub(fl.start) / m.Window)
	res.FaultTo = int((endAt.Sub(fl.start) + m.Window - 1) / m.Window)
	res.Off, res.Back = recovery(res.Rates, res.FaultFrom, res.FaultTo, m.Tolerance)
	res.Notes = e.notes
	return res, nil
}

// seed creates the measured rule and the budget through the API of a
// replica started for that alone, then stops it: every replica of the run
// then starts with both loaded, and the budget counts the fleet's first
// report.
func seed(ctx context.Context, bin, dir, url string, m Mode) error {
	r, err := startProcReplica(ctx, bin, dir, "seed", url, m.Interval)
	if err != nil {
		return err
	}
	defer r.stop()
	conn, err := grpc.NewClient(r.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := pb.NewRuleServiceClient(conn).CreateRule(ctx, &pb.CreateRuleRequest{Rule: &pb.Rule{
		Name: measuredRule, Priority: 100, ReservoirSize: m.Reservoir, FixedRate: 0,
		ServiceName: service, UrlPath: "/api/*", Description: "the fault suite's measured rule",
	}}); err != nil {
		return fmt.Errorf("create the measured rule: %w", err)
	}
	// A cap far above what the run spends: the budget counts, it does not
	// bind.
	if _, err := pb.NewBudgetServiceClient(conn).CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{
		Name: budgetName, Scope: &pb.BudgetScope{ServiceNames: []string{service}},
		MonthlyAmountMicros: 1e15, Mode: pb.Budget_MODE_ENFORCE,
	}}); err != nil {
		return fmt.Errorf("create the budget: %w", err)
	}
	return nil
}

// roundRobin is a connection that spreads calls over every replica, as the
// editor's CLI behind a load balancer would.
func roundRobin(addrs []string) (*grpc.ClientConn, error) {
	r := manual.NewBuilderWithScheme("faults")
	var eps []resolver.Endpoint
	for _, a := range addrs {
		eps = append(eps, resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}})
	}
	r.InitialState(resolver.State{Endpoints: eps})
	return grpc.NewClient("faults:///replicas",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
}

// recorded reads the budget's recorded requests and sampled traces from the
// store at url, over every month the run touched.
func recorded(ctx context.Context, url string, from, to time.Time) (requests, sampled int64, err error) {
	client, err := redisstore.NewClient(url)
	if err != nil {
		return 0, 0, err
	}
	defer client.Close()
	st, err := redisstore.New(ctx, client, redisstore.Options{})
	if err != nil {
		return 0, 0, err
	}
	defer st.Close()
	for m := budget.MonthStart(from.UTC()); !m.After(to.UTC()); m = m.AddDate(0, 1, 0) {
		u, err := st.Usage(ctx, budgetName, m)
		if err != nil {
			return 0, 0, fmt.Errorf("read the budget's usage: %w", err)
		}
		for _, r := range u.Rules {
			requests += r.Requests
			sampled += r.Sampled
		}
	}
	return requests, sampled, nil
}

// recovery looks at the windows from from on (the fault covers [from,
// to)). off is the first window off target, -1 if none. A departure is two
// or more windows in a row off target: one alone happens by chance (see
// the baseline). back is the window after the last departure, from if
// there was none, -1 if the last one lasts to the end.
func recovery(rates []float64, from, to int, tol float64) (off, back int) {
	off, back = -1, from
	run := 0
	for i := from; i < len(rates); i++ {
		if onTarget(rates[i], tol) {
			run = 0
			continue
		}
		if off < 0 {
			off = i
		}
		if run++; run >= 2 {
			back = i + 1
		}
	}
	if back >= len(rates) {
		back = -1
	}
	return off, back
}

func onTarget(rate, tol float64) bool { return rate >= 1-tol && rate <= 1+tol }

func sleepUntil(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// buildControlplane builds cmd/controlplane once into dir, with the race
// detector if the suite runs with it.
func buildControlplane(ctx context.Context, dir string, race bool) (string, error) {
	bin := filepath.Join(dir, "controlplane")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "github.com/tracesampling/controlplane/cmd/controlplane")
	out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
}
