package sampling

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/receipt"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// TestReportBuffers: with Report.Buffers, a call's targets stay as they
// were through the next call, which fills the other buffer; the call after
// takes the first one back.
func TestReportBuffers(t *testing.T) {
	ctx := context.Background()
	mem, err := memstore.New(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	r := rules.Rule{Name: "r", Priority: 1, ServiceName: "shop", FixedRate: 0.05, ReservoirSize: 10}
	if _, err := mem.CreateRule(ctx, r.Normalize(), "test"); err != nil {
		t.Fatal(err)
	}
	cat := catalog.New(mem, catalog.Options{Logger: discardLogger()})
	if err := cat.Load(ctx); err != nil {
		t.Fatal(err)
	}
	s := New(Options{Catalog: cat, Store: mem, Logger: discardLogger(), Interval: time.Second})
	t.Cleanup(s.Close)

	bufs := new(ReportBuffers)
	keeper := receipt.NewHeld().Over(s.Tokens())
	report := func(requests int64) TargetSet {
		t.Helper()
		ts, err := s.Report(ctx, Report{Client: "c", Service: "shop", Buffers: bufs,
			Statistics: []Statistics{{Rule: "r", Requests: requests, Sampled: 1, Interval: time.Second}}}, keeper)
		if err != nil {
			t.Fatal(err)
		}
		if len(ts.Targets) != 1 {
			t.Fatalf("%d targets, want 1", len(ts.Targets))
		}
		return ts
	}
	first := report(100)
	want := slices.Clone(first.Targets)
	second := report(300)
	if diff := cmp.Diff(want, first.Targets); diff != "" {
		t.Errorf("the next call changed a call's targets (-before +after):\n%s", diff)
	}
	if &second.Targets[0] == &first.Targets[0] {
		t.Errorf("two calls in a row share their targets")
	}
	if third := report(200); &third.Targets[0] != &first.Targets[0] {
		t.Errorf("the call after next does not reuse the first call's buffer")
	}
}

// TestReportBuffersDrop: a buffer dropped (its report may still be at the
// store) is not handed out again.
func TestReportBuffersDrop(t *testing.T) {
	var b ReportBuffers
	d1, d2 := b.take(), b.take()
	if d1 == d2 {
		t.Fatal("two takes in a row gave the same buffer")
	}
	d1.targets[0].Rule = "kept"
	if d3 := b.take(); d3 != d1 || d3.targets[0].Rule != "" {
		t.Fatalf("the third take gave %p (rule %q), want the first, %p, zeroed", d3, d3.targets[0].Rule, d1)
	}
	b.drop(d1)
	if d4 := b.take(); d4 != d2 {
		t.Errorf("the other turn's buffer was replaced")
	}
	if d5 := b.take(); d5 == d1 {
		t.Errorf("a dropped buffer was handed out again")
	}
	var none *ReportBuffers
	if x, y := none.take(), none.take(); x == y {
		t.Errorf("nil buffers handed out the same memory twice")
	}
	none.drop(d1) // no panic
}

// gatedStore holds each store call while hold is set.
type gatedStore struct {
	*memstore.Store
	hold    atomic.Pointer[chan struct{}]
	entered chan struct{}
}

func (g *gatedStore) RecordReports(ctx context.Context, b store.ReportBatch) ([]store.RateResult, error) {
	if h := g.hold.Load(); h != nil {
		g.entered <- struct{}{}
		<-*h
	}
	return g.Store.RecordReports(ctx, b)
}

// TestReportBuffersKeepTheWakeChannel: a stream's report queued behind a
// batch at the store waits on a channel that its ReportBuffers keep for the
// report after next, instead of one made for each report.
func TestReportBuffersKeepTheWakeChannel(t *testing.T) {
	ctx := context.Background()
	mem, err := memstore.New(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	r := rules.Rule{Name: "r", Priority: 1, ServiceName: "shop", ReservoirSize: 10}
	if _, err := mem.CreateRule(ctx, r.Normalize(), "test"); err != nil {
		t.Fatal(err)
	}
	cat := catalog.New(mem, catalog.Options{Logger: discardLogger()})
	if err := cat.Load(ctx); err != nil {
		t.Fatal(err)
	}
	st := &gatedStore{Store: mem, entered: make(chan struct{})}
	s := New(Options{Catalog: cat, Store: st, Logger: discardLogger(), Interval: time.Second})
	t.Cleanup(s.Close)
	if _, err := s.keys.Ring(ctx); err != nil {
		t.Fatal(err)
	}

	bufs := new(ReportBuffers)
	keeper := receipt.NewHeld().Over(s.Tokens())
	rep := Report{Client: "c", Service: "shop", Buffers: bufs, Statistics: []Statistics{{Rule: "r", Requests: 10, Sampled: 1, Interval: time.Second}}}
	var wakes []chan struct{}
	for round := range 3 {
		hold := make(chan struct{})
		st.hold.Store(&hold)
		other := make(chan error, 1)
		go func() {
			// Another stream's report, at the store while ours queues.
			_, err := s.Report(ctx, Report{Client: fmt.Sprint("other", round), Service: "shop", Statistics: rep.Statistics}, s.Tokens())
			other <- err
		}()
		<-st.entered
		st.hold.Store(nil)
		ours := make(chan error, 1)
		go func() {
			_, err := s.Report(ctx, rep, keeper)
			ours <- err
		}()
		waitQueued(t, s.batcher, 1)
		close(hold)
		if err := errors.Join(<-other, <-ours); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		w := bufs.docs[bufs.next].pending.wake
		if w == nil {
			t.Fatalf("round %d: the queued report had no wake channel", round)
		}
		wakes = append(wakes, w)
	}
	if wakes[0] != wakes[2] || wakes[0] == wakes[1] {
		t.Errorf("wake channels of three reports in turn: %p, %p, %p; want the first and third the same, the second another", wakes[0], wakes[1], wakes[2])
	}
}
