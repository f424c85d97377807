package sampler

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// run keeps the sampler connected until ctx ends: a stream when the server
// takes one, unary polling when it refuses streams, reconnecting with
// exponential backoff and full jitter. On the way out it sends the last
// counts.
func (s *Sampler) run(ctx context.Context) {
	defer close(s.done)
	unary := s.cfg.disableStreams
	attempt := 0
	for ctx.Err() == nil {
		var err error
		var progressed bool
		if unary {
			progressed, err = s.runUnary(ctx)
		} else {
			progressed, err = s.runStream(ctx)
			if status.Code(err) == codes.Unimplemented {
				s.cfg.log.Info("control plane refused the stream; polling with unary calls instead", "endpoint", s.cfg.endpoint)
				unary = true
				continue
			}
		}
		if ctx.Err() != nil {
			break
		}
		if progressed {
			attempt = 0
		}
		wait := s.backoff(attempt)
		attempt++
		s.cfg.log.Debug("control plane connection lost; retrying", "endpoint", s.cfg.endpoint, "in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	s.flush()
}

// backoff is exponential with full jitter, so a fleet that lost the control
// plane at once does not come back at once.
func (s *Sampler) backoff(attempt int) time.Duration {
	d := s.cfg.backoffBase << min(attempt, 16)
	if d <= 0 || d > s.cfg.backoffMax {
		d = s.cfg.backoffMax
	}
	return time.Duration(rand.Int64N(int64(d)) + 1)
}

// runStream holds one stream until it fails. progressed reports whether the
// server answered at all, which resets the backoff.
func (s *Sampler) runStream(ctx context.Context) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Waiting for the connection (rather than failing fast while gRPC backs
	// off between attempts) lets the channel's backoff alone pace
	// reconnection, so the stream opens as soon as the server is back.
	stream, err := s.client.StreamSampling(ctx, grpc.WaitForReady(true))
	if err != nil {
		return false, err
	}
	var known int64
	if set := s.rules.Load(); set != nil {
		known = set.version
	}
	hello := &pb.Hello{ClientId: s.cfg.clientID, ServiceName: s.cfg.service, ServiceType: s.cfg.serviceType, KnownRulesVersion: known}
	if err := stream.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: hello}}); err != nil {
		return false, recvErr(stream, err)
	}
	// One goroutine receives; this one sends reports.
	got := make(chan struct{}, 1)
	recvDone := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvDone <- err
				return
			}
			switch msg := m.GetMessage().(type) {
			case *pb.StreamSamplingResponse_Rules:
				s.applyRules(msg.Rules)
			case *pb.StreamSamplingResponse_Targets:
				s.applyTargets(msg.Targets)
			}
			select {
			case got <- struct{}{}:
			default:
			}
		}
	}()
	// The first report goes out soon, so a new instance gets its quota
	// without borrowing for a whole interval. It echoes the receipts of the
	// last targets (from an earlier stream, if any); the server keeps the
	// later ones itself.
	first := true
	scheduled := s.interval.Load()
	next := time.NewTimer(jitter(min(s.cfg.firstReport, time.Duration(scheduled))))
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			// The last counts go out by flush, after the stream is gone.
			return progressed, ctx.Err()
		case err := <-recvDone:
			if errors.Is(err, io.EOF) {
				err = status.Error(codes.Unavailable, "stream closed by the server")
			}
			return progressed, err
		case <-got:
			progressed = true
			// Targets may bring a new report interval (the first ones
			// always do: until then it is the 10 s default), and the next
			// report was scheduled by the old one.
			if cur := s.interval.Load(); cur != scheduled {
				scheduled = cur
				next.Reset(jitter(time.Duration(cur)))
			}
		case <-next.C:
			sent, err := s.sendStreamReport(stream, first)
			if err != nil {
				return progressed, recvErr(stream, err)
			}
			first = first && !sent
			scheduled = s.interval.Load()
			next.Reset(jitter(time.Duration(scheduled)))
		}
	}
}

// sendStreamReport sends the counts since the last report, if there are
// any rules to count for.
func (s *Sampler) sendStreamReport(stream pb.SamplingService_StreamSamplingClient, echo bool) (sent bool, err error) {
	docs := s.takeReport(echo)
	if len(docs) == 0 {
		return false, nil
	}
	err = stream.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: &pb.Report{Statistics: docs}}})
	if err != nil {
		s.giveBack(docs)
		return false, err
	}
	return true, nil
}

// recvErr turns a failed Send into the stream's real status, which only Recv
// returns.
func recvErr(stream pb.SamplingService_StreamSamplingClient, sendErr error) error {
	if !errors.Is(sendErr, io.EOF) {
		return sendErr
	}
	for {
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
}

// runUnary polls: fetch rules when they changed, report, sleep an interval.
func (s *Sampler) runUnary(ctx context.Context) (progressed bool, err error) {
	for {
		if err := s.unaryRound(ctx); err != nil {
			return progressed, err
		}
		progressed = true
		t := time.NewTimer(jitter(time.Duration(s.interval.Load())))
		select {
		case <-ctx.Done():
			t.Stop()
			return progressed, ctx.Err()
		case <-t.C:
		}
	}
}

func (s *Sampler) unaryRound(ctx context.Context) error {
	if err := s.fetchRules(ctx); err != nil {
		return err
	}
	version, err := s.unaryReport(ctx)
	if err != nil {
		return err
	}
	if set := s.rules.Load(); set != nil && version != set.version {
		return s.fetchRules(ctx)
	}
	return nil
}

func (s *Sampler) fetchRules(ctx context.Context) error {
	var known int64
	if set := s.rules.Load(); set != nil {
		known = set.version
	}
	// Each unary round starts here: wait for the connection, as a stream
	// does. (The report that Close flushes fails fast instead.)
	resp, err := s.client.GetSamplingRules(ctx, &pb.GetSamplingRulesRequest{ServiceName: s.cfg.service, ServiceType: s.cfg.serviceType, KnownRulesVersion: known}, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	if resp.GetUnchanged() {
		s.extendFresh(s.now() + 2*s.interval.Load())
		return nil
	}
	s.applyRules(&pb.RuleSet{RulesVersion: resp.GetRulesVersion(), Rules: resp.GetRules()})
	return nil
}

func (s *Sampler) unaryReport(ctx context.Context) (int64, error) {
	docs := s.takeReport(true)
	if len(docs) == 0 {
		return 0, nil
	}
	resp, err := s.client.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{
		ClientId: s.cfg.clientID, ServiceName: s.cfg.service, ServiceType: s.cfg.serviceType, Statistics: docs,
	})
	if err != nil {
		s.giveBack(docs)
		return 0, err
	}
	for _, r := range resp.GetRejected() {
		s.cfg.log.Warn("control plane rejected a report", "rule", r.GetRuleName(), "code", r.GetCode(), "message", r.GetMessage())
	}
	s.applyTargets(&pb.TargetSet{Targets: resp.GetTargets(), RulesVersion: resp.GetRulesVersion(), ReportInterval: resp.GetReportInterval()})
	return resp.GetRulesVersion(), nil
}

// flush sends the last counts with a short deadline of its own, when the
// sampler closes.
func (s *Sampler) flush() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := s.unaryReport(ctx); err != nil {
		s.cfg.log.Debug("could not send the last report", "err", err)
	}
}

// Close sends the last counts and stops the sampler. Spans started after it
// are decided with the last rules until they expire, then by the local
// default. It is safe to call more than once.
func (s *Sampler) Close() error {
	s.closed.Do(func() {
		s.stop()
		<-s.done
		s.closeErr = s.conn.Close()
		if s.coarse != nil {
			s.coarse.close()
		}
	})
	return s.closeErr
}

// Shutdown is Close with the signature of OpenTelemetry's shutdown hooks.
func (s *Sampler) Shutdown(ctx context.Context) error { return s.Close() }

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return time.Millisecond
	}
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

func timestamp(ns int64) *timestamppb.Timestamp { return timestamppb.New(time.Unix(0, ns)) }

func duration(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
