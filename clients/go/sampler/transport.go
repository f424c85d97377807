package sampler

import (
	"context"
	"errors"
	"fmt"
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
// counts, within the context that Shutdown passes on s.flushCtx.
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
				s.cfg.log.Info("control plane refused the stream; polling with unary calls instead", "endpoint", s.cfg.target())
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
		s.cfg.log.Debug("control plane connection lost; retrying", "endpoint", s.cfg.target(), "in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	s.flushErr = s.flush(<-s.flushCtx)
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

// runStream holds one stream until it fails or ctx ends. progressed reports
// whether the server answered at all, which resets the backoff.
//
// One goroutine receives and this one sends. Only the receiver ever calls
// Recv (gRPC streams allow one receiving goroutine: with two, one can wait
// forever for a status the other consumed), and runStream returns only
// after it has ended.
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
	hello := &pb.Hello{ClientId: s.cfg.clientID, ServiceName: s.cfg.service, ServiceType: s.cfg.serviceType, KnownRulesVersion: known, ResourceAttributes: s.cfg.instance}
	if err := stream.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: hello}}); err != nil {
		if errors.Is(err, io.EOF) {
			// The stream has ended; its status comes from Recv, which
			// nothing else calls yet.
			for err = nil; err == nil; _, err = stream.Recv() {
			}
		}
		return false, err
	}
	got := make(chan struct{}, 1)
	recvDone := make(chan struct{}) // closed when the receiver has ended
	var recvErr error               // why, written before recvDone closes
	go func() {
		defer close(recvDone)
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr = err
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
	defer func() {
		cancel()
		<-recvDone
	}()
	// The first report goes out soon (see firstDelay). It echoes the
	// receipts of the last targets (from an earlier stream, if any); the
	// server keeps the later ones itself.
	first := true
	scheduled := s.interval.Load()
	next := time.NewTimer(s.firstDelay())
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			// The last counts go out by flush, after the stream is gone.
			return progressed, ctx.Err()
		case <-recvDone:
			if errors.Is(recvErr, io.EOF) {
				return progressed, status.Error(codes.Unavailable, "stream closed by the server")
			}
			if status.Code(recvErr) == codes.InvalidArgument {
				// The hello passed (rules came), so a report did not.
				s.dropPending(recvErr)
			}
			return progressed, recvErr
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
				// The stream is over. If the server ended it, its status
				// is on the way to the receiver; if not, ending it here
				// stops the receiver.
				cancel()
				<-recvDone
				if st, ok := status.FromError(recvErr); ok && st.Code() != codes.Canceled {
					return progressed, recvErr
				}
				return progressed, err
			}
			first = first && !sent
			scheduled = s.interval.Load()
			next.Reset(jitter(time.Duration(scheduled)))
		}
	}
}

// firstDelay is when the first report on a new stream goes out: about
// firstReport (at most an interval) after the first rules, so that a new
// instance gets its quota without borrowing for a whole interval, from a
// rate measured over a second. On a new stream after another (a replica
// killed, a connection rotated) the counts run since the last report:
// the report goes out once they span firstReport, at once if they do, so
// that the new replica renews the quota before the last one expires. A
// report left unacknowledged goes again at once too. "At once" is spread
// over a tenth of the delay, so that the streams of a replica that went
// away do not all report to the next one in the same instant.
func (s *Sampler) firstDelay() time.Duration {
	d := min(s.cfg.firstReport, time.Duration(s.interval.Load()))
	now := s.now()
	s.reportMu.Lock()
	defer s.reportMu.Unlock()
	spread := time.Duration(rand.Int64N(int64(d/10) + 1))
	switch {
	case s.pending != nil:
		return spread
	case s.lastReport != 0:
		return max(d-time.Duration(now-s.lastReport), 0) + spread
	}
	return jitter(d)
}

// sendStreamReport sends the report not yet acknowledged, or else the
// counts since the last report, if there are any rules to count for.
func (s *Sampler) sendStreamReport(stream pb.SamplingService_StreamSamplingClient, echo bool) (sent bool, err error) {
	seq, docs, resent := s.nextReport(echo)
	if len(docs) == 0 {
		return false, nil
	}
	err = stream.Send(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: &pb.Report{Statistics: docs, Seq: seq, Resent: resent, AppliedRulesVersion: s.appliedVersion()}}})
	s.reportSent(seq)
	return err == nil, err
}

// appliedVersion is the rules version of the rule set the sampler decides
// with, which every report acknowledges (as go-control-plane's ACK does):
// the control plane counts, per rule, the instances that run it as it is.
// 0 before the first rule set.
func (s *Sampler) appliedVersion() int64 {
	if set := s.rules.Load(); set != nil {
		return set.version
	}
	return 0
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

// ErrNotManual is Sync's error on a sampler that reports on its own.
var ErrNotManual = errors.New("sampler: Sync needs WithManualReports")

// Sync, on a sampler made WithManualReports, fetches the rules if they
// changed and reports the counts since the last call, within ctx, and
// returns once the answer's quotas and rates are in force. Calls are
// serialised. It waits for a connection (gRPC's WaitForReady); a report
// not acknowledged is sent again by the next call.
func (s *Sampler) Sync(ctx context.Context) error {
	if !s.cfg.manual {
		return ErrNotManual
	}
	s.manualMu.Lock()
	defer s.manualMu.Unlock()
	return s.unaryRound(ctx)
}

func (s *Sampler) unaryRound(ctx context.Context) error {
	if err := s.fetchRules(ctx); err != nil {
		return err
	}
	version, _, err := s.unaryReport(ctx)
	if err != nil {
		return err
	}
	if set := s.rules.Load(); set != nil && version != 0 && version != set.version {
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
	// does.
	resp, err := s.client.GetSamplingRules(ctx, &pb.GetSamplingRulesRequest{ServiceName: s.cfg.service, ServiceType: s.cfg.serviceType, KnownRulesVersion: known, ResourceAttributes: s.cfg.instance}, grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	if resp.GetUnchanged() {
		s.extendFresh(s.now() + 2*s.interval.Load())
		return nil
	}
	s.applyRules(&pb.RuleSet{RulesVersion: resp.GetRulesVersion(), Rules: resp.GetRules(), RatesInForce: resp.GetRatesInForce()})
	return nil
}

// unaryReport sends the report not yet acknowledged, or else the counts
// since the last report, and applies the targets that answer it. It returns
// the server's rules version (0 if nothing was sent) and whether it sent a
// report again.
func (s *Sampler) unaryReport(ctx context.Context) (version int64, again bool, err error) {
	seq, docs, again := s.nextReport(true)
	if len(docs) == 0 {
		return 0, false, nil
	}
	resp, err := s.client.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{
		ClientId: s.cfg.clientID, ServiceName: s.cfg.service, ServiceType: s.cfg.serviceType, Statistics: docs, Seq: seq, Resent: again,
		AppliedRulesVersion: s.appliedVersion(),
	}, grpc.WaitForReady(true))
	s.reportSent(seq)
	if status.Code(err) == codes.InvalidArgument {
		s.dropPending(err)
	}
	if err != nil {
		return 0, again, err
	}
	for _, r := range resp.GetRejected() {
		s.cfg.log.Warn("control plane rejected a report", "rule", r.GetRuleName(), "code", r.GetCode(), "message", r.GetMessage())
	}
	// An OK answer means the store recorded the report.
	s.applyTargets(&pb.TargetSet{Targets: resp.GetTargets(), RulesVersion: resp.GetRulesVersion(), ReportInterval: resp.GetReportInterval(), AckedSeq: seq})
	return resp.GetRulesVersion(), again, nil
}

// flush sends the last counts when the sampler closes, within ctx: first a
// report left unacknowledged (the store bills it once however often it
// arrives), then the counts since. It waits for a connection (the stream
// may have just been rotated, or its replica killed) and tries again while
// the control plane is unavailable (its store down).
func (s *Sampler) flush(ctx context.Context) error {
	attempt := 0
	for {
		_, again, err := s.unaryReport(ctx)
		switch {
		case err == nil && !again:
			return nil
		case err == nil:
			attempt = 0
			continue // the counts since
		case status.Code(err) == codes.Unavailable && ctx.Err() == nil:
			t := time.NewTimer(s.backoff(attempt))
			attempt++
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			if ctx.Err() == nil {
				continue
			}
		}
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			// gRPC's status for a call cut short does not say why.
			err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		s.cfg.log.Warn("could not send the last counts to the control plane", "endpoint", s.cfg.target(), "err", err)
		return fmt.Errorf("sampler: last counts not sent: %w", err)
	}
}

// CloseTimeout bounds Close: stopping the stream and sending the last
// counts.
const CloseTimeout = 5 * time.Second

// Close is Shutdown with a deadline of CloseTimeout.
func (s *Sampler) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), CloseTimeout)
	defer cancel()
	return s.Shutdown(ctx)
}

// Shutdown sends the counts not yet reported (a report not yet
// acknowledged first), waiting for a connection if need be, and stops the
// sampler, all within ctx. If ctx ends first, the counts not sent are lost
// and the error says so (wrapping ctx's error). It returns once every
// goroutine of the sampler has ended. Spans started after it are decided
// with the last rules until they expire, then by the local default. A
// second call does nothing and returns the first one's error. It has the
// signature of OpenTelemetry's shutdown hooks.
func (s *Sampler) Shutdown(ctx context.Context) error {
	s.closed.Do(func() {
		if s.cfg.manual {
			s.manualMu.Lock()
			s.flushErr = s.flush(ctx)
			s.manualMu.Unlock()
		} else {
			s.flushCtx <- ctx
			s.stop()
			<-s.done
		}
		s.closeErr = errors.Join(s.flushErr, s.conn.Close())
		if s.coarse != nil {
			s.coarse.close()
		}
	})
	return s.closeErr
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return time.Millisecond
	}
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

func timestamp(ns int64) *timestamppb.Timestamp { return timestamppb.New(time.Unix(0, ns)) }

func duration(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
