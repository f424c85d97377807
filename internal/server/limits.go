package server

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tracesampling/controlplane/internal/condition"
)

// Defaults of the bounds in Options. What clients can make the server hold
// is, at most: MaxStreams calls, each with a request of up to
// MaxRecvMsgBytes being received (gRPC widens a stream's window to the size
// the message announces) and StreamWindowBytes of data or response queued,
// and MaxHeaderBytes of metadata per call being read; and MaxConnections
// connections, each with its buffers and goroutines (about 70 KB).
const (
	DefaultMaxRecvMsgBytes         = 1 << 20
	DefaultMaxStreams              = 10_000
	DefaultMaxConnections          = 10_000
	DefaultMaxStreamsPerConnection = 1000
	DefaultMaxHeaderBytes          = 16 << 10
	DefaultStreamWindowBytes       = 64 << 10
	DefaultKeepaliveMinTime        = 10 * time.Second
)

// connWindowStreams is how many streams' windows a connection's window
// holds: a connection is never the bottleneck of a few busy streams.
const connWindowStreams = 16

// callLimit bounds the calls (streams and unary calls) open at once on the
// server. A call counts from its headers, through gRPC's tap, which runs
// before any of its message is read, so a refused call holds nothing, until
// its context ends: when its handler returned, or its connection closed.
type callLimit struct {
	max  int64
	open atomic.Int64
	full *condition.Condition
	err  error // the refusal
}

func newCallLimit(max int, s *Server, reg prometheus.Registerer) *callLimit {
	refused := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "controlplane_grpc_calls_refused_total",
		Help: "Calls refused with RESOURCE_EXHAUSTED because the replica had as many calls open as it may (--max-streams).",
	})
	l := &callLimit{
		max:  int64(max),
		full: condition.New(s.log, fmt.Sprintf("call limit reached: new calls are refused with RESOURCE_EXHAUSTED (--max-streams %d)", max), refused),
	}
	open := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "controlplane_grpc_calls_open",
		Help: "Calls (streams and unary calls) open on this replica; at most --max-streams.",
	}, func() float64 { return float64(l.open.Load()) })
	reg.MustRegister(refused, open)

	st := status.New(codes.ResourceExhausted, fmt.Sprintf("this replica has %d calls open, its limit: retry later, or on another replica", max))
	if d, err := st.WithDetails(
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{
			Subject: "calls open on this replica", Description: fmt.Sprintf("at most %d at once (--max-streams)", max),
		}}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)},
	); err == nil {
		st = d
	}
	l.err = st.Err()
	return l
}

// tap admits a call or refuses it. gRPC calls it with a lock of the
// connection held: it only counts, and logs once per condition.
func (l *callLimit) tap(ctx context.Context, _ *tap.Info) (context.Context, error) {
	if l.open.Add(1) > l.max {
		l.open.Add(-1)
		l.full.Occurred(ctx, l.err)
		return nil, l.err
	}
	context.AfterFunc(ctx, func() { l.open.Add(-1) })
	l.full.Cleared(ctx)
	return ctx, nil
}

// connLimit is a listener that holds at most max connections open: past
// that, Accept waits until one closes, and new clients wait in the kernel's
// backlog. It bounds what idle connections hold (buffers, goroutines).
type connLimit struct {
	net.Listener
	slots  chan struct{}
	open   prometheus.Gauge
	closed chan struct{} // closed by Close, so a waiting Accept returns
	once   sync.Once
}

func newConnLimit(lis net.Listener, max int, open prometheus.Gauge) *connLimit {
	return &connLimit{Listener: lis, slots: make(chan struct{}, max), open: open, closed: make(chan struct{})}
}

func (l *connLimit) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	l.open.Inc()
	return &limitedConn{Conn: c, release: func() { l.open.Dec(); <-l.slots }}, nil
}

// Close closes the listener; an Accept waiting for a free slot returns.
func (l *connLimit) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// limitedConn gives its slot back once, when closed.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
