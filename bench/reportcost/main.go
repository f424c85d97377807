// Command reportcost measures what one SDK report costs the control plane
// in CPU time, beside the floor that any gRPC server pays for the same
// messages: a bare grpc-go server (the echo) that answers each report on the
// same streaming call with a TargetSet of the same shape.
//
// It starts the echo and `controlplane serve` (on the embedded store and,
// given --redis-url, on Redis) as processes of their own, runs the same
// closed-loop streams against each in turn, and reads each server's CPU time
// (user and system, from /proc/<pid>/stat) before and after a measured
// window: CPU microseconds per report, not throughput, so that the figure
// does not depend on how much CPU the machine had to spare. The ratio to the
// echo, taken within each round, is what moves least with the machine and
// its neighbours. It ends by printing a table and one JSON object on its
// own line.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if os.Getenv(echoEnv) != "" {
		err = serveEcho(ctx, os.Stdout)
	} else {
		err = run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "reportcost:", err)
		os.Exit(1)
	}
}

type config struct {
	controlplane string
	redisURL     string
	rules        int
	rounds       int
	bracket      bool
	profileDir   string
	load         loadOptions
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c config
	var short bool
	fs := flag.NewFlagSet("reportcost", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.controlplane, "controlplane", "", "path of the controlplane binary to measure (required); several, comma-separated, are measured side by side (before and after a change)")
	fs.StringVar(&c.redisURL, "redis-url", "", "also measure the control plane on this Redis (its keys under a prefix of the run's own); empty: the embedded store only")
	fs.IntVar(&c.load.streams, "streams", 200, "closed-loop SDK streams")
	fs.IntVar(&c.load.conns, "conns", 0, "gRPC connections the streams share (0: one per 100 streams)")
	fs.IntVar(&c.rules, "rules", 1, "rules (statistics documents) per report")
	fs.DurationVar(&c.load.warmup, "warmup", 3*time.Second, "load before each measured window")
	fs.DurationVar(&c.load.measure, "measure", 10*time.Second, "length of each measured window")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds; each measures every server once, in a rotating order")
	fs.BoolVar(&c.bracket, "bracket", false, "measure the echo before the first server and after each one, and take each server's ratio over the two echo windows beside its own (on a host whose neighbours' load moves from one window to the next)")
	fs.StringVar(&c.profileDir, "profile", "", "after the rounds, take a CPU profile and then an allocation profile of each server, each over one more window, into this directory (<server>.pprof, <server>.allocs.pprof)")
	fs.BoolVar(&short, "short", false, "a bounded run for CI: 20 streams, 0.5 s warm-up, 1 s windows, 1 round (flags given explicitly win)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if short {
		given := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		for name, v := range map[string]string{"streams": "20", "warmup": "500ms", "measure": "1s", "rounds": "1"} {
			if !given[name] {
				_ = fs.Set(name, v)
			}
		}
	}
	switch {
	case c.controlplane == "":
		return errNoBinary
	case c.load.streams < 1 || c.rules < 1 || c.rounds < 1 || c.load.measure <= 0 || c.load.warmup < 0:
		return fmt.Errorf("--streams, --rules and --rounds must be at least 1, --measure positive")
	}
	if c.load.conns <= 0 {
		c.load.conns = max(1, c.load.streams/100)
	}
	// The servers' logs and the driver's come from several goroutines.
	stderr = &lockedWriter{w: stderr}
	targets, stop, err := startTargets(ctx, c, stderr)
	if err != nil {
		return err
	}
	defer stop()

	res := Result{Streams: c.load.streams, Rules: c.rules, Conns: c.load.conns, MeasureSec: c.load.measure.Seconds(), Rounds: c.rounds, Bracket: c.bracket}
	measure := func(round int, t target) (*Measurement, error) {
		w, err := load(ctx, t, c.load, nil)
		if err != nil {
			return nil, fmt.Errorf("round %d, %s: %w", round, t.name, err)
		}
		m := measurement(round, t.name, w)
		fmt.Fprintf(stderr, "reportcost: round %d %-20s %8.0f reports/s, server %.2f cores, %6.2f µs CPU/report (driver %.2f µs)\n",
			m.Round, m.Server, m.ReportsPerSec, m.ServerCores, m.ServerCPUus, m.DriverCPUus)
		res.Measurements = append(res.Measurements, m)
		return &res.Measurements[len(res.Measurements)-1], nil
	}
	one := 1.0
	for round := range c.rounds {
		if c.bracket {
			// Echo, a server, echo, the next server, …: each server's
			// ratio is over the mean of the echo windows on either side
			// of its own, seconds away rather than a round away.
			e, err := measure(round+1, targets[0])
			if err != nil {
				return err
			}
			e.RatioToEcho = &one
			before := e.ServerCPUus
			for k := range len(targets) - 1 {
				t := targets[1+(round+k)%(len(targets)-1)]
				m, err := measure(round+1, t)
				if err != nil {
					return err
				}
				cpu := m.ServerCPUus
				e, err := measure(round+1, targets[0])
				if err != nil {
					return err
				}
				e.RatioToEcho = &one
				r := cpu / ((before + e.ServerCPUus) / 2)
				res.Measurements[len(res.Measurements)-2].RatioToEcho = &r
				before = e.ServerCPUus
			}
			continue
		}
		echoCPU := 0.0
		for k := range targets {
			t := targets[(round+k)%len(targets)]
			m, err := measure(round+1, t)
			if err != nil {
				return err
			}
			if t.name == "echo" {
				echoCPU = m.ServerCPUus
			}
		}
		// The ratios of the round, once the echo's figure is known.
		for i := range res.Measurements {
			m := &res.Measurements[i]
			if m.Round == round+1 && echoCPU > 0 {
				r := m.ServerCPUus / echoCPU
				m.RatioToEcho = &r
			}
		}
	}
	if c.profileDir != "" {
		if err := profile(ctx, c, targets, stderr); err != nil {
			return err
		}
	}
	res.summarize(targets)
	res.print(stdout)
	b, _ := json.Marshal(res)
	fmt.Fprintln(stdout, string(b))
	return nil
}

// startTargets starts the echo and the control planes, and creates the
// rules the reports name on the control planes.
func startTargets(ctx context.Context, c config, log io.Writer) (_ []target, _ func(), err error) {
	var procs []*child
	var cleanups []func()
	stop := func() {
		for _, f := range slices.Backward(cleanups) {
			f()
		}
		for _, p := range procs {
			p.stop()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	echo, err := startEcho(ctx, log)
	if err != nil {
		return nil, nil, err
	}
	procs = append(procs, echo)
	var names []string
	for i := range c.rules {
		names = append(names, fmt.Sprintf("rc-%02d", i))
	}
	targets := []target{{name: "echo", proc: echo, rules: names}}
	type kind struct{ name, bin, url, prefix string }
	var kinds []kind
	bins := strings.Split(c.controlplane, ",")
	for i, bin := range bins {
		suffix := ""
		if len(bins) > 1 {
			suffix = "/" + filepath.Base(bin)
		}
		kinds = append(kinds, kind{"embedded" + suffix, bin, "", ""})
		if c.redisURL != "" {
			kinds = append(kinds, kind{"redis" + suffix, bin, c.redisURL, fmt.Sprintf("reportcost%d-%d", os.Getpid(), i)})
		}
	}
	for _, k := range kinds {
		p, err := startControlplane(ctx, k.name, k.bin, k.url, k.prefix, log)
		if err != nil {
			return nil, nil, err
		}
		procs = append(procs, p)
		t := target{name: k.name, proc: p, rules: names}
		if k.url != "" {
			opts, err := redis.ParseURL(k.url)
			if err != nil {
				return nil, nil, fmt.Errorf("--redis-url: %w", err)
			}
			t.redis = redis.NewClient(opts)
			cleanups = append(cleanups, func() { t.redis.Close() })
		}
		remove, err := createRules(ctx, p.grpcAddr, names)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", k.name, err)
		}
		cleanups = append(cleanups, remove)
		targets = append(targets, t)
	}
	return targets, stop, nil
}

// createRules creates the rules the reports name, and returns a function
// that removes them.
func createRules(ctx context.Context, addr string, names []string) (func(), error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	rc := pb.NewRuleServiceClient(conn)
	remove := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, n := range names {
			_, _ = rc.DeleteRule(ctx, &pb.DeleteRuleRequest{Name: n})
		}
		conn.Close()
	}
	for i, n := range names {
		r := &pb.Rule{Name: n, Priority: int32(100 + i), ServiceName: "reportcost", UrlPath: fmt.Sprintf("/r%d/*", i), FixedRate: 0.01, ReservoirSize: 100}
		if _, err := rc.CreateRule(ctx, &pb.CreateRuleRequest{Rule: r}); err != nil {
			remove()
			return nil, fmt.Errorf("create rule %s: %w", n, err)
		}
	}
	return remove, nil
}

// profile takes a CPU profile of each server over one more window, then a
// profile of what it allocates over another.
func profile(ctx context.Context, c config, targets []target, log io.Writer) error {
	if err := os.MkdirAll(c.profileDir, 0o755); err != nil {
		return err
	}
	secs := max(1, int(c.load.measure.Round(time.Second)/time.Second))
	for _, t := range targets {
		for _, p := range []struct{ kind, file, url string }{
			{"CPU", t.name + ".pprof", fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs)},
			{"allocation", t.name + ".allocs.pprof", fmt.Sprintf("/debug/pprof/allocs?seconds=%d", secs)},
		} {
			path := filepath.Join(c.profileDir, strings.ReplaceAll(p.file, "/", "-"))
			_, err := load(ctx, t, c.load, func(ctx context.Context) error {
				return fetch(ctx, "http://"+t.proc.httpAddr+p.url, path)
			})
			if err != nil {
				return fmt.Errorf("%s profile of %s: %w", p.kind, t.name, err)
			}
			fmt.Fprintf(log, "reportcost: %s: %s profile in %s (go tool pprof -top %s)\n", t.name, p.kind, path, path)
		}
	}
	return nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func fetch(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
