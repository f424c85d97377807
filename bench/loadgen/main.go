// Command loadgen drives a running control plane as a fleet of SDK instances
// would: N simulated instances (streams or unary calls), M rules, traffic
// skewed by a Zipf law across instances, and one rule edit in the middle of
// the run. It ends by printing one JSON object on its own line.
//
// Each simulated instance decides its requests as the Go SDK does, against
// Poisson arrivals at its own rate: from its reservoir quota with the SDK's
// token bucket, else the one trace a second it may borrow while it has no
// current quota, else by the trace ID at the fixed rate in force (the
// rule's, or the one its last target gave, which a budget may have
// lowered). So the fleet's reservoir-sampled traces per second can be
// compared with the rule's reservoir R, and the traces it sampled and
// reported — borrowed ones included — with what a budget counted: at the
// end every instance sends a last report, and --budget reads the budget's
// count before and after the run.
//
// With --xray and --xray-clients, X-Ray SDK instances join the fleet on the
// same rules (xray.go): they make the X-Ray SDKs' wire calls to serve's X-Ray
// API and decide as those SDKs do, so a fleet of X-Ray clients alone, or a
// mixed one sharing a reservoir with this project's SDK, can be measured the
// same way. With --server-pid, the server's CPU time per report is measured.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

type config struct {
	server      string
	httpAddr    string
	clients     int
	rules       int
	mode        string
	duration    time.Duration
	warmup      time.Duration
	interval    time.Duration
	closedLoop  bool
	numbered    bool
	conns       int
	fleetRPS    float64
	zipf        float64
	reservoir   int64
	tick        time.Duration
	prefixRules string
	fixedRate   float64
	edit        bool
	budget      string
	scaleFrom   int
	scaleAt     time.Duration

	xrayAddr          string
	xrayClients       int
	xrayRulesInterval time.Duration
	xrayCounting      string
	serverPID         int
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c config
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.server, "server", "127.0.0.1:7070", "gRPC address of the control plane; several, comma-separated, are replicas the connections are spread over in turn")
	fs.StringVar(&c.httpAddr, "http", "127.0.0.1:7071", "its HTTP address; with --debug-endpoints on the server, heap per stream is measured")
	fs.IntVar(&c.clients, "clients", 1000, "simulated SDK instances")
	fs.IntVar(&c.rules, "rules", 10, "rules created for the run (the first one's reservoir is measured)")
	fs.StringVar(&c.mode, "mode", "stream", "stream or unary")
	fs.DurationVar(&c.duration, "duration", 60*time.Second, "length of the measured run, warm-up included")
	fs.DurationVar(&c.warmup, "warmup", 25*time.Second, "time before reservoir windows count")
	fs.DurationVar(&c.interval, "interval", 0, "report interval; 0 = what the server asks for")
	fs.BoolVar(&c.closedLoop, "closed-loop", false, "report again as soon as targets arrive (throughput test) instead of once per interval")
	fs.BoolVar(&c.numbered, "numbered", false, "number the reports (Report.seq, from the start time in µs) as the SDK does: their usage then goes with each client's shard of a Redis Cluster, not each rule's, and their seqs are checked; a report whose answer is lost is not sent again")
	fs.IntVar(&c.conns, "conns", 0, "gRPC connections to spread instances over (0 = one per 100 instances)")
	fs.Float64Var(&c.fleetRPS, "fleet-rps", 20000, "simulated requests per second across the fleet, on the measured rule")
	fs.Float64Var(&c.zipf, "zipf", 1.1, "Zipf exponent of traffic across instances (0 = even)")
	fs.Int64Var(&c.reservoir, "reservoir", 100, "reservoir (traces/s, fleet-wide) of the measured rule")
	fs.DurationVar(&c.tick, "tick", 50*time.Millisecond, "simulation step of request arrivals")
	fs.StringVar(&c.prefixRules, "rule-prefix", "lg", "name prefix of the rules the run creates and removes")
	fs.Float64Var(&c.fixedRate, "fixed-rate", 0.01, "fixed rate of the rules the run creates; the edit half-way doubles the measured rule's")
	fs.BoolVar(&c.edit, "edit", true, "edit the measured rule half-way through the run, and measure how fast streams see it")
	fs.StringVar(&c.budget, "budget", "", "a budget that counts the measured rule's traces: its sampled traces are read before the run and after it (once the controller has decided again), for comparison with what the instances reported")
	fs.IntVar(&c.scaleFrom, "scale-from", 0, "scale-out: start this many instances, and the rest of --clients at once --scale-at later (0: all start together)")
	fs.DurationVar(&c.scaleAt, "scale-at", 30*time.Second, "with --scale-from, when the rest start, from the start of the first ones")
	fs.StringVar(&c.xrayAddr, "xray", "", "the X-Ray API's address (serve's --xray-addr), for --xray-clients; with --server empty, the run's rules are made and edited through it")
	fs.IntVar(&c.xrayClients, "xray-clients", 0, "simulated X-Ray SDK instances (centralized sampling over the X-Ray API), on the same rules as --clients")
	fs.DurationVar(&c.xrayRulesInterval, "xray-rules-interval", 5*time.Minute, "how often X-Ray instances fetch the rules unprompted (the SDKs' 5 minutes)")
	fs.StringVar(&c.xrayCounting, "xray-counting", countingSDK, "how X-Ray instances count borrowed traces: sdk (in BorrowCount only, as the AWS X-Ray SDKs for Go and Node.js do) or otel (in SampledCount too, as the OpenTelemetry X-Ray samplers do)")
	fs.IntVar(&c.serverPID, "server-pid", 0, "the server's process ID: its CPU time over the measured run is read from /proc and divided by the reports made then")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.scaleFrom < 0 || c.scaleFrom > c.clients {
		return fmt.Errorf("--scale-from: want 0 to --clients (%d), got %d", c.clients, c.scaleFrom)
	}
	if c.scaleFrom > 0 && (c.scaleAt <= 0 || c.scaleAt >= c.duration) {
		return fmt.Errorf("--scale-at: want a time within --duration (%v), got %v", c.duration, c.scaleAt)
	}
	if !(c.fixedRate >= 0 && c.fixedRate <= 1) {
		return fmt.Errorf("--fixed-rate: want a rate in [0, 1], got %g", c.fixedRate)
	}
	if c.mode != "stream" && c.mode != "unary" {
		return fmt.Errorf("--mode: want stream or unary, got %q", c.mode)
	}
	if c.xrayClients < 0 || c.clients < 0 {
		return errors.New("--clients, --xray-clients: want 0 or more")
	}
	if c.xrayCounting != countingSDK && c.xrayCounting != countingOTel {
		return fmt.Errorf("--xray-counting: want %s or %s, got %q", countingSDK, countingOTel, c.xrayCounting)
	}
	if c.xrayClients > 0 && c.xrayAddr == "" {
		return errors.New("--xray-clients: needs --xray")
	}
	if c.server == "" && (c.clients > 0 || c.budget != "" || c.xrayAddr == "") {
		return errors.New("--server: needed for --clients, --budget, and unless --xray makes the rules")
	}
	if c.conns <= 0 {
		c.conns = max(1, c.clients/100)
	}
	c.conns = max(c.conns, len(c.servers()))
	return newRun(c, stderr).do(ctx, stdout)
}

// Result is the JSON line the run ends with.
type Result struct {
	Clients           int      `json:"clients"`
	Mode              string   `json:"mode"`
	ClosedLoop        bool     `json:"closed_loop"`
	DurationSec       float64  `json:"duration_sec"`
	Reports           int64    `json:"reports"`
	ReportsPerSec     float64  `json:"reports_per_sec"`
	ReportP50ms       float64  `json:"report_p50_ms"`
	ReportP99ms       float64  `json:"report_p99_ms"`
	ReportErrors      int64    `json:"report_errors"`
	PropagationP50ms  *float64 `json:"propagation_p50_ms"`
	PropagationP99ms  *float64 `json:"propagation_p99_ms"`
	PropagationSeen   int      `json:"propagation_streams_seen"`
	Reservoir         int64    `json:"reservoir"`
	ReservoirWindows  int      `json:"reservoir_windows"`
	ReservoirMeanPerS float64  `json:"reservoir_mean_per_sec"`
	ReservoirErrorPct *float64 `json:"reservoir_error_pct"`
	// Windows are the measured rule's traces per second in each window of
	// one report interval after the warm-up, counted from the moment the
	// instances were started: all sampled ones (what a bill counts) and
	// those of the reservoir. SampledOverPct is the worst window's
	// sampled traces above R, in % of R (negative: every window under).
	Windows        []Window `json:"windows"`
	SampledOverPct *float64 `json:"sampled_over_pct"`
	// SampledBySecond are the measured rule's sampled traces in each
	// second since the instances started.
	SampledBySecond []int64 `json:"sampled_by_second"`
	// ReservoirBySecond, BorrowedBySecond and QuotaHeldBySecond split
	// them: the reservoir's and the borrowed traces of each second, and
	// the quotas (traces/s) the SDK instances held at its start.
	ReservoirBySecond  []int64   `json:"reservoir_by_second"`
	BorrowedBySecond   []int64   `json:"borrowed_by_second"`
	QuotaHeldBySecond  []float64 `json:"quota_held_by_second"`
	HeapBytesPerStream *float64  `json:"heap_bytes_per_stream"`
	// SimSteps are the simulation's steps played, of those the run had
	// time for, and SimLagMs the latest it started one (see simulate).
	SimSteps         int64   `json:"sim_steps"`
	SimStepsExpected int64   `json:"sim_steps_expected"`
	SimLagMs         float64 `json:"sim_lag_ms"`
	// RequestsAsked are the requests due on the measured rule: each
	// instance's rate over the time it held its rules, up to the last
	// step; DeliveredPct is Traces.Requests against them, in % (the
	// Poisson arrivals' chance apart, 100). RequestsBySecond are those
	// delivered in each second since the instances started.
	RequestsAsked    float64 `json:"requests_asked"`
	DeliveredPct     float64 `json:"requests_delivered_pct"`
	RequestsBySecond []int64 `json:"requests_by_second"`
	// RulesHeld is when the instances got their rules (when the fleet's
	// traffic began), and FixedRateCut when the SDK instances' fixed rate
	// in force was first lowered (a budget's cut reaching them), in ms
	// after they started.
	RulesHeld    *Instants `json:"rules_held_ms,omitempty"`
	FixedRateCut *Instants `json:"fixed_rate_cut_ms,omitempty"`
	// LaunchedUnix is when the instances started, in seconds since the
	// epoch (with RulesHeld, when the fleet's traffic began), and
	// StoppedUnix when its last requests were played.
	LaunchedUnix float64 `json:"launched_unix"`
	StoppedUnix  float64 `json:"stopped_unix"`

	// Traces are the measured rule's over the whole run, as the
	// instances decided them; SampledPerSec is their rate since the
	// instances started.
	Traces        Traces  `json:"traces"`
	SampledPerSec float64 `json:"sampled_per_sec"`
	// Reported is what the reports sent carried: after every instance's
	// last report (FlushFailed counts those that were not answered), all
	// of Traces.
	Reported    Reported `json:"traces_reported"`
	FlushFailed int      `json:"final_reports_failed"`
	// Unacknowledged counts, with --numbered, the instances whose last
	// report the server did not acknowledge (it does once the store has
	// recorded it), or that sent none.
	Unacknowledged *int `json:"numbered_unacknowledged,omitempty"`
	// FixedRateMin and Max are the fixed rates in force on the instances at
	// the end: the rule's, or lower where a budget enforces.
	FixedRateMin float64 `json:"fixed_rate_min"`
	FixedRateMax float64 `json:"fixed_rate_max"`
	// Budget is what --budget counted over the run.
	Budget *BudgetAudit `json:"budget,omitempty"`
	// XRay is the X-Ray instances' part (their traces are in Traces too).
	XRay *XRayResult `json:"xray,omitempty"`
	// ServerCPU is --server-pid's CPU time over the measured run, and per
	// report (gRPC and X-Ray) made then.
	ServerCPUSec       *float64 `json:"server_cpu_sec,omitempty"`
	ServerCPUPerReport *float64 `json:"server_cpu_us_per_report,omitempty"`
}

// Window is one window's traces per second of the measured rule: all
// sampled, those of the reservoir and those borrowed (the rest are the
// fixed rate's), and the quotas the SDK instances held, averaged over the
// window's seconds.
type Window struct {
	FromSec   int     `json:"from_sec"`
	Sampled   float64 `json:"sampled_per_sec"`
	Reservoir float64 `json:"reservoir_per_sec"`
	Borrowed  float64 `json:"borrowed_per_sec"`
	QuotaHeld float64 `json:"quota_held_per_sec"`
}

// Instants are when the instances did something, in ms after they started:
// the first, the last and the mean weighted by their rates (for the fleet's
// traffic, the instant that stands for all of them).
type Instants struct {
	First      float64 `json:"first"`
	RateWeight float64 `json:"rate_weighted_mean"`
	Last       float64 `json:"last"`
	Instances  int     `json:"instances"`
}

// Traces are requests and sampled traces of one rule, by how each was
// sampled.
type Traces struct {
	Requests  int64 `json:"requests"`
	Sampled   int64 `json:"sampled"`
	Reservoir int64 `json:"reservoir"`
	Borrowed  int64 `json:"borrowed"`
	FixedRate int64 `json:"fixed_rate"`
}

// Reported are the counts reports carry.
type Reported struct {
	Requests int64 `json:"requests"`
	Sampled  int64 `json:"sampled"`
	Borrowed int64 `json:"borrowed"`
}

// BudgetAudit compares a budget's count of sampled traces over the run with
// what the instances reported.
type BudgetAudit struct {
	Name          string  `json:"name"`
	SampledBefore int64   `json:"sampled_before"`
	SampledAfter  int64   `json:"sampled_after"`
	Counted       int64   `json:"counted"`  // after - before
	DiffPct       float64 `json:"diff_pct"` // counted against traces_reported.sampled
}

type loadRun struct {
	cfg  config
	log  io.Writer
	rc   pb.RuleServiceClient
	conn []*grpc.ClientConn

	start      time.Time
	reports    atomic.Int64
	errs       atomic.Int64
	latMu      sync.Mutex
	lat        []time.Duration
	perSec     []atomic.Int64 // reservoir samples of the measured rule, per second since launch
	sampledSec []atomic.Int64 // all its samples, per second since launch
	// borrowedSec and heldSec are simulate's: borrowed traces per second
	// since launch, and the quotas the SDK instances held at each
	// second's start (traces/s). Read them once it is done.
	borrowedSec []int64
	heldSec     []float64
	requestsSec []int64 // simulate's: the requests of each second since launch
	// played is when simulate played its last step (unix ns), and asked
	// the requests due up to then. Read them once it is done.
	played int64
	asked  float64
	// ticks are the steps simulate played, and lag its latest start of
	// one: a machine too busy to play every step samples less than the
	// fleet it stands for.
	ticks      int64
	lag        time.Duration
	editAt     atomic.Int64 // unix ns just before the rule edit was sent
	editVer    atomic.Int64
	propMu     sync.Mutex
	prop       []time.Duration
	intervalNs atomic.Int64
	measuring  atomic.Int64 // unix ns of the launch of the instances, from which seconds count; 0 before
	instances  []*instance
	fleet      fleetCounts   // simulate's
	flush      chan struct{} // closed at the end: every instance reports a last time

	http       *http.Client // the X-Ray instances'
	xinstances []*xrayInstance
	xfleet     fleetCounts // simulate's: the X-Ray instances' part of fleet
	xray       xrayStats
}

// servers are the addresses of --server.
func (c *config) servers() []string { return strings.Split(c.server, ",") }

func newRun(c config, log io.Writer) *loadRun {
	// Seconds count from the launch, a while before the run starts (once
	// the instances are connected): room for that.
	secs := int(c.duration/time.Second) + 120
	return &loadRun{cfg: c, log: log, perSec: make([]atomic.Int64, secs), sampledSec: make([]atomic.Int64, secs), flush: make(chan struct{}),
		borrowedSec: make([]int64, secs), heldSec: make([]float64, secs), requestsSec: make([]int64, secs),
		// One connection per X-Ray instance, kept alive, as separate
		// processes would hold.
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: max(2, c.xrayClients), MaxIdleConns: max(2, c.xrayClients)}}}
}

func (r *loadRun) logf(format string, args ...any) {
	fmt.Fprintf(r.log, "loadgen: "+format+"\n", args...)
}

func (r *loadRun) do(ctx context.Context, stdout io.Writer) error {
	defer r.http.CloseIdleConnections()
	servers := r.cfg.servers()
	for i := 0; r.cfg.server != "" && i < r.cfg.conns; i++ {
		conn, err := grpc.NewClient(servers[i%len(servers)], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		r.conn = append(r.conn, conn)
	}
	if len(r.conn) > 0 {
		r.rc = pb.NewRuleServiceClient(r.conn[0])
	}
	names, err := r.setupRules(ctx)
	if err != nil {
		return err
	}
	defer r.cleanupRules(names)
	res := Result{Clients: r.cfg.clients, Mode: r.cfg.mode, ClosedLoop: r.cfg.closedLoop, Reservoir: r.cfg.reservoir}
	var audit *BudgetAudit
	var auditFrom time.Time
	if r.cfg.budget != "" {
		st, err := pb.NewBudgetServiceClient(r.conn[0]).GetBudgetStatus(ctx, &pb.GetBudgetStatusRequest{Name: r.cfg.budget})
		if err != nil {
			return fmt.Errorf("--budget: %w", err)
		}
		audit = &BudgetAudit{Name: r.cfg.budget, SampledBefore: st.GetStatus().GetSampledTraces()}
		auditFrom = st.GetStatus().GetComputedTime().AsTime()
	}

	heapBefore, heapErr := r.heap(ctx)
	// A mixed fleet splits --fleet-rps between the kinds by their numbers
	// of instances.
	xshare := float64(r.cfg.xrayClients) / float64(max(1, r.cfg.clients+r.cfg.xrayClients))
	rates := zipfRates(r.cfg.clients, r.cfg.zipf, r.cfg.fleetRPS*(1-xshare))
	xrates := zipfRates(r.cfg.xrayClients, r.cfg.zipf, r.cfg.fleetRPS*xshare)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg, simWG sync.WaitGroup
	defer simWG.Wait()
	defer wg.Wait()
	defer cancel()
	ready := make(chan struct{}, r.cfg.clients+r.cfg.xrayClients)
	for i := 0; i < r.cfg.clients; i++ {
		inst := &instance{run: r, id: fmt.Sprintf("lg-%d-%d", os.Getpid(), i), rate: rates[i], rules: names, borrowRate: 1,
			client: pb.NewSamplingServiceClient(r.conn[i%len(r.conn)]), rng: rand.New(rand.NewPCG(uint64(i), 99))}
		inst.borrow.SetRate(time.Now().UnixNano(), 1, 0)
		if r.cfg.numbered {
			// As the SDK's: from the start time in µs, so that a
			// client_id used again keeps increasing.
			inst.seq.Store(uint64(time.Now().UnixMicro()))
		}
		r.instances = append(r.instances, inst)
	}
	launch := func(insts []*instance) {
		for _, inst := range insts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				inst.loop(runCtx, ready)
			}()
		}
	}
	first := r.cfg.clients
	if r.cfg.scaleFrom > 0 {
		first = r.cfg.scaleFrom
	}
	launched := time.Now()
	r.measuring.Store(launched.UnixNano())
	launch(r.instances[:first])
	for i := 0; i < r.cfg.xrayClients; i++ {
		x := newXRayInstance(r, i, xrates[i], names)
		r.xinstances = append(r.xinstances, x)
		wg.Add(1)
		go func() {
			defer wg.Done()
			x.loop(runCtx, ready)
		}()
	}
	simCtx, stopSim := context.WithCancel(runCtx)
	defer stopSim()
	simWG.Add(1)
	go func() {
		defer simWG.Done()
		r.simulate(simCtx)
	}()
	// Wait until every instance holds its rules (streams, X-Ray) or started.
	for i := 0; i < first+r.cfg.xrayClients; i++ {
		select {
		case <-ready:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.logf("%d instances and %d X-Ray instances connected %v after they started", first, r.cfg.xrayClients, time.Since(launched).Round(time.Millisecond))
	if r.cfg.mode == "stream" && first > 0 && heapErr == nil {
		if after, err := r.heap(ctx); err == nil {
			per := float64(after-heapBefore) / float64(first)
			res.HeapBytesPerStream = &per
		}
	}
	r.start = time.Now()
	r.reports.Store(0)
	r.latMu.Lock()
	r.lat = r.lat[:0]
	r.latMu.Unlock()
	cpuBefore, cpuErr := r.serverCPU()

	edit := time.NewTimer(r.cfg.duration / 2)
	end := time.NewTimer(r.cfg.duration)
	scale := make(<-chan time.Time)
	if r.cfg.scaleFrom > 0 {
		t := time.NewTimer(time.Until(launched.Add(r.cfg.scaleAt)))
		defer t.Stop()
		scale = t.C
	}
	for running := true; running; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-scale:
			launch(r.instances[first:])
			r.logf("scale-out: %d more instances started %v after the first", r.cfg.clients-first, time.Since(launched).Round(time.Millisecond))
		case <-edit.C:
			if !r.cfg.edit {
				break
			}
			if err := r.editRule(ctx, names[0]); err != nil {
				r.logf("rule edit failed: %v", err)
			}
		case <-end.C:
			running = false
		}
	}
	elapsed := time.Since(r.start)
	sinceLaunch := time.Since(launched)
	if cpuAfter, err := r.serverCPU(); err == nil && cpuErr == nil && r.cfg.serverPID > 0 {
		sec := (cpuAfter - cpuBefore).Seconds()
		res.ServerCPUSec = &sec
		if n := r.reports.Load() + r.xray.reports.Load(); n > 0 {
			per := sec * 1e6 / float64(n)
			res.ServerCPUPerReport = &per
		}
	} else if r.cfg.serverPID > 0 {
		r.logf("server CPU: %v", errors.Join(cpuErr, err))
	}
	// No more requests; then every instance reports what it counted since
	// its last report, so that what was reported is all that was sampled.
	stopSim()
	simWG.Wait()
	close(r.flush)
	flushed := make(chan struct{})
	go func() {
		wg.Wait()
		close(flushed)
	}()
	select {
	case <-flushed:
	case <-time.After(15 * time.Second):
		r.logf("final reports: not all answered within 15 s")
	case <-ctx.Done():
	}
	cancel()
	wg.Wait()
	r.tally(&res, sinceLaunch)
	res.SimSteps, res.SimLagMs = r.ticks, float64(r.lag.Microseconds())/1000
	res.SimStepsExpected = int64(sinceLaunch / r.cfg.tick)
	r.logf("simulation: %d steps of %d, started up to %.1f ms late", res.SimSteps, res.SimStepsExpected, res.SimLagMs)
	res.RequestsAsked = math.Round(r.asked)
	if r.asked > 0 {
		res.DeliveredPct = float64(res.Traces.Requests) / r.asked * 100
	}
	res.RulesHeld, res.FixedRateCut = r.instants(launched)
	res.LaunchedUnix, res.StoppedUnix = float64(launched.UnixNano())/1e9, float64(r.played)/1e9
	r.logf("requests: %d delivered of %.0f asked (%.2f %%)", res.Traces.Requests, r.asked, res.DeliveredPct)
	res.XRay = r.xrayResult()
	if audit != nil {
		if err := r.auditBudget(ctx, audit, auditFrom, res.Reported.Sampled); err != nil {
			r.logf("budget audit: %v", err)
		} else {
			res.Budget = audit
		}
	}

	res.DurationSec = elapsed.Seconds()
	res.Reports = r.reports.Load()
	res.ReportsPerSec = float64(res.Reports) / elapsed.Seconds()
	res.ReportErrors = r.errs.Load()
	r.latMu.Lock()
	res.ReportP50ms, res.ReportP99ms = percentileMs(r.lat, 0.5), percentileMs(r.lat, 0.99)
	r.latMu.Unlock()
	if r.cfg.mode == "stream" {
		r.propMu.Lock()
		res.PropagationSeen = len(r.prop)
		if len(r.prop) > 0 {
			p50, p99 := percentileMs(r.prop, 0.5), percentileMs(r.prop, 0.99)
			res.PropagationP50ms, res.PropagationP99ms = &p50, &p99
		}
		r.propMu.Unlock()
	}
	r.reservoirStats(&res, sinceLaunch)
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, string(b))
	return nil
}

// tally totals the instances' traces, reports and fixed rates.
func (r *loadRun) tally(res *Result, elapsed time.Duration) {
	res.Traces = r.fleet.traces()
	res.SampledPerSec = float64(r.fleet.sampledMeasured) / elapsed.Seconds()
	rep, failed, lo, hi := tallyMembers(r.instances)
	xrep, xfailed, xlo, xhi := tallyMembers(r.xinstances)
	res.Reported = Reported{Requests: rep.Requests + xrep.Requests, Sampled: rep.Sampled + xrep.Sampled, Borrowed: rep.Borrowed + xrep.Borrowed}
	res.FlushFailed = failed + xfailed
	if r.cfg.numbered {
		n := 0
		for _, in := range r.instances {
			if in.acked.Load() != in.seq.Load() {
				n++
			}
		}
		res.Unacknowledged = &n
	}
	switch {
	case len(r.xinstances) == 0:
		res.FixedRateMin, res.FixedRateMax = lo, hi
	case len(r.instances) == 0:
		res.FixedRateMin, res.FixedRateMax = xlo, xhi
	default:
		res.FixedRateMin, res.FixedRateMax = min(lo, xlo), max(hi, xhi)
	}
	r.logf("traces: %d requests, %d sampled (%d reservoir, %d borrowed, %d fixed rate); reported %d sampled, %d borrowed; fixed rate in force %.4g-%.4g",
		res.Traces.Requests, res.Traces.Sampled, res.Traces.Reservoir, res.Traces.Borrowed, res.Traces.FixedRate,
		res.Reported.Sampled, res.Reported.Borrowed, res.FixedRateMin, res.FixedRateMax)
}

// auditBudget reads the budget's sampled traces once the controller has
// decided after the run (it counts what the store holds at its tick), and
// compares what it counted with what the instances reported.
func (r *loadRun) auditBudget(ctx context.Context, a *BudgetAudit, before time.Time, reported int64) error {
	bc := pb.NewBudgetServiceClient(r.conn[0])
	end := time.Now()
	deadline := end.Add(3*r.reportInterval() + 10*time.Second)
	for {
		st, err := bc.GetBudgetStatus(ctx, &pb.GetBudgetStatusRequest{Name: a.Name})
		if err != nil {
			return err
		}
		if at := st.GetStatus().GetComputedTime().AsTime(); at.After(end) && at.After(before) {
			a.SampledAfter = st.GetStatus().GetSampledTraces()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("budget %s: the controller did not decide again by %v", a.Name, deadline.Format(time.TimeOnly))
		}
		sleep(ctx, time.Second)
	}
	a.Counted = a.SampledAfter - a.SampledBefore
	if reported > 0 {
		a.DiffPct = float64(a.Counted-reported) / float64(reported) * 100
	}
	r.logf("budget %s counted %d sampled traces over the run; the instances reported %d (%+.2f %%)", a.Name, a.Counted, reported, a.DiffPct)
	return nil
}

// reservoirStats compares the fleet's reservoir-sampled traces per second,
// and all it sampled, with R over windows one report interval long, after
// the warm-up; seconds count from the instances' launch, and sinceLaunch
// is how long ago that was.
func (r *loadRun) reservoirStats(res *Result, sinceLaunch time.Duration) {
	window := max(1, int(r.reportInterval()/time.Second))
	first := int(r.cfg.warmup / time.Second)
	last := min(int(sinceLaunch/time.Second), len(r.perSec))
	R := float64(r.cfg.reservoir)
	var worst, total float64
	over := math.Inf(-1)
	for w := first; w+window <= last; w += window {
		var sum, all, borrowed int64
		var held float64
		for s := w; s < w+window; s++ {
			sum += r.perSec[s].Load()
			all += r.sampledSec[s].Load()
			borrowed += r.borrowedSec[s]
			held += r.heldSec[s]
		}
		n := float64(window)
		win := Window{FromSec: w, Reservoir: float64(sum) / n, Sampled: float64(all) / n, Borrowed: float64(borrowed) / n, QuotaHeld: math.Round(held/n*10) / 10}
		r.logf("window %ds-%ds: %.1f traces/s sampled, %.1f from the reservoir, %.1f borrowed; quotas held %.1f/s", w, w+window, win.Sampled, win.Reservoir, win.Borrowed, win.QuotaHeld)
		res.Windows = append(res.Windows, win)
		total += win.Reservoir
		worst = math.Max(worst, math.Abs(win.Reservoir-R)/R*100)
		over = math.Max(over, (win.Sampled-R)/R*100)
	}
	for s := 0; s < last; s++ {
		res.SampledBySecond = append(res.SampledBySecond, r.sampledSec[s].Load())
		res.ReservoirBySecond = append(res.ReservoirBySecond, r.perSec[s].Load())
		res.BorrowedBySecond = append(res.BorrowedBySecond, r.borrowedSec[s])
		res.QuotaHeldBySecond = append(res.QuotaHeldBySecond, math.Round(r.heldSec[s]*10)/10)
		res.RequestsBySecond = append(res.RequestsBySecond, r.requestsSec[s])
	}
	res.ReservoirWindows = len(res.Windows)
	if n := len(res.Windows); n > 0 {
		res.ReservoirMeanPerS = total / float64(n)
		if R > 0 { // no error against a reservoir of 0
			res.ReservoirErrorPct, res.SampledOverPct = &worst, &over
		}
	}
}

// instants are when the instances of either kind got their rules, and
// when the SDK instances' fixed rate was first cut, after launched; nil
// where none did.
func (r *loadRun) instants(launched time.Time) (held, cut *Instants) {
	ms := r.members()
	held = instantsOf(launched, ms, member.heldSince)
	cut = instantsOf(launched, ms[:len(r.instances)], func(m member) int64 { return m.(*instance).cutAt.Load() })
	return held, cut
}

// members are the instances of both kinds, the SDK's first.
func (r *loadRun) members() []member {
	ms := make([]member, 0, len(r.instances)+len(r.xinstances))
	for _, in := range r.instances {
		ms = append(ms, in)
	}
	for _, x := range r.xinstances {
		ms = append(ms, x)
	}
	return ms
}

// instantsOf are the members' instants at (unix ns; 0: none) after
// launched; nil if none has one.
func instantsOf(launched time.Time, ms []member, at func(member) int64) *Instants {
	h := Instants{First: math.Inf(1), Last: math.Inf(-1)}
	var weighted, rates float64
	for _, m := range ms {
		ns := at(m)
		if ns == 0 {
			continue
		}
		t := float64(ns-launched.UnixNano()) / float64(time.Millisecond)
		h.First, h.Last = min(h.First, t), max(h.Last, t)
		weighted += t * m.load()
		rates += m.load()
		h.Instances++
	}
	if h.Instances == 0 {
		return nil
	}
	if rates > 0 {
		h.RateWeight = math.Round(weighted/rates*10) / 10
	}
	h.First, h.Last = math.Round(h.First*10)/10, math.Round(h.Last*10)/10
	return &h
}

func (r *loadRun) setupRules(ctx context.Context) ([]string, error) {
	var names []string
	for i := 0; i < r.cfg.rules; i++ {
		name := fmt.Sprintf("%s-%02d", r.cfg.prefixRules, i)
		rule := &pb.Rule{Name: name, Priority: int32(100 + i), ServiceName: "loadgen", UrlPath: fmt.Sprintf("/r%d/*", i), FixedRate: r.cfg.fixedRate, ReservoirSize: r.cfg.reservoir}
		if i == 0 {
			rule.UrlPath = "*"
			rule.Priority = 99
		}
		if r.rc == nil {
			_ = r.xrayCall(ctx, "/DeleteSamplingRule", map[string]string{"RuleName": name}, nil) // absent is fine
			err := r.xrayCall(ctx, "/CreateSamplingRule", map[string]any{"SamplingRule": r.xrayRuleFor(name, rule.Priority, rule.UrlPath)}, nil)
			if err != nil {
				return nil, fmt.Errorf("create rule %s: %w", name, err)
			}
			names = append(names, name)
			continue
		}
		_, err := r.rc.DeleteRule(ctx, &pb.DeleteRuleRequest{Name: name})
		_ = err // absent is fine
		if _, err := r.rc.CreateRule(ctx, &pb.CreateRuleRequest{Rule: rule}); err != nil {
			return nil, fmt.Errorf("create rule %s: %w", name, err)
		}
		names = append(names, name)
	}
	return names, nil
}

func (r *loadRun) cleanupRules(names []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range names {
		if r.rc == nil {
			_ = r.xrayCall(ctx, "/DeleteSamplingRule", map[string]string{"RuleName": n}, nil)
			continue
		}
		_, _ = r.rc.DeleteRule(ctx, &pb.DeleteRuleRequest{Name: n})
	}
}

// editRule changes the measured rule's fixed rate. Streams record when they
// see the version it makes, which is the current one plus one as long as
// nobody else edits rules during the run.
func (r *loadRun) editRule(ctx context.Context, name string) error {
	if r.rc == nil {
		r.editAt.Store(time.Now().UnixNano())
		return r.xrayCall(ctx, "/UpdateSamplingRule", map[string]any{"SamplingRuleUpdate": map[string]any{"RuleName": name, "FixedRate": r.editedRate()}}, nil)
	}
	cur, err := r.rc.ListRules(ctx, &pb.ListRulesRequest{PageSize: 1})
	if err != nil {
		return err
	}
	r.editVer.Store(cur.GetRulesVersion() + 1)
	r.editAt.Store(time.Now().UnixNano())
	rate := r.editedRate()
	if _, err := r.rc.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: name, FixedRate: rate}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"fixed_rate"}}}); err != nil {
		return err
	}
	r.logf("edited rule %s: rules version %d", name, cur.GetRulesVersion()+1)
	return nil
}

// editedRate is the measured rule's fixed rate after the edit.
func (r *loadRun) editedRate() float64 { return min(1, 2*r.cfg.fixedRate) }

// serverCPU reads --server-pid's user and system CPU time from /proc (in
// the kernel's USER_HZ ticks, 100 a second on Linux).
func (r *loadRun) serverCPU() (time.Duration, error) {
	if r.cfg.serverPID <= 0 {
		return 0, nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", r.cfg.serverPID))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing one. utime and stime are fields 14 and 15.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected %q", r.cfg.serverPID, b)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", r.cfg.serverPID, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / 100), nil
}

// heap reads the server's live heap after a GC from its pprof endpoint.
func (r *loadRun) heap(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.cfg.httpAddr+"/debug/pprof/heap?gc=1&debug=1", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("heap profile: %s (start the server with --debug-endpoints)", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapAlloc = "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("no HeapAlloc in the heap profile")
}

func zipfRates(n int, s, total float64) []float64 {
	w := make([]float64, n)
	var sum float64
	for i := range w {
		w[i] = 1 / math.Pow(float64(i+1), s)
		sum += w[i]
	}
	for i := range w {
		w[i] *= total / sum
	}
	rand.New(rand.NewPCG(5, 5)).Shuffle(n, func(i, j int) { w[i], w[j] = w[j], w[i] })
	return w
}

func percentileMs(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[min(len(s)-1, int(q*float64(len(s))))]) / float64(time.Millisecond)
}
