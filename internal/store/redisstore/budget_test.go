package redisstore_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

// touchBudgetKeys makes s write every kind of budget key once.
func touchBudgetKeys(t *testing.T, s *redisstore.Store) {
	t.Helper()
	ctx := t.Context()
	now := time.Now()
	if _, err := s.CreateBudget(ctx, budget.Budget{Name: "b", MonthlyAmountMicros: 1 * budget.MicrosPerUnit}); err != nil {
		t.Fatal(err)
	}
	l := reservoir.Ledger{Interval: 10 * time.Second, Retain: 3}
	if _, err := s.RecordReports(ctx, store.ReportBatch{
		Now: now, Ledger: l,
		Rates: []store.RateUpdate{{Rule: "a", Add: reservoir.Receipt{Bucket: l.Bucket(now), Rate: 1}}},
		Usage: []store.UsageIncrement{{Budget: "b", Month: now, Hour: 0, Rule: "a", Requests: 1, Sampled: 1}},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutStates(ctx, []budget.State{{Budget: "b"}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.FireAlert(ctx, budget.Alert{Budget: "b", Kind: budget.AlertSpend, Threshold: 1, MonthStart: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClaimTick(ctx, 1, time.Minute); err != nil {
		t.Fatal(err)
	}
}

// TestBudgetKeysExpire checks the lives of the keys that must go away by
// themselves: a month of usage and of history 70 days after the month
// ends, the seqs of a span of time two spans after it began, an alert's
// fired mark after 70 days, a tick claim after its ttl.
func TestBudgetKeysExpire(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	s := newStore(t, c, redisstore.Options{})
	ctx := t.Context()
	now := time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)
	inc := store.UsageIncrement{Budget: "b", Month: now, Hour: 14*24 + 12, Rule: "a", Requests: 3, Sampled: 1}
	if _, err := s.RecordReports(ctx, store.ReportBatch{Now: now, Usage: []store.UsageIncrement{inc}}); err != nil {
		t.Fatal(err)
	}
	fields, err := c.HGetAll(ctx, "{tsc}:usage:b:202603").Result()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"r:348": "3", "s:348": "1", "rr:a": "3", "rs:a": "1", "rh:348:a": "3"}
	if fmt.Sprint(fields) != fmt.Sprint(want) {
		t.Errorf("usage hash = %v, want %v", fields, want)
	}
	// March 15 12:00 to the end of March is 16.5 days; then 70 more.
	checkTTL(t, c.PTTL(ctx, "{tsc}:usage:b:202603").Val(), (16*24+12)*time.Hour+70*24*time.Hour)
	// A decision's point of the month's history lives as long.
	if err := s.PutStates(ctx, []budget.State{{Budget: "b", MonthStart: budget.MonthStart(now), Computed: now}}); err != nil {
		t.Fatal(err)
	}
	checkTTL(t, c.PTTL(ctx, "{tsc}:history:b:202603").Val(), (16*24+12)*time.Hour+70*24*time.Hour)

	// A client's highest report seq, in the hash of the batch's span of
	// SeqWindow and 10 minutes (clock skew), which goes two spans and the
	// skew after the span began.
	if _, err := s.RecordReports(ctx, store.ReportBatch{Now: now, Sequenced: []store.SequencedUsage{{Client: "c1", Seq: 7, Usage: []store.UsageIncrement{inc}}}}); err != nil {
		t.Fatal(err)
	}
	span := store.SeqWindow + 10*time.Minute
	w := now.UnixMilli() / span.Milliseconds()
	key := fmt.Sprintf("{tsc}:seqs:%d", w)
	if got := c.HGet(ctx, key, "c1").Val(); got != "7" {
		t.Errorf("seq of c1 in %s = %q, want 7", key, got)
	}
	checkTTL(t, c.PTTL(ctx, key).Val(), time.UnixMilli((w+2)*span.Milliseconds()).Add(10*time.Minute).Sub(now))
	// A batch a span later leaves it; one two spans later unlinks it.
	for k, want := range []int64{1, 0} {
		later := time.UnixMilli((w + 1 + int64(k)) * span.Milliseconds())
		if _, err := s.RecordReports(ctx, store.ReportBatch{Now: later, Sequenced: []store.SequencedUsage{{Client: "c2", Seq: uint64(k + 1), Usage: []store.UsageIncrement{inc}}}}); err != nil {
			t.Fatal(err)
		}
		if got := c.Exists(ctx, key).Val(); got != want {
			t.Errorf("%d spans on, %s exists = %d, want %d", k+1, key, got, want)
		}
	}

	if _, _, err := s.FireAlert(ctx, budget.Alert{Budget: "b", Kind: budget.AlertSpend, Threshold: 0.5, MonthStart: now}); err != nil {
		t.Fatal(err)
	}
	checkTTL(t, c.PTTL(ctx, "{tsc}:fired:b|202603|spend_threshold|0.5").Val(), 70*24*time.Hour)

	if ok, err := s.ClaimTick(ctx, 42, 90*time.Second); err != nil || !ok {
		t.Fatalf("ClaimTick = %v, %v", ok, err)
	}
	checkTTL(t, c.PTTL(ctx, "{tsc}:tick:42").Val(), 90*time.Second)
}

func checkTTL(t *testing.T, got, want time.Duration) {
	t.Helper()
	if got > want || got < want-time.Minute {
		t.Errorf("TTL = %v, want %v", got, want)
	}
}

// BenchmarkRecordReports is one group-committed batch: 1000 client reports
// over 10 rules, each retracting its previous rates and quota (and counting
// its client, and that it runs the rule's current version) and granted a
// quota,
// and 1000 usage increments over 3 budgets, each in one hour of the month
// and spread over the 10 rules; unnumbered, or each the usage of a numbered
// report of its own client (the store checks and records 1000 seqs, each
// client's recorded in the span of time before too, as in a fleet that
// reports all along): new reports, or the same reports again (each call
// finds them all recorded, and the batch goes again without their usage).
func BenchmarkRecordReports(b *testing.B) {
	srv := redistest.Start(b)
	s := newStore(b, srv.Client(b), redisstore.Options{})
	ctx := context.Background()
	l := reservoir.Ledger{Interval: 10 * time.Second, Retain: 3}
	now := time.Now()
	bucket := l.Bucket(now)
	for _, bb := range []struct {
		name               string
		numbered, repeated bool
	}{
		{name: "unnumbered"},
		{name: "numbered", numbered: true},
		{name: "numbered repeats", numbered: true, repeated: true},
	} {
		b.Run(bb.name, func(b *testing.B) {
			batch := store.ReportBatch{Now: now, Ledger: l}
			// Seqs above any an earlier run recorded, as an SDK's.
			seq := uint64(time.Now().UnixMicro())
			for i := range 1000 {
				rule := fmt.Sprintf("rule-%d", i%10)
				prev := reservoir.Receipt{Bucket: bucket - 1, Rate: 2, Quota: 0.1, Sampled: 0.2, Applied: 7}
				batch.Rates = append(batch.Rates, store.RateUpdate{Rule: rule, Add: reservoir.Receipt{Bucket: bucket, Rate: 2, Sampled: 0.2}, Reservoir: 10, Retract: &prev, Client: true,
					RuleVersion: 7, Applied: true})
				inc := store.UsageIncrement{
					Budget: fmt.Sprintf("budget-%d", i%3), Month: now, Hour: int(now.Sub(budget.MonthStart(now)) / time.Hour),
					Rule: rule, Requests: 20, Sampled: 1,
				}
				if bb.numbered {
					batch.Sequenced = append(batch.Sequenced, store.SequencedUsage{Client: fmt.Sprintf("client-%d", i), Seq: seq, Usage: []store.UsageIncrement{inc}})
				} else {
					batch.Usage = append(batch.Usage, inc)
				}
			}
			if bb.numbered {
				// As in a fleet that reports all along: each client's seq
				// was recorded in the previous span of time too.
				early := batch
				early.Now, early.Sequenced = now.Add(-store.SeqWindow-10*time.Minute), slices.Clone(batch.Sequenced)
				for i := range early.Sequenced {
					early.Sequenced[i].Seq--
				}
				if _, err := s.RecordReports(ctx, early); err != nil {
					b.Fatal(err)
				}
			}
			if bb.repeated {
				if _, err := s.RecordReports(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				if !bb.repeated {
					for i := range batch.Sequenced {
						batch.Sequenced[i].Seq++ // a new report of each client
					}
				}
				if _, err := s.RecordReports(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
