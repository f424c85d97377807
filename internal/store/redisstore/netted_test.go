package redisstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tracesampling/controlplane/internal/store"
)

// TestNetted: increments of the same budget, month, hour, rule and service
// are added up where the first of them was; any difference keeps them
// apart; past the increments found by a scan, a map finds the same.
func TestNetted(t *testing.T) {
	nov := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	inc := func(budget, svc, rule string, month time.Time, hour int, req, sampled int64) store.UsageIncrement {
		return store.UsageIncrement{Budget: budget, Service: svc, Rule: rule, Month: month, Hour: hour, Requests: req, Sampled: sampled}
	}
	many := func(n, repeat int) (in, want []store.UsageIncrement) {
		for r := range repeat {
			for i := range n {
				in = append(in, inc("b", "s", fmt.Sprint("r", i), nov, 1, 1, int64(r)))
			}
		}
		for i := range n {
			want = append(want, inc("b", "s", fmt.Sprint("r", i), nov, 1, int64(repeat), int64(repeat*(repeat-1)/2)))
		}
		return in, want
	}
	manyIn, manyWant := many(30, 3)
	tests := []struct {
		name     string
		in, want []store.UsageIncrement
	}{
		{"none", nil, nil},
		{"one", []store.UsageIncrement{inc("b", "s", "r", nov, 1, 5, 1)}, []store.UsageIncrement{inc("b", "s", "r", nov, 1, 5, 1)}},
		{"same, another day and zone of the month", []store.UsageIncrement{
			inc("b", "s", "r", nov, 1, 5, 1),
			inc("b", "s", "r", nov.AddDate(0, 0, 20).In(time.FixedZone("x", 3600)), 1, 7, 2),
		}, []store.UsageIncrement{inc("b", "s", "r", nov, 1, 12, 3)}},
		{"each field apart", []store.UsageIncrement{
			inc("b", "s", "r", nov, 1, 1, 0),
			inc("c", "s", "r", nov, 1, 1, 0),
			inc("b", "t", "r", nov, 1, 1, 0),
			inc("b", "s", "q", nov, 1, 1, 0),
			inc("b", "s", "r", nov.AddDate(0, 1, 0), 1, 1, 0),
			inc("b", "s", "r", nov, 2, 1, 0),
			inc("b", "s", "r", nov, 1, 1, 1),
		}, []store.UsageIncrement{
			inc("b", "s", "r", nov, 1, 2, 1),
			inc("c", "s", "r", nov, 1, 1, 0),
			inc("b", "t", "r", nov, 1, 1, 0),
			inc("b", "s", "q", nov, 1, 1, 0),
			inc("b", "s", "r", nov.AddDate(0, 1, 0), 1, 1, 0),
			inc("b", "s", "r", nov, 2, 1, 0),
		}},
		{"the month's edges, in UTC", []store.UsageIncrement{
			inc("b", "s", "r", time.Date(2026, 10, 31, 23, 59, 59, 999_999_999, time.UTC), 1, 1, 0),
			inc("b", "s", "r", time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), 1, 2, 0),
			inc("b", "s", "r", time.Date(2026, 11, 1, 0, 30, 0, 0, time.FixedZone("+1", 3600)), 1, 4, 0), // October in UTC
			inc("b", "s", "r", time.Date(2026, 11, 30, 23, 59, 59, 0, time.UTC), 1, 8, 0),
		}, []store.UsageIncrement{
			inc("b", "s", "r", time.Date(2026, 10, 31, 23, 59, 59, 999_999_999, time.UTC), 1, 5, 0),
			inc("b", "s", "r", time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), 1, 10, 0),
		}},
		{"more than a scan finds", manyIn, manyWant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := netted(tt.in)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("netted (-want +got):\n%s", diff)
			}
		})
	}
}

// TestLedgerArgsBuckets: a rule's part of a batch sums each bucket's
// figures in one place, in the order the buckets first came, whether they
// are found by a scan (a few) or by the map (past scanBuckets); and the
// versions run, by bucket and version.
func TestLedgerArgsBuckets(t *testing.T) {
	for _, n := range []int{1, scanBuckets, scanBuckets + 1, 3 * scanBuckets} {
		t.Run(fmt.Sprint(n, " buckets"), func(t *testing.T) {
			var l ledgerArgs
			var want []bucketSums
			for round := range 3 { // each bucket three times, interleaved
				for i := range n {
					bucket := int64(1000 - 7*i)
					bs := l.at(bucket)
					bs.has |= hasRate
					bs.rate += float64(i + 1)
					if round == 0 {
						want = append(want, bucketSums{bucket: bucket, has: hasRate})
					}
					want[i].rate += float64(i + 1)
					l.addApplied(bucket, int64(round%2), 1)
				}
			}
			if diff := cmp.Diff(want, l.buckets, cmp.AllowUnexported(bucketSums{})); diff != "" {
				t.Errorf("buckets (-want +got):\n%s", diff)
			}
			if got, want := len(l.applied), 2*n; got != want {
				t.Fatalf("%d (bucket, version) pairs, want %d", got, want)
			}
			for _, a := range l.applied {
				if want := map[int64]int64{0: 2, 1: 1}[a.version]; a.n != want {
					t.Errorf("bucket %d version %d: %d clients, want %d", a.bucket, a.version, a.n, want)
				}
			}
		})
	}
}
