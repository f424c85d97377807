package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/internal/store/storetest"
	"github.com/tracesampling/controlplane/pkg/reservoir"
	"github.com/tracesampling/controlplane/pkg/rules"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds waits for Redis to come back and notifications to arrive.
const waitTimeout = 15 * time.Second

func newStore(t testing.TB, c redis.UniversalClient, opts redisstore.Options) *redisstore.Store {
	t.Helper()
	s, err := redisstore.New(context.Background(), c, opts)
	if err != nil {
		t.Fatalf("redisstore.New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	tests := []struct {
		name   string
		opts   redistest.Options
		client func(t *testing.T, srv *redistest.Server) redis.UniversalClient
		shards int // Options.Shards
	}{
		{
			name:   "single node",
			client: func(t *testing.T, srv *redistest.Server) redis.UniversalClient { return srv.Client(t) },
		},
		{
			// A batch split over shards, each script in its own slot,
			// behaves as one script.
			name:   "single node, sharded",
			client: func(t *testing.T, srv *redistest.Server) redis.UniversalClient { return srv.Client(t) },
			shards: 16,
		},
		{
			// Redis Cluster refuses scripts and transactions whose keys lie
			// in different slots, so this checks the hash tags (one shard
			// on one master).
			name:   "cluster",
			opts:   redistest.Options{Cluster: true},
			client: func(t *testing.T, srv *redistest.Server) redis.UniversalClient { return srv.ClusterClient(t) },
		},
		{
			name:   "cluster, sharded",
			opts:   redistest.Options{Cluster: true},
			client: func(t *testing.T, srv *redistest.Server) redis.UniversalClient { return srv.ClusterClient(t) },
			shards: 16,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.StartWith(t, tt.opts)
			var n atomic.Int64
			storetest.Run(t, func(t *testing.T) storetest.Backend {
				// Backends share the server; a prefix of their own keeps
				// them apart.
				prefix := fmt.Sprintf("t%d", n.Add(1))
				return storetest.Backend{
					Open: func(t *testing.T, now func() time.Time) store.Store {
						// A client per store, as each replica has its own.
						return newStore(t, tt.client(t, srv), redisstore.Options{Prefix: prefix, Now: now, Shards: tt.shards})
					},
					OpenLimited: func(t *testing.T, now func() time.Time, maxRules int) store.Store {
						return newStore(t, tt.client(t, srv), redisstore.Options{Prefix: prefix, Now: now, MaxRules: maxRules, Shards: tt.shards})
					},
					OpenTrimmed: func(t *testing.T, now func() time.Time, maxEvents int) store.Store {
						return newStore(t, tt.client(t, srv), redisstore.Options{Prefix: prefix, Now: now, MaxEvents: int64(maxEvents), Shards: tt.shards})
					},
					Shared:        true,
					Durable:       true,
					RemembersKeys: true,
					Lose: func(t *testing.T) {
						// Suite clauses run one at a time: nothing else is
						// on the server meanwhile.
						if err := srv.Client(t).FlushAll(t.Context()).Err(); err != nil {
							t.Fatal(err)
						}
					},
				}
			})
		})
	}
}

func TestKeysShareOneHashTag(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := t.Context()
	s := newStore(t, c, redisstore.Options{})
	r, err := s.CreateRule(ctx, rules.Rule{Name: "a", Priority: 1}, "u")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateRule(ctx, r, r.Revision, "u"); err != nil {
		t.Fatal(err)
	}
	touchBudgetKeys(t, s)
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) < 12 {
		t.Fatalf("keys %q, want rules, version, two audit streams, a ledger, budgets, states, usage, two alert streams, a fired mark and a tick", keys)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, "{tsc}:") {
			t.Errorf("key %q is outside the {tsc} hash tag", k)
		}
	}
}

func TestNewRejectsBadPrefix(t *testing.T) {
	srv := redistest.Start(t)
	for _, p := range []string{"{x}", "a{b", "c}"} {
		if s, err := redisstore.New(t.Context(), srv.Client(t), redisstore.Options{Prefix: p}); err == nil {
			_ = s.Close()
			t.Errorf("New accepted prefix %q", p)
		}
	}
}

// TestReplicasSeedOnce starts many replicas at once on an empty Redis:
// exactly one seeds the Default rule.
func TestReplicasSeedOnce(t *testing.T) {
	srv := redistest.Start(t)
	start := time.Now()
	const replicas = 12
	stores := make([]*redisstore.Store, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range replicas {
		wg.Go(func() { stores[i], errs[i] = redisstore.New(context.Background(), srv.Client(t), redisstore.Options{}) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	ctx := t.Context()
	if v, err := stores[0].RulesVersion(ctx); err != nil || v < store.FirstVersion(start) || v > store.FirstVersion(time.Now()) {
		t.Errorf("RulesVersion = %d, %v; want one edit's, from the clock", v, err)
	}
	page, err := stores[replicas-1].RuleEvents(ctx, "", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 1 {
		t.Errorf("%d audit events, want 1 (the Default rule's creation)", len(page.Events))
	}
}

func TestMaxEventsTrimsTheLog(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := t.Context()
	s := newStore(t, c, redisstore.Options{MaxEvents: 10})
	r, err := s.CreateRule(ctx, rules.Rule{Name: "busy", Priority: 1}, "u")
	if err != nil {
		t.Fatal(err)
	}
	const edits = 600
	for range edits {
		if r, err = s.UpdateRule(ctx, r, r.Revision, "u"); err != nil {
			t.Fatal(err)
		}
	}
	// Trimming is approximate: Redis drops whole nodes of 100 entries.
	for _, key := range []string{"{tsc}:rules:events", "{tsc}:rules:events:busy"} {
		n, err := c.XLen(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n < 10 || n > 10+100 {
			t.Errorf("%s holds %d entries, want about 10", key, n)
		}
	}
	page, err := s.RuleEvents(ctx, "busy", 5, "")
	if err != nil || len(page.Events) != 5 || page.Events[0].After.Revision != edits+1 {
		t.Fatalf("RuleEvents after trimming = %+v, %v", page, err)
	}
}

// TestRestartKeepsAcknowledgedEdits kills Redis (with an append-only file)
// after a run of edits: every edit that was acknowledged is still there.
func TestRestartKeepsAcknowledgedEdits(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	s := newStore(t, srv.Client(t), redisstore.Options{})
	ctx := t.Context()
	for i := range 50 {
		r, err := s.CreateRule(ctx, rules.Rule{Name: fmt.Sprintf("r%02d", i), Priority: int32(i + 1)}, "u")
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			r.FixedRate = 0.5
			if _, err := s.UpdateRule(ctx, r, r.Revision, "u"); err != nil {
				t.Fatal(err)
			}
		}
		if i%5 == 0 {
			if err := s.DeleteRule(ctx, r.Name, 0, "u"); err != nil {
				t.Fatal(err)
			}
		}
	}
	want, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantEvents, err := s.RuleEvents(ctx, "", 1000, "")
	if err != nil {
		t.Fatal(err)
	}

	srv.Restart()

	got := snapshotEventually(t, s)
	if got.Version != want.Version || len(got.Rules) != len(want.Rules) {
		t.Fatalf("after restart: version %d with %d rules, want version %d with %d rules",
			got.Version, len(got.Rules), want.Version, len(want.Rules))
	}
	for i := range want.Rules {
		g, w := got.Rules[i], want.Rules[i]
		if g.Name != w.Name || g.Revision != w.Revision || g.FixedRate != w.FixedRate || !g.UpdateTime.Equal(w.UpdateTime) {
			t.Errorf("rule %d after restart = %+v, want %+v", i, g, w)
		}
	}
	gotEvents, err := s.RuleEvents(ctx, "", 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(gotEvents.Events) != len(wantEvents.Events) || gotEvents.Events[0].ID != wantEvents.Events[0].ID {
		t.Errorf("after restart: %d events, want %d", len(gotEvents.Events), len(wantEvents.Events))
	}
}

// snapshotEventually reads a snapshot, retrying while the client reconnects.
// It waits for a Ping too: after many failed dials go-redis fails plain
// commands fast until its background dial succeeds, while a transaction
// (Snapshot's) may already get through.
func snapshotEventually(t *testing.T, s store.Store) store.Snapshot {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := s.Ping(t.Context())
		var snap store.Snapshot
		if err == nil {
			snap, err = s.Snapshot(t.Context())
		}
		if err == nil {
			return snap
		}
		if time.Now().After(deadline) {
			t.Fatalf("Snapshot still failing after %v: %v", waitTimeout, err)
		}
		<-tick.C
	}
}

// TestTimeoutMayHaveApplied: a write whose answer timed out may still run
// (here: once Redis ends a pause), so its error must not say it was not
// applied, or a caller would send it again and count it twice.
func TestTimeoutMayHaveApplied(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: 100 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	s := newStore(t, c, redisstore.Options{})
	ctx := t.Context()
	if err := srv.Client(t).Do(ctx, "CLIENT", "PAUSE", 1000, "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	_, err := s.RecordReports(ctx, store.ReportBatch{Now: now, Usage: []store.UsageIncrement{{Budget: "b", Month: now, Requests: 1, Sampled: 1}}})
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrNotApplied) {
		t.Errorf("a timed-out write: %v, want ErrUnavailable without ErrNotApplied", err)
	}
}

// TestLostAnswerBatchCountsOnce: a batch that ran but whose answer was lost
// is not said to be unapplied; sent again under its Key, as the server does
// with the usage in it, it adds nothing more.
func TestLostAnswerBatchCountsOnce(t *testing.T) {
	s, hook := storeSendingTwice(t)
	ctx := t.Context()
	now := time.Now()
	batch := store.ReportBatch{Now: now, Key: "lost", Usage: []store.UsageIncrement{{Budget: "b", Month: now, Requests: 1, Sampled: 1}}}
	hook.lose.Store(true)
	_, err := s.RecordReports(ctx, batch)
	hook.lose.Store(false)
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrNotApplied) {
		t.Fatalf("a batch whose answer was lost: %v, want ErrUnavailable without ErrNotApplied", err)
	}
	if _, err := s.RecordReports(ctx, batch); err != nil {
		t.Fatal(err)
	}
	u, err := s.Usage(ctx, "b", now)
	if err != nil {
		t.Fatal(err)
	}
	if _, sampled := u.Totals(); sampled != 1 {
		t.Errorf("%v sampled, want 1: the batch ran, then was sent again", sampled)
	}
}

// TestUnavailable stops Redis under a store: every call fails with
// ErrUnavailable, and the same store works again once Redis is back.
func TestUnavailable(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	s := newStore(t, srv.Client(t), redisstore.Options{})
	ctx := t.Context()
	r, err := s.CreateRule(ctx, rules.Rule{Name: "r", Priority: 1}, "u")
	if err != nil {
		t.Fatal(err)
	}

	b, err := s.CreateBudget(ctx, budget.Budget{Name: "b", MonthlyAmountMicros: 1 * budget.MicrosPerUnit})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Ping", s.Ping},
		{"Budgets", func(ctx context.Context) error { _, err := s.Budgets(ctx, 0, ""); return err }},
		{"Budget", func(ctx context.Context) error { _, err := s.Budget(ctx, "b"); return err }},
		{"CreateBudget", func(ctx context.Context) error {
			_, err := s.CreateBudget(ctx, budget.Budget{Name: "new", MonthlyAmountMicros: 1 * budget.MicrosPerUnit})
			return err
		}},
		{"UpdateBudget", func(ctx context.Context) error { _, err := s.UpdateBudget(ctx, b, b.Revision); return err }},
		{"DeleteBudget", func(ctx context.Context) error { return s.DeleteBudget(ctx, "b", 0) }},
		{"RecordReports", func(ctx context.Context) error {
			_, err := s.RecordReports(ctx, store.ReportBatch{Now: now, Usage: []store.UsageIncrement{
				{Budget: "b", Month: now, Hour: 0, Requests: 1, Sampled: 1},
			}})
			return err
		}},
		{"Usage", func(ctx context.Context) error { _, err := s.Usage(ctx, "b", now); return err }},
		{"ClaimTick", func(ctx context.Context) error { _, err := s.ClaimTick(ctx, 1, time.Minute); return err }},
		{"PutStates", func(ctx context.Context) error { return s.PutStates(ctx, []budget.State{{Budget: "b"}}) }},
		{"States", func(ctx context.Context) error { _, err := s.States(ctx); return err }},
		{"FireAlert", func(ctx context.Context) error {
			_, _, err := s.FireAlert(ctx, budget.Alert{Budget: "b", Kind: budget.AlertSpend, Threshold: 1})
			return err
		}},
		{"Alerts", func(ctx context.Context) error { _, err := s.Alerts(ctx, "", 0, ""); return err }},
		{"Snapshot", func(ctx context.Context) error { _, err := s.Snapshot(ctx); return err }},
		{"Rule", func(ctx context.Context) error { _, err := s.Rule(ctx, "r"); return err }},
		{"RulesVersion", func(ctx context.Context) error { _, err := s.RulesVersion(ctx); return err }},
		{"RuleEvents", func(ctx context.Context) error { _, err := s.RuleEvents(ctx, "", 10, ""); return err }},
		{"CreateRule", func(ctx context.Context) error {
			_, err := s.CreateRule(ctx, rules.Rule{Name: "new", Priority: 2}, "u")
			return err
		}},
		{"UpdateRule", func(ctx context.Context) error { _, err := s.UpdateRule(ctx, r, r.Revision, "u"); return err }},
		{"DeleteRule", func(ctx context.Context) error { return s.DeleteRule(ctx, "r", 0, "u") }},
	}

	srv.Stop()
	for _, c := range calls {
		// Nothing reached Redis: every error says so too, so that a
		// caller may send the same write again.
		err := c.call(ctx)
		if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, store.ErrNotApplied) {
			t.Errorf("%s with Redis stopped: error = %v, want ErrUnavailable and ErrNotApplied", c.name, err)
		}
	}
	// A replica may start while Redis is away.
	late, err := redisstore.New(ctx, srv.Client(t), redisstore.Options{})
	if err != nil {
		t.Fatalf("New with Redis stopped: %v, want a store that waits for Redis", err)
	}
	defer late.Close()
	if _, err := late.Snapshot(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Snapshot of a store opened with Redis stopped: %v, want ErrUnavailable", err)
	}

	srv.Restart()
	snapshotEventually(t, s)
	if snap := snapshotEventually(t, late); len(snap.Rules) != 2 {
		t.Errorf("the store opened with Redis stopped sees %d rules once it is back, want 2", len(snap.Rules))
	}
	// Order matters: the update and delete need the rule the create left.
	for _, c := range calls {
		if err := c.call(ctx); err != nil {
			t.Errorf("%s after Redis came back: %v", c.name, err)
		}
	}
}

// TestWatchSurvivesRestart checks that a watcher resubscribes on its own
// after Redis restarts, says so with a notification, and then hears edits.
func TestWatchSurvivesRestart(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	watcher := newStore(t, srv.Client(t), redisstore.Options{})
	editor := newStore(t, srv.Client(t), redisstore.Options{})

	ctx, cancel := context.WithCancel(context.Background())
	notes := make(chan store.Topic, 64)
	done := make(chan error, 1)
	go func() {
		done <- watcher.WatchChanges(ctx, func(topic store.Topic) {
			select {
			case notes <- topic:
			default:
			}
		})
	}()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("WatchChanges returned %v, want context.Canceled", err)
		}
	}()
	wait := func(what string) {
		t.Helper()
		select {
		case <-notes:
		case <-time.After(waitTimeout):
			t.Fatalf("no notification %s within %v", what, waitTimeout)
		}
	}
	wait("on subscribing")

	srv.Restart()
	wait("on resubscribing after a restart")

	for len(notes) > 0 {
		<-notes
	}
	snapshotEventually(t, editor)
	if _, err := editor.CreateRule(t.Context(), rules.Rule{Name: "after-restart", Priority: 1}, "u"); err != nil {
		t.Fatal(err)
	}
	wait("for an edit after the restart")
}

// TestNewBeforeRedis: a replica starts while its Redis is away; the first
// Snapshot once Redis is there (empty, as a new Redis is) seeds the Default
// rule.
func TestNewBeforeRedis(t *testing.T) {
	srv := redistest.Start(t)
	srv.Stop()
	s := newStore(t, srv.Client(t), redisstore.Options{})
	if _, err := s.RulesVersion(t.Context()); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("RulesVersion with Redis away: %v, want ErrUnavailable", err)
	}
	srv.Restart()
	snap := snapshotEventually(t, s)
	if len(snap.Rules) != 1 || !snap.Rules[0].IsDefault() || snap.Version == 0 {
		t.Fatalf("first Snapshot once Redis is there = %+v, want the Default rule", snap)
	}
}

// TestSnapshotReseedsLostDefault covers Redis losing its data: the Default
// rule is put back rather than serving a rule set that matches nothing.
func TestSnapshotReseedsLostDefault(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	s := newStore(t, c, redisstore.Options{})
	ctx := t.Context()
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Rules) != 1 || !snap.Rules[0].IsDefault() || snap.Version < 1 {
		t.Fatalf("Snapshot after losing data = %+v, want the Default rule", snap)
	}
}

func BenchmarkCreateUpdate(b *testing.B) {
	srv := redistest.Start(b)
	s := newStore(b, srv.Client(b), redisstore.Options{})
	ctx := context.Background()
	base := rules.Rule{Name: "bench", Priority: 10, FixedRate: 0.1, ReservoirSize: 5, Labels: map[string]string{"team": "x"}}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r := base
		r.Name = fmt.Sprintf("bench-%d", i)
		i++
		created, err := s.CreateRule(ctx, r, "bench")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.UpdateRule(ctx, created, created.Revision, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSnapshot200(b *testing.B) {
	srv := redistest.Start(b)
	s := newStore(b, srv.Client(b), redisstore.Options{})
	ctx := context.Background()
	for i := range 199 {
		r := rules.Rule{
			Name: fmt.Sprintf("rule-%03d", i), Priority: int32(i + 1), FixedRate: 0.05, ReservoirSize: 1,
			ServiceName: "svc-*", URLPath: "/api/*", Attributes: map[string]string{"tier": "gold"},
		}
		if _, err := s.CreateRule(ctx, r, "bench"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		snap, err := s.Snapshot(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if len(snap.Rules) != 200 {
			b.Fatalf("%d rules", len(snap.Rules))
		}
	}
}

// twiceHook runs each script call twice while on, as go-redis does when it
// retries a call whose first run it did not hear back from. While lose is
// on, it runs each script call once and loses the answer: the caller gets a
// timeout.
type twiceHook struct {
	on   atomic.Bool
	lose atomic.Bool
	runs atomic.Int32
}

func (*twiceHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (*twiceHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *twiceHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		n := cmd.Name()
		if n != "evalsha" && n != "eval" {
			return next(ctx, cmd)
		}
		if h.on.Load() {
			if err := next(ctx, cmd); err != nil {
				return err
			}
			h.runs.Add(1)
		}
		err := next(ctx, cmd)
		if err == nil && h.lose.Load() {
			err = fmt.Errorf("i/o timeout: %w", os.ErrDeadlineExceeded)
			cmd.SetErr(err)
		}
		return err
	}
}

// storeSendingTwice returns a store on its own Redis whose script calls run
// twice while the hook is on.
func storeSendingTwice(t *testing.T) (*redisstore.Store, *twiceHook) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { c.Close() })
	hook := &twiceHook{}
	c.AddHook(hook)
	return newStore(t, c, redisstore.Options{}), hook
}

// TestRecordReportsAppliesARetriedBatchOnce: a batch whose script runs twice
// adds its rates and usage, numbered or not, once, and both runs return the
// same fleet rate.
func TestRecordReportsAppliesARetriedBatchOnce(t *testing.T) {
	s, hook := storeSendingTwice(t)
	ctx := t.Context()
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	ledger := reservoir.NewLedger(10 * time.Second)
	hook.on.Store(true)
	rates, err := s.RecordReports(ctx, store.ReportBatch{Now: now, Ledger: ledger,
		Rates: []store.RateUpdate{{Rule: "r", Add: reservoir.Receipt{Bucket: ledger.Bucket(now), Rate: 5}}},
		Usage: []store.UsageIncrement{{Budget: "b", Month: now, Hour: 10, Rule: "r", Requests: 60, Sampled: 1}},
		Sequenced: []store.SequencedUsage{{Client: "c", Seq: 4, Usage: []store.UsageIncrement{
			{Budget: "b", Month: now, Hour: 10, Rule: "r", Requests: 40, Sampled: 2},
		}}},
	})
	hook.on.Store(false)
	if err != nil {
		t.Fatal(err)
	}
	if hook.runs.Load() == 0 {
		t.Fatal("the script did not run twice")
	}
	if len(rates) != 1 || rates[0].Fleet != 5 {
		t.Errorf("fleet rates %v, want [5]", rates)
	}
	u, err := s.Usage(ctx, "b", now)
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Rules["r"]; got.Requests != 100 || got.Sampled != 3 || u.Sampled[10] != 3 {
		t.Errorf("usage %+v, hour 10 sampled %v; want 100 requests and 3 sampled, once", got, u.Sampled[10])
	}
}

// TestSeqsAcrossSpans: a numbered report is billed once when it comes
// again to a replica whose clock is up to 10 minutes off the first one's,
// across the boundary of the spans the seqs are kept in, and up to
// store.SeqWindow after it was first recorded, also after another client's
// batch at the later of the two times (which unlinks the spans no longer
// read).
func TestSeqsAcrossSpans(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, srv.Client(t), redisstore.Options{})
	ctx := t.Context()
	span := store.SeqWindow + 10*time.Minute
	// The last millisecond of a span, and the first of the next.
	end := time.UnixMilli(426_000 * span.Milliseconds()).Add(-time.Millisecond).UTC()
	skew := 10*time.Minute - time.Second
	later := func(a, b time.Time) time.Time {
		if a.After(b) {
			return a
		}
		return b
	}
	tests := []struct {
		name         string
		first, again time.Time
	}{
		{"again at once, clock behind", end.Add(time.Millisecond), end.Add(time.Millisecond - skew)},
		{"again at once, clock ahead", end, end.Add(skew)},
		{"again a window later, clock ahead", end, end.Add(store.SeqWindow + skew)},
		{"again a window later, clock behind", end.Add(time.Millisecond), end.Add(time.Millisecond + store.SeqWindow - skew)},
		{"again a window later from the start of a span, clock ahead", end.Add(time.Millisecond), end.Add(time.Millisecond + store.SeqWindow + skew)},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := fmt.Sprintf("c%d", i)
			report := func(now time.Time) {
				t.Helper()
				if _, err := s.RecordReports(ctx, store.ReportBatch{Now: now, Sequenced: []store.SequencedUsage{{Client: client, Seq: 9, Usage: []store.UsageIncrement{
					{Budget: client, Month: end, Hour: 1, Requests: 1, Sampled: 1},
				}}}}); err != nil {
					t.Fatal(err)
				}
			}
			report(tt.first)
			if _, err := s.RecordReports(ctx, store.ReportBatch{Now: later(tt.first, tt.again), Sequenced: []store.SequencedUsage{{Client: "other", Seq: uint64(i + 1), Usage: []store.UsageIncrement{
				{Budget: "other", Month: end, Hour: 1, Requests: 1, Sampled: 1},
			}}}}); err != nil {
				t.Fatal(err)
			}
			report(tt.again)
			u, err := s.Usage(ctx, client, end)
			if err != nil {
				t.Fatal(err)
			}
			if _, sampled := u.Totals(); sampled != 1 {
				t.Errorf("billed %v sampled, want 1: the report once", sampled)
			}
		})
	}
}

// TestEditsSentTwiceApplyOnce: a rule or budget edit or an alert whose
// script runs twice is applied once and answers as its first run did, not
// "already exists", a conflict with itself or "fired before".
func TestEditsSentTwiceApplyOnce(t *testing.T) {
	s, hook := storeSendingTwice(t)
	ctx := t.Context()
	version, err := s.RulesVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := rules.Rule{Name: "r", Priority: 1, FixedRate: 0.1, ReservoirSize: 1}
	b := budget.Budget{Name: "b", MonthlyAmountMicros: 100 * budget.MicrosPerUnit}
	var alert budget.Alert
	steps := []struct {
		name string
		run  func() error
	}{
		{"create rule", func() error { _, err := s.CreateRule(ctx, r, "alice"); return err }},
		{"update rule", func() error {
			r.FixedRate = 0.2
			_, err := s.UpdateRule(ctx, r, 1, "alice")
			return err
		}},
		{"delete rule", func() error { return s.DeleteRule(ctx, r.Name, 2, "alice") }},
		{"create budget", func() error { _, err := s.CreateBudget(ctx, b); return err }},
		{"update budget", func() error {
			b.MonthlyAmountMicros = 200 * budget.MicrosPerUnit
			_, err := s.UpdateBudget(ctx, b, 1)
			return err
		}},
		{"delete budget", func() error { return s.DeleteBudget(ctx, b.Name, 2) }},
		{"fire alert", func() error {
			a, fired, err := s.FireAlert(ctx, budget.Alert{Budget: "b", Kind: budget.AlertSpend, Threshold: 0.5, MonthStart: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)})
			if err == nil && (!fired || a.ID == "") {
				err = fmt.Errorf("fired %v with ID %q, want the new alert's ID", fired, a.ID)
			}
			alert = a
			return err
		}},
	}
	for _, st := range steps {
		runs := hook.runs.Load()
		hook.on.Store(true)
		err := st.run()
		hook.on.Store(false)
		if err != nil {
			t.Errorf("%s, sent twice: %v", st.name, err)
		}
		if hook.runs.Load() == runs {
			t.Errorf("%s: the script did not run twice", st.name)
		}
	}

	if got, err := s.RulesVersion(ctx); err != nil || got != version+3 {
		t.Errorf("rules version %d (%v), want %d: three edits, each once", got, err, version+3)
	}
	if page, err := s.RuleEvents(ctx, r.Name, 0, ""); err != nil || len(page.Events) != 3 {
		t.Errorf("%d audit entries (%v), want 3", len(page.Events), err)
	}
	if page, err := s.Alerts(ctx, "b", 0, ""); err != nil || len(page.Alerts) != 1 || page.Alerts[0].ID != alert.ID {
		t.Errorf("alerts %+v (%v), want the one alert %s", page.Alerts, err, alert.ID)
	}
}

// TestRecordReportsNotAppliedPastItsDeadline: a batch sent to a frozen
// Redis, whose caller gave up on it, must not land when Redis thaws: its
// replica has answered its clients without it (renewing their last quotas),
// and the batch's grants and retractions would then count quotas nobody
// holds and retract figures twice.
func TestRecordReportsNotAppliedPastItsDeadline(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, srv.Client(t), redisstore.Options{})
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	ledger := reservoir.NewLedger(10 * time.Second)
	batch := func(rate float64) store.ReportBatch {
		return store.ReportBatch{Now: now, Ledger: ledger,
			Rates: []store.RateUpdate{{Rule: "r", Add: reservoir.Receipt{Bucket: ledger.Bucket(now), Rate: rate}, Reservoir: 5}},
			Usage: []store.UsageIncrement{{Budget: "b", Month: now, Hour: 10, Rule: "r", Requests: 100, Sampled: 3}},
		}
	}
	// One batch first: the connection is made, and the store learns Redis's
	// clock.
	if _, err := s.RecordReports(t.Context(), batch(1)); err != nil {
		t.Fatal(err)
	}
	srv.Freeze()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	_, err := s.RecordReports(ctx, batch(1000))
	cancel()
	srv.Thaw()
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("a batch to a frozen Redis: %v, want ErrUnavailable", err)
	}
	// Whatever Redis read while frozen has run by the time it answers this.
	got, err := s.RecordReports(t.Context(), store.ReportBatch{Now: now, Ledger: ledger,
		Rates: []store.RateUpdate{{Rule: "r", Add: reservoir.Receipt{Bucket: ledger.Bucket(now)}}}})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Fleet != 1 {
		t.Errorf("fleet rate %v after the thaw, want 1: the batch given up on landed", got[0].Fleet)
	}
	u, err := s.Usage(t.Context(), "b", now)
	if err != nil {
		t.Fatal(err)
	}
	if r := u.Rules["r"]; r.Requests != 100 {
		t.Errorf("usage %+v after the thaw, want the first batch's 100 requests only", r)
	}
}

// TestLedgerScriptMatchesApply: the Lua ledger script and
// reservoir.Ledger.Apply (which the embedded store runs) give the same
// fleet rates, quotas, sampled rates and instance counts for the same
// batches: a fleet of clients reporting
// at random phases with their receipts, skewed rates, reads, clients that
// vanish, and outages that nobody writes through; and they bill the same
// budget usage, numbered reports sent again among it.
func TestLedgerScriptMatchesApply(t *testing.T) {
	srv := redistest.Start(t)
	rs := newStore(t, srv.Client(t), redisstore.Options{})
	ms, err := memstore.New(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	l := reservoir.Ledger{Interval: 10 * time.Second, Retain: 3}
	rng := rand.New(rand.NewPCG(5, 6))
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	type client struct {
		rule    string
		receipt *reservoir.Receipt
		seq     uint64
	}
	clients := make([]client, 40)
	for i := range clients {
		clients[i].rule = []string{"a", "b", "c"}[i%3]
	}
	var down time.Time
	for step := range 300 {
		now = now.Add(time.Duration(rng.IntN(4000)) * time.Millisecond)
		switch {
		case step%100 == 50: // an outage of a minute that nobody writes through
			down = now
			now = now.Add(time.Minute)
		case step%100 == 60:
			down = time.Time{}
		}
		var ups []store.RateUpdate
		var who []int
		picked := map[int]bool{}
		var seqs []store.SequencedUsage
		for range 1 + rng.IntN(6) {
			i := rng.IntN(len(clients))
			if picked[i] {
				// A receipt is taken once (receipt.Guard), so a client's
				// receipt is never retracted twice in one batch: the
				// script nets a batch's retractions before it floors a
				// bucket at zero, and Apply floors after each one.
				continue
			}
			picked[i] = true
			c := &clients[i]
			rate := math.Round(rng.ExpFloat64()*1000) / 10
			u := store.RateUpdate{Rule: c.rule, Add: reservoir.Receipt{Bucket: l.Bucket(now), Rate: rate, Sampled: math.Round(rate*rng.Float64()) / 10}, Reservoir: 10, Retract: c.receipt, Client: true}
			if rng.IntN(10) == 0 {
				u = store.RateUpdate{Rule: c.rule, Add: reservoir.Receipt{Bucket: l.Bucket(now)}} // a read
				i = -1
			}
			ups = append(ups, u)
			who = append(who, i)
			if rng.IntN(3) > 0 { // else the last report again
				c.seq++
			}
			seq := c.seq
			if seq > 1 && rng.IntN(4) == 0 {
				seq-- // an older one
			}
			if seq > 0 {
				seqs = append(seqs, store.SequencedUsage{Client: fmt.Sprint("c", i), Seq: seq, Usage: []store.UsageIncrement{
					{Budget: "b", Month: now, Hour: 3, Rule: c.rule, Requests: 1 + rng.Int64N(100), Sampled: 1},
				}})
			}
		}
		batch := store.ReportBatch{Now: now, Ledger: l, Rates: ups, DownSince: down, Sequenced: seqs}
		got, err := rs.RecordReports(t.Context(), batch)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ms.RecordReports(t.Context(), batch)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateApprox(1e-9, 1e-9)); diff != "" {
			t.Fatalf("step %d: Redis and Apply differ (-Apply +Redis):\n%s", step, diff)
		}
		for k, i := range who {
			if i >= 0 {
				clients[i].receipt = &reservoir.Receipt{Bucket: ups[k].Add.Bucket, Rate: ups[k].Add.Rate, Quota: got[k].Quota, Sampled: ups[k].Add.Sampled}
			}
		}
	}
	got, err := rs.Usage(t.Context(), "b", now)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ms.Usage(t.Context(), "b", now)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("usage: Redis and the embedded store differ (-embedded +Redis):\n%s", diff)
	}
	if _, sampled := got.Totals(); sampled == 0 {
		t.Error("no usage billed")
	}
}

// TestMaxRulesOverTheLimit: a store cannot be opened to hold more rules than
// an SDK is sure to accept.
func TestMaxRulesOverTheLimit(t *testing.T) {
	srv := redistest.Start(t)
	if _, err := redisstore.New(t.Context(), srv.Client(t), redisstore.Options{MaxRules: rules.MaxRules + 1}); err == nil {
		t.Error("New with MaxRules over rules.MaxRules succeeded")
	}
}

// TestLoggerIsDebug: go-redis's own lines go to slog at DEBUG, so an outage
// does not print one per failed dial at the default level.
func TestLoggerIsDebug(t *testing.T) {
	var buf strings.Builder
	redisstore.Logger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))).
		Printf(t.Context(), "redis: connection pool: failed to dial after %d attempts", 1)
	if buf.Len() != 0 {
		t.Errorf("at INFO the logger wrote %q", buf.String())
	}
	redisstore.Logger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))).
		Printf(t.Context(), "redis: connection pool: failed to dial after %d attempts", 1)
	if got := buf.String(); !strings.Contains(got, "level=DEBUG") || !strings.Contains(got, "failed to dial after 1 attempts") || !strings.Contains(got, "source=go-redis") {
		t.Errorf("at DEBUG the logger wrote %q", got)
	}
}

// TestPersistence reads what Redis keeps on disk, also where CONFIG is
// refused, as managed services do.
func TestPersistence(t *testing.T) {
	none, aof := redistest.Start(t), redistest.StartWith(t, redistest.Options{AppendOnly: true})
	// A user without CONFIG, as on a managed Redis.
	limited := func(t *testing.T, srv *redistest.Server) redis.UniversalClient {
		if err := srv.Client(t).Do(t.Context(), "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-config").Err(); err != nil {
			t.Fatal(err)
		}
		c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "app", Password: "pw", MaxRetries: 1})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	tests := []struct {
		name     string
		client   func(t *testing.T) redis.UniversalClient
		want     redisstore.Persistence
		wantNone bool
	}{
		{"nothing", func(t *testing.T) redis.UniversalClient { return none.Client(t) }, redisstore.Persistence{Known: true}, true},
		{"append-only file", func(t *testing.T) redis.UniversalClient { return aof.Client(t) }, redisstore.Persistence{Known: true, AppendOnly: true}, false},
		{"CONFIG refused, nothing", func(t *testing.T) redis.UniversalClient { return limited(t, none) }, redisstore.Persistence{}, false},
		{"CONFIG refused, append-only file", func(t *testing.T) redis.UniversalClient { return limited(t, aof) }, redisstore.Persistence{Known: true, AppendOnly: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t, tt.client(t), redisstore.Options{})
			got, err := s.Persistence(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("Persistence (-want +got):\n%s", d)
			}
			if got.None() != tt.wantNone {
				t.Errorf("None() = %v, want %v", got.None(), tt.wantNone)
			}
		})
	}

	t.Run("unreachable", func(t *testing.T) {
		srv := redistest.Start(t)
		s := newStore(t, srv.Client(t), redisstore.Options{})
		srv.Stop()
		if _, err := s.Persistence(t.Context()); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("Persistence with Redis stopped: %v, want ErrUnavailable", err)
		}
	})
}
