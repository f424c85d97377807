package sampling

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/receipt"
	"github.com/tracesampling/controlplane/internal/store"
)

// TestResentReportBoundedByItsReceipts: an SDK whose replica died (or whose
// answer was lost) sends its numbered report again to another replica,
// marked resent, with the receipt it was taken with. That replica bounds
// the report by the receipt's quota, so that the honest report is not cut;
// it retracts nothing, since the first send may have; and a resend the
// store fails comes again and is still bounded so, on the same stream or
// in another call. Before, the SDK sent it again without its receipt, and
// the replica bounded it as a new client's: 10 traces sampled on a quota of
// 10 a second were cut to 5.
func TestResentReportBoundedByItsReceipts(t *testing.T) {
	for _, c := range []struct {
		name string
		// recorded: the first send reached the store (its answer was
		// lost); else it died with its replica.
		recorded bool
		// stream: the resends go on one stream (its held claims over the
		// tokens); else in unary calls, each on its own.
		stream bool
		// failures is how many times the store fails the resend first.
		failures int
	}{
		{name: "first send recorded, answer lost", recorded: true},
		{name: "first send lost with its replica"},
		{name: "first send lost, the store fails the resend once, unary", failures: 1},
		{name: "first send recorded, the store fails the resend three times, on a stream", recorded: true, stream: true, failures: 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			p := newReplicaPair(t)
			doc := func(sampled int64) Statistics {
				return Statistics{Rule: "r", Requests: 100, Sampled: sampled, Interval: time.Second, Time: p.clk.Now()}
			}
			// The client's first report, to replica a: it is granted
			// the whole reservoir.
			first, err := p.a.Report(ctx, Report{Client: "c", Service: "shop", Seq: 1, Statistics: []Statistics{doc(1)}}, p.a.Tokens())
			if err != nil {
				t.Fatal(err)
			}
			quota, token := first.Targets[0].Quota, first.Targets[0].Receipt
			if quota != 10 || token == "" {
				t.Fatalf("first targets %+v, want a quota of 10 and a receipt", first.Targets)
			}
			// A second later it reports what it sampled on its quota.
			p.clk.Add(time.Second)
			second := Report{Client: "c", Service: "shop", Seq: 2, Statistics: []Statistics{doc(int64(quota))}}
			second.Statistics[0].Receipt = token
			if c.recorded {
				if _, err := p.a.Report(ctx, second, p.a.Tokens()); err != nil {
					t.Fatal(err)
				}
			}
			// Replica a dies; the report goes again to b, a second later.
			p.clk.Add(time.Second)
			resent := second
			resent.Resent = true
			p.st.failNext(c.failures)
			var keep receipt.Keeper
			for try := 0; ; try++ {
				if c.stream {
					if try == 0 {
						keep = receipt.NewHeld().Over(p.b.Tokens())
					}
				} else {
					keep = p.b.Tokens()
				}
				_, err := p.b.Report(ctx, resent, keep)
				if err == nil {
					break
				}
				if !errors.Is(err, store.ErrUnavailable) || try >= c.failures {
					t.Fatalf("resend %d: %v", try, err)
				}
				p.clk.Add(time.Second)
			}
			if cut := p.cut(t); cut != 0 {
				t.Errorf("%v sampled traces counted as cut from honest reports, want 0", cut)
			}
			if got, want := p.sampledRecorded(t), 1+int64(quota); got != want {
				t.Errorf("the budget recorded %d sampled, want %d: the resent report was cut, or billed twice", got, want)
			}
			for _, u := range p.st.kept() {
				if u.Retract != nil {
					t.Errorf("the resent report retracted %+v: its first send may have already", *u.Retract)
				}
			}
		})
	}
}
