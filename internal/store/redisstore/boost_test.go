package redisstore_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/boost"
	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
)

// TestBoostTwin runs random batches of boost counts and boost starts
// through Redis and through boost.Memory (the model's own arithmetic) and
// checks that every State they return is the same: recent buckets, decayed
// baseline, warm-up start, boost and capture. On a one-node Cluster too, which
// refuses a script whose keys lie in different slots.
func TestBoostTwin(t *testing.T) {
	tests := []struct {
		name   string
		opts   redistest.Options
		client func(t *testing.T, srv *redistest.Server) redis.UniversalClient
	}{
		{"single node", redistest.Options{}, func(t *testing.T, srv *redistest.Server) redis.UniversalClient { return srv.Client(t) }},
		{"cluster", redistest.Options{Cluster: true}, func(t *testing.T, srv *redistest.Server) redis.UniversalClient { return srv.ClusterClient(t) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.StartWith(t, tt.opts)
			s := newStore(t, tt.client(t, srv), redisstore.Options{Prefix: "twin"})
			runBoostTwin(t, s, 7)
		})
	}
}

func runBoostTwin(t *testing.T, s *redisstore.Store, seed uint64) {
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(seed, 1))
	m := boost.NewMemory()
	o := boost.Options{}
	rules := []string{"checkout", "search", "Default", "a-rule_with.odd:chars"}
	now := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	approx := cmpopts.EquateApprox(1e-12, 1e-9)
	for step := range 300 {
		// Time moves on by up to 35 s (a few intervals, gaps), now and then
		// by an hour, and sometimes stands still; to the millisecond.
		switch x := rng.IntN(20); {
		case x == 0:
			now = now.Add(time.Hour)
		case x < 4:
		default:
			now = now.Add(time.Duration(rng.IntN(35_000)) * time.Millisecond)
		}
		if rng.IntN(8) == 0 {
			rule := rules[rng.IntN(len(rules))]
			states, err := m.RecordBoostCounts(ctx, now, o, []boost.Add{{Rule: rule}})
			if err != nil {
				t.Fatal(err)
			}
			prev := states[0].Boost.Start
			if rng.IntN(4) == 0 {
				prev = prev.Add(time.Second) // decided from a stale state
			}
			b := boost.Boost{Rate: rng.Float64(), Start: now, Expiry: now.Add(time.Duration(1+rng.IntN(60)) * time.Second)}
			wantB, wantOK, err := m.StartBoost(ctx, rule, prev, b)
			if err != nil {
				t.Fatal(err)
			}
			gotB, gotOK, err := s.StartBoost(ctx, rule, prev, b)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(wantB, gotB); diff != "" || gotOK != wantOK {
				t.Fatalf("step %d: StartBoost = %v (-memory +redis):\n%s", step, gotOK, diff)
			}
			continue
		}
		var adds []boost.Add
		for range 1 + rng.IntN(6) {
			total := math.Floor(math.Pow(10, 4*rng.Float64()))
			a := boost.Add{Rule: rules[rng.IntN(len(rules))], Counts: boost.Counts{Total: total, Anomalies: math.Floor(total * rng.Float64() * 0.3)}}
			a.Counts.Sampled = math.Floor(a.Counts.Anomalies * rng.Float64())
			switch rng.IntN(15) {
			case 0:
				a.Counts = boost.Counts{} // a read
			case 1:
				a.Counts = boost.Counts{Total: math.Inf(1), Anomalies: -3, Sampled: math.NaN()}
			}
			adds = append(adds, a)
		}
		at := now
		if rng.IntN(5) == 0 {
			at = now.Add(-time.Duration(rng.IntN(40_000)) * time.Millisecond) // a replica's clock behind
		}
		want, err := m.RecordBoostCounts(ctx, at, o, adds)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.RecordBoostCounts(ctx, at, o, adds)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got, approx); diff != "" {
			t.Fatalf("step %d: RecordBoostCounts(%+v) (-memory +redis):\n%s", step, adds, diff)
		}
	}
}

func TestBoostRecordExpires(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	s := newStore(t, c, redisstore.Options{Prefix: "ttl"})
	ctx := t.Context()
	now := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	if _, err := s.RecordBoostCounts(ctx, now, boost.Options{}, []boost.Add{{Rule: "r", Counts: boost.Counts{Total: 10}}}); err != nil {
		t.Fatal(err)
	}
	ttl, err := c.PTTL(ctx, "{ttl}:boost:r").Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= boost.StateTTL-time.Minute || ttl > boost.StateTTL {
		t.Errorf("a rule's boost state lives %v, want %v", ttl, boost.StateTTL)
	}
	// A read creates nothing.
	if _, err := s.RecordBoostCounts(ctx, now, boost.Options{}, []boost.Add{{Rule: "never"}}); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Exists(ctx, "{ttl}:boost:never").Result(); err != nil || n != 0 {
		t.Errorf("a read left a key: %v, %v", n, err)
	}
}

func TestBoostUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, srv.Client(t), redisstore.Options{Prefix: "down"})
	srv.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	now := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	if _, err := s.RecordBoostCounts(ctx, now, boost.Options{}, []boost.Add{{Rule: "r", Counts: boost.Counts{Total: 1}}}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("RecordBoostCounts with Redis down: %v, want ErrUnavailable", err)
	}
	if _, _, err := s.StartBoost(ctx, "r", time.Time{}, boost.Boost{Rate: 0.5, Start: now, Expiry: now.Add(time.Minute)}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("StartBoost with Redis down: %v, want ErrUnavailable", err)
	}
}

// BenchmarkRecordBoostCounts is one batch's boost counts: 10 rules, each
// with counts, as the report path would send them beside the ledger's
// script.
func BenchmarkRecordBoostCounts(b *testing.B) {
	srv := redistest.Start(b)
	s := newStore(b, srv.Client(b), redisstore.Options{Prefix: "bench"})
	ctx := context.Background()
	adds := make([]boost.Add, 10)
	for i := range adds {
		adds[i] = boost.Add{Rule: "rule-" + string(rune('a'+i)), Counts: boost.Counts{Total: 1000, Anomalies: 20, Sampled: 1}}
	}
	now := time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(100 * time.Millisecond)
		if _, err := s.RecordBoostCounts(ctx, now, boost.Options{}, adds); err != nil {
			b.Fatal(err)
		}
	}
}
