// Command loadgen drives a running control plane as a fleet of SDK instances
// would: N simulated instances (streams or unary calls), M rules, traffic
// skewed by a Zipf law across instances, and one rule edit in the middle of
// the run. It ends by printing one JSON object on its own line.
//
// Each simulated instance spends the quota it is given from the same token
// bucket the Go SDK uses, against Poisson request arrivals at its own rate,
// so the fleet's reservoir-sampled traces per second can be compared with the
// rule's reservoir R.
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
	conns       int
	fleetRPS    float64
	zipf        float64
	reservoir   int64
	tick        time.Duration
	prefixRules string
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
	fs.StringVar(&c.server, "server", "127.0.0.1:7070", "gRPC address of the control plane")
	fs.StringVar(&c.httpAddr, "http", "127.0.0.1:7071", "its HTTP address; with --debug-endpoints on the server, heap per stream is measured")
	fs.IntVar(&c.clients, "clients", 1000, "simulated SDK instances")
	fs.IntVar(&c.rules, "rules", 10, "rules created for the run (the first one's reservoir is measured)")
	fs.StringVar(&c.mode, "mode", "stream", "stream or unary")
	fs.DurationVar(&c.duration, "duration", 60*time.Second, "length of the measured run, warm-up included")
	fs.DurationVar(&c.warmup, "warmup", 25*time.Second, "time before reservoir windows count")
	fs.DurationVar(&c.interval, "interval", 0, "report interval; 0 = what the server asks for")
	fs.BoolVar(&c.closedLoop, "closed-loop", false, "report again as soon as targets arrive (throughput test) instead of once per interval")
	fs.IntVar(&c.conns, "conns", 0, "gRPC connections to spread instances over (0 = one per 100 instances)")
	fs.Float64Var(&c.fleetRPS, "fleet-rps", 20000, "simulated requests per second across the fleet, on the measured rule")
	fs.Float64Var(&c.zipf, "zipf", 1.1, "Zipf exponent of traffic across instances (0 = even)")
	fs.Int64Var(&c.reservoir, "reservoir", 100, "reservoir (traces/s, fleet-wide) of the measured rule")
	fs.DurationVar(&c.tick, "tick", 50*time.Millisecond, "simulation step of request arrivals")
	fs.StringVar(&c.prefixRules, "rule-prefix", "lg", "name prefix of the rules the run creates and removes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.mode != "stream" && c.mode != "unary" {
		return fmt.Errorf("--mode: want stream or unary, got %q", c.mode)
	}
	if c.conns <= 0 {
		c.conns = max(1, c.clients/100)
	}
	return newRun(c, stderr).do(ctx, stdout)
}

// Result is the JSON line the run ends with.
type Result struct {
	Clients            int      `json:"clients"`
	Mode               string   `json:"mode"`
	ClosedLoop         bool     `json:"closed_loop"`
	DurationSec        float64  `json:"duration_sec"`
	Reports            int64    `json:"reports"`
	ReportsPerSec      float64  `json:"reports_per_sec"`
	ReportP50ms        float64  `json:"report_p50_ms"`
	ReportP99ms        float64  `json:"report_p99_ms"`
	ReportErrors       int64    `json:"report_errors"`
	PropagationP50ms   *float64 `json:"propagation_p50_ms"`
	PropagationP99ms   *float64 `json:"propagation_p99_ms"`
	PropagationSeen    int      `json:"propagation_streams_seen"`
	Reservoir          int64    `json:"reservoir"`
	ReservoirWindows   int      `json:"reservoir_windows"`
	ReservoirMeanPerS  float64  `json:"reservoir_mean_per_sec"`
	ReservoirErrorPct  *float64 `json:"reservoir_error_pct"`
	HeapBytesPerStream *float64 `json:"heap_bytes_per_stream"`
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
	perSec     []atomic.Int64 // reservoir samples of the measured rule, per second of the run
	editAt     atomic.Int64   // unix ns just before the rule edit was sent
	editVer    atomic.Int64
	propMu     sync.Mutex
	prop       []time.Duration
	intervalNs atomic.Int64
	measuring  atomic.Int64 // unix ns of the start of measurement; 0 before
	instances  []*instance
}

func newRun(c config, log io.Writer) *loadRun {
	return &loadRun{cfg: c, log: log, perSec: make([]atomic.Int64, int(c.duration/time.Second)+2)}
}

func (r *loadRun) logf(format string, args ...any) {
	fmt.Fprintf(r.log, "loadgen: "+format+"\n", args...)
}

func (r *loadRun) do(ctx context.Context, stdout io.Writer) error {
	for i := 0; i < r.cfg.conns; i++ {
		conn, err := grpc.NewClient(r.cfg.server, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		r.conn = append(r.conn, conn)
	}
	r.rc = pb.NewRuleServiceClient(r.conn[0])
	names, err := r.setupRules(ctx)
	if err != nil {
		return err
	}
	defer r.cleanupRules(names)
	res := Result{Clients: r.cfg.clients, Mode: r.cfg.mode, ClosedLoop: r.cfg.closedLoop, Reservoir: r.cfg.reservoir}

	heapBefore, heapErr := r.heap(ctx)
	rates := zipfRates(r.cfg.clients, r.cfg.zipf, r.cfg.fleetRPS)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	ready := make(chan struct{}, r.cfg.clients)
	for i := 0; i < r.cfg.clients; i++ {
		inst := &instance{run: r, id: fmt.Sprintf("lg-%d-%d", os.Getpid(), i), rate: rates[i], rules: names,
			client: pb.NewSamplingServiceClient(r.conn[i%len(r.conn)]), rng: rand.New(rand.NewPCG(uint64(i), 99))}
		r.instances = append(r.instances, inst)
		wg.Add(1)
		go func() {
			defer wg.Done()
			inst.loop(runCtx, ready)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.simulate(runCtx)
	}()
	// Wait until every instance holds its rules (streams) or started.
	for i := 0; i < r.cfg.clients; i++ {
		select {
		case <-ready:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.logf("%d instances connected", r.cfg.clients)
	if r.cfg.mode == "stream" && heapErr == nil {
		if after, err := r.heap(ctx); err == nil {
			per := float64(after-heapBefore) / float64(r.cfg.clients)
			res.HeapBytesPerStream = &per
		}
	}
	r.start = time.Now()
	r.reports.Store(0)
	r.latMu.Lock()
	r.lat = r.lat[:0]
	r.latMu.Unlock()
	r.measuring.Store(r.start.UnixNano())

	edit := time.NewTimer(r.cfg.duration / 2)
	end := time.NewTimer(r.cfg.duration)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-edit.C:
		if err := r.editRule(ctx, names[0]); err != nil {
			r.logf("rule edit failed: %v", err)
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-end.C:
	}
	elapsed := time.Since(r.start)
	cancel()
	wg.Wait()

	res.DurationSec = elapsed.Seconds()
	res.Reports = r.reports.Load()
	res.ReportsPerSec = float64(res.Reports) / elapsed.Seconds()
	res.ReportErrors = r.errs.Load()
	res.ReportP50ms, res.ReportP99ms = percentileMs(r.lat, 0.5), percentileMs(r.lat, 0.99)
	if r.cfg.mode == "stream" {
		r.propMu.Lock()
		res.PropagationSeen = len(r.prop)
		if len(r.prop) > 0 {
			p50, p99 := percentileMs(r.prop, 0.5), percentileMs(r.prop, 0.99)
			res.PropagationP50ms, res.PropagationP99ms = &p50, &p99
		}
		r.propMu.Unlock()
	}
	r.reservoirStats(&res, elapsed)
	b, _ := json.Marshal(res)
	fmt.Fprintln(stdout, string(b))
	return nil
}

// reservoirStats compares the fleet's reservoir-sampled traces per second
// with R over windows one report interval long, after the warm-up.
func (r *loadRun) reservoirStats(res *Result, elapsed time.Duration) {
	window := max(1, int(r.reportInterval()/time.Second))
	first := int(r.cfg.warmup / time.Second)
	last := int(elapsed / time.Second)
	var worst, total float64
	var n int
	for w := first; w+window <= last; w += window {
		var sum int64
		for s := w; s < w+window; s++ {
			sum += r.perSec[s].Load()
		}
		rate := float64(sum) / float64(window)
		r.logf("reservoir window %ds-%ds: %.1f traces/s", w, w+window, rate)
		total += rate
		n++
		worst = math.Max(worst, math.Abs(rate-float64(r.cfg.reservoir))/float64(r.cfg.reservoir)*100)
	}
	res.ReservoirWindows = n
	if n > 0 {
		res.ReservoirMeanPerS = total / float64(n)
		res.ReservoirErrorPct = &worst
	}
}

func (r *loadRun) setupRules(ctx context.Context) ([]string, error) {
	var names []string
	for i := 0; i < r.cfg.rules; i++ {
		name := fmt.Sprintf("%s-%02d", r.cfg.prefixRules, i)
		rule := &pb.Rule{Name: name, Priority: int32(100 + i), ServiceName: "loadgen", UrlPath: fmt.Sprintf("/r%d/*", i), FixedRate: 0.01, ReservoirSize: r.cfg.reservoir}
		if i == 0 {
			rule.UrlPath = "*"
			rule.Priority = 99
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
		_, _ = r.rc.DeleteRule(ctx, &pb.DeleteRuleRequest{Name: n})
	}
}

// editRule changes the measured rule's fixed rate. Streams record when they
// see the version it makes, which is the current one plus one as long as
// nobody else edits rules during the run.
func (r *loadRun) editRule(ctx context.Context, name string) error {
	cur, err := r.rc.ListRules(ctx, &pb.ListRulesRequest{PageSize: 1})
	if err != nil {
		return err
	}
	r.editVer.Store(cur.GetRulesVersion() + 1)
	r.editAt.Store(time.Now().UnixNano())
	if _, err := r.rc.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: name, FixedRate: 0.02}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"fixed_rate"}}}); err != nil {
		return err
	}
	r.logf("edited rule %s: rules version %d", name, cur.GetRulesVersion()+1)
	return nil
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
