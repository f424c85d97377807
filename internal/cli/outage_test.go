package cli

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/redistest"
)

// outageLoad is a crowd of SDK-like clients of one replica: streams that
// report every few milliseconds and unary reporters, counting what failed.
type outageLoad struct {
	unaryFailed atomic.Int64 // UNAVAILABLE answers
	unaryOK     atomic.Int64
	reports     atomic.Int64 // stream reports sent
	cancel      context.CancelFunc
	wg          sync.WaitGroup
}

func startOutageLoad(t *testing.T, s *serving, streams, unary int) *outageLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &outageLoad{cancel: cancel}
	t.Cleanup(l.stop)
	report := func() []*pb.SamplingStatistics {
		return []*pb.SamplingStatistics{{RuleName: "Default", RequestCount: 10, SampledCount: 1, Interval: durationpb.New(time.Second)}}
	}
	for i := range streams {
		stream, err := s.sampling.StreamSampling(ctx)
		if err != nil {
			t.Fatal(err)
		}
		hello := &pb.Hello{ClientId: "stream-" + strconv.Itoa(i), ServiceName: "shop"}
		if err := stream.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: hello}}); err != nil {
			t.Fatal(err)
		}
		l.wg.Go(func() {
			for {
				if _, err := stream.Recv(); err != nil {
					return
				}
			}
		})
		l.wg.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				msg := &pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: &pb.Report{Statistics: report()}}}
				if err := stream.Send(msg); err != nil {
					return
				}
				l.reports.Add(1)
			}
		})
	}
	for i := range unary {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := s.sampling.GetSamplingTargets(cctx, &pb.GetSamplingTargetsRequest{ClientId: "unary-" + strconv.Itoa(i), ServiceName: "shop", Statistics: report()})
				ccancel()
				switch status.Code(err) {
				case codes.OK:
					l.unaryOK.Add(1)
				case codes.Unavailable:
					l.unaryFailed.Add(1)
					// As an SDK does, back off a little.
					select {
					case <-ctx.Done():
					case <-time.After(5 * time.Millisecond):
					}
				}
			}
		})
	}
	return l
}

func (l *outageLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

// warnLines counts the WARN lines of a text log.
func warnLines(log string) []string {
	var out []string
	for line := range strings.Lines(log) {
		if strings.Contains(line, "level=WARN") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// TestServeOutageLogsOnce: while Redis is away, every unary report fails and
// every stream report goes unrecorded, yet the replica logs the outage in a
// handful of WARN lines (one per component that sees it), not one or two per
// failed call, and says once that it is over.
func TestServeOutageLogsOnce(t *testing.T) {
	r := redistest.Start(t)
	c := testServeConfig(t)
	c.redisURL = r.URL()
	c.interval = time.Second
	s := startServe(t, c)
	s.waitReadiness(t, true)
	load := startOutageLoad(t, s, 50, 20)
	pollUntil(t, "unary reports go through", func() bool { return load.unaryOK.Load() >= 10 })

	before := len(s.logs.String())
	r.Stop()
	failed0, reports0 := load.unaryFailed.Load(), load.reports.Load()
	// Each failed call waits for go-redis's retries, about a second.
	pollUntil(t, "many calls fail while Redis is away", func() bool {
		return load.unaryFailed.Load()-failed0 >= 100 && load.reports.Load()-reports0 >= 200
	})
	failed, reports := load.unaryFailed.Load()-failed0, load.reports.Load()-reports0
	_, metrics := s.get(t, "/metrics")
	storeErrors := "absent"
	for line := range strings.Lines(metrics) {
		if v, ok := strings.CutPrefix(line, "controlplane_store_errors_total "); ok {
			storeErrors = strings.TrimSpace(v)
		}
	}
	r.Restart()
	s.waitReadiness(t, true)
	ok0 := load.unaryOK.Load()
	pollUntil(t, "unary reports go through again", func() bool { return load.unaryOK.Load() >= ok0+10 })
	load.stop()

	warns := warnLines(s.logs.String()[before:])
	t.Logf("outage: %d unary calls failed, %d stream reports sent, controlplane_store_errors_total %s; %d WARN lines:\n%s",
		failed, reports, storeErrors, len(warns), strings.Join(warns[:min(len(warns), 10)], "\n"))
	// One line per component that sees the outage: readiness, the catalog,
	// the calls and reports, the budget controller, the report batcher.
	const maxWarns = 8
	if len(warns) > maxWarns {
		t.Errorf("%d WARN lines for one outage, want at most %d", len(warns), maxWarns)
	}
	// Over once no call failed for a quiet spell (condition.Quiet) and the
	// store answered.
	over := "store unreachable: calls fail with UNAVAILABLE, stream reports renew the last quotas: over"
	pollUntil(t, "the end of the outage is logged", func() bool { return strings.Contains(s.logs.String()[before:], over) })
}

// TestServeStartsBeforeRedis: a replica starts while its Redis is away. It
// serves health (alive, not ready), gives SDKs no rules rather than an empty
// set, and once Redis is there (empty, as a new one is) it seeds the Default
// rule, becomes ready and streams the rules, at a version above any an SDK
// may know from before.
func TestServeStartsBeforeRedis(t *testing.T) {
	r := redistest.Start(t)
	r.Stop()
	c := testServeConfig(t)
	c.redisURL = r.URL()
	s := startServe(t, c)
	if code, _ := s.get(t, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with Redis away: %d, want 200", code)
	}
	s.waitReadiness(t, false)
	if _, err := s.sampling.GetSamplingRules(callCtx(t), &pb.GetSamplingRulesRequest{ServiceName: "shop", KnownRulesVersion: 6}); status.Code(err) != codes.Unavailable {
		t.Errorf("GetSamplingRules before any rules: %v, want UNAVAILABLE", err)
	}
	// An SDK that knew version 6 of a Redis that lost its data.
	stream, err := s.sampling.StreamSampling(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	hello := &pb.Hello{ClientId: "sdk", ServiceName: "shop", KnownRulesVersion: 6}
	if err := stream.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: hello}}); err != nil {
		t.Fatal(err)
	}

	r.Restart()
	s.waitReadiness(t, true)
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	rs := resp.GetRules()
	if rs == nil || rs.GetRulesVersion() <= 6 || len(rs.GetRules()) != 1 || rs.GetRules()[0].GetName() != "Default" {
		t.Fatalf("first message on the stream: %v, want the Default rule at a version above 6", resp)
	}
	got, err := s.sampling.GetSamplingRules(callCtx(t), &pb.GetSamplingRulesRequest{ServiceName: "shop", KnownRulesVersion: 6})
	if err != nil || got.GetRulesVersion() != rs.GetRulesVersion() || len(got.GetRules()) != 1 {
		t.Errorf("GetSamplingRules once Redis is there: %v, %v", got, err)
	}
	s.cli(t, "apply", "-f", "testdata/rules.yaml").mustOK(t)
	// What Redis keeps is read once it answers.
	pollUntil(t, "serve warns that Redis persists nothing", func() bool { return strings.Contains(s.logs.String(), "Redis persists nothing") })
}

// TestServeWarnsWhenRedisPersistsNothing: with a Redis that keeps nothing on
// disk, a restart loses every rule, budget and spend; serve says so at start.
func TestServeWarnsWhenRedisPersistsNothing(t *testing.T) {
	const warning = "Redis persists nothing"
	tests := []struct {
		name string
		opts redistest.Options
		want string // in the log
	}{
		{"no persistence", redistest.Options{}, warning},
		{"append-only file", redistest.Options{AppendOnly: true}, "redis persistence"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := redistest.StartWith(t, tt.opts)
			c := testServeConfig(t)
			c.redisURL = r.URL()
			s := startServe(t, c)
			pollUntil(t, "the log says "+tt.want, func() bool { return strings.Contains(s.logs.String(), tt.want) })
			if tt.want != warning && strings.Contains(s.logs.String(), warning) {
				t.Errorf("warned that Redis persists nothing:\n%s", s.logs.String())
			}
		})
	}
}
