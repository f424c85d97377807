package catalog_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/pkg/rules"
	"github.com/tracesampling/controlplane/pkg/rules/rulepb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait for the catalog to catch up. Pub/sub delivers
// in milliseconds; after a Redis restart the catalog retries at least every
// second and resubscribes within watchMaxBackoff (2 s).
const waitTimeout = 15 * time.Second

// noPoll is a poll interval no test lasts, so that whatever a test sees
// arrived through a change notification (or a Kick), not through the poll.
const noPoll = time.Hour

func newMemStore(t *testing.T) *memstore.Store {
	t.Helper()
	st, err := memstore.New(memstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func newRedisStore(t *testing.T, srv *redistest.Server) *redisstore.Store {
	t.Helper()
	st, err := redisstore.New(t.Context(), srv.Client(t), redisstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// ruleStore is the part of both stores the tests edit through.
type ruleStore interface {
	Rule(ctx context.Context, name string) (rules.Rule, error)
	CreateRule(ctx context.Context, r rules.Rule, actor string) (rules.Rule, error)
	UpdateRule(ctx context.Context, r rules.Rule, ifRevision int64, actor string) (rules.Rule, error)
	RulesVersion(ctx context.Context) (int64, error)
}

func rule(name string, priority int32, service, typ string) rules.Rule {
	return rules.Rule{
		Name: name, Priority: priority, FixedRate: 0.1, ReservoirSize: 1,
		ServiceName: service, ServiceType: typ,
	}.Normalize()
}

func create(t *testing.T, st ruleStore, r rules.Rule) {
	t.Helper()
	if _, err := st.CreateRule(t.Context(), r, "test"); err != nil {
		t.Fatal(err)
	}
}

// rerate changes a rule's fixed rate, so that the rules version moves.
func rerate(t *testing.T, st ruleStore, name string, rate float64) {
	t.Helper()
	cur, err := st.Rule(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	cur.FixedRate = rate
	if _, err := st.UpdateRule(t.Context(), cur, cur.Revision, "test"); err != nil {
		t.Fatal(err)
	}
}

func version(t *testing.T, st ruleStore) int64 {
	t.Helper()
	v, err := st.RulesVersion(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func names(rs []rules.Rule) []string {
	out := make([]string, len(rs))
	for i := range rs {
		out[i] = rs[i].Name
	}
	return out
}

func setNames(rs *pb.RuleSet) []string {
	out := make([]string, len(rs.GetRules()))
	for i, r := range rs.GetRules() {
		out[i] = r.GetName()
	}
	return out
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// logSink is a slog handler that hands each message to the test, so that a
// test can wait for the catalog to report something instead of sleeping.
type logSink chan string

func (s logSink) Enabled(context.Context, slog.Level) bool { return true }
func (s logSink) WithAttrs([]slog.Attr) slog.Handler       { return s }
func (s logSink) WithGroup(string) slog.Handler            { return s }
func (s logSink) Handle(_ context.Context, r slog.Record) error {
	select {
	case s <- r.Message:
	default: // never block the catalog; the buffer is far larger than any test needs
	}
	return nil
}

// waitLog waits until msg is logged.
func waitLog(t *testing.T, logs logSink, msg string) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		select {
		case got := <-logs:
			if got == msg {
				return
			}
		case <-deadline.C:
			t.Fatalf("%q not logged within %v", msg, waitTimeout)
		}
	}
}

// waitView waits until the catalog's view satisfies cond, checking again each
// time w is signalled. The catalog stores a view before it signals, so no
// change can slip between a check and the wait.
func waitView(t *testing.T, c *catalog.Catalog, w *catalog.Watcher, what string, cond func(*catalog.View) bool) *catalog.View {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		if v := c.Current(); cond(v) {
			return v
		}
		select {
		case <-w.C:
		case <-deadline.C:
			v := c.Current()
			t.Fatalf("view never %s within %v; it is version %d with %v", what, waitTimeout, v.Version, names(v.Rules))
		}
	}
}

// runCatalog runs c.Run until the test ends, and checks that it returns
// ctx's error once its context is cancelled.
func runCatalog(t *testing.T, c *catalog.Catalog) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run returned %v, want context.Canceled", err)
			}
		case <-time.After(waitTimeout):
			t.Errorf("Run did not return within %v of its context being cancelled", waitTimeout)
		}
	})
}

func TestLoad(t *testing.T) {
	st := newMemStore(t)
	create(t, st, rule("search", 20, "shop-api", ""))
	create(t, st, rule("checkout", 10, "shop-*", ""))
	c := catalog.New(st, catalog.Options{Poll: noPoll, Logger: discard()})

	if v := c.Current(); v == nil || v.Version != 0 || len(v.Rules) != 0 {
		t.Fatalf("before Load: %+v, want an empty view at version 0", v)
	}
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	v := c.Current()
	if want := version(t, st); v.Version != want {
		t.Errorf("Version = %d, want the store's %d", v.Version, want)
	}
	if got, want := names(v.Rules), []string{"checkout", "search", rules.DefaultName}; !slices.Equal(got, want) {
		t.Errorf("Rules = %v, want %v (matching order)", got, want)
	}
	if r := v.Rule("checkout"); r == nil || r.ServiceName != "shop-*" || r.Revision != 1 {
		t.Errorf(`Rule("checkout") = %+v`, r)
	}
	if r := v.Rule("nope"); r != nil {
		t.Errorf(`Rule("nope") = %+v, want nil`, r)
	}

	// Nothing changed: the view is kept, not rebuilt.
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if c.Current() != v {
		t.Error("a Load without a change replaced the view")
	}

	rerate(t, st, "checkout", 0.7)
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	next := c.Current()
	if next == v || next.Version != version(t, st) || next.Rule("checkout").FixedRate != 0.7 {
		t.Errorf("after an edit: version %d, checkout %+v; want version %d, fixed rate 0.7",
			next.Version, next.Rule("checkout"), version(t, st))
	}
	if v.Rule("checkout").FixedRate != 0.1 {
		t.Error("an edit changed an older view; views must be immutable")
	}
}

func TestLoadFailsWhenTheStoreIsClosed(t *testing.T) {
	st := newMemStore(t)
	c := catalog.New(st, catalog.Options{Poll: noPoll, Logger: discard()})
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	before := c.Current()
	_ = st.Close()
	if err := c.Load(t.Context()); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Load on a closed store = %v, want store.ErrUnavailable", err)
	}
	if c.Current() != before {
		t.Error("a failed Load replaced the view")
	}
}

func TestForService(t *testing.T) {
	st := newMemStore(t)
	create(t, st, rule("checkout", 10, "shop-*", ""))
	create(t, st, rule("search", 20, "shop-api", ""))
	create(t, st, rule("ecs-payments", 5, "payments", "AWS::ECS::Container"))
	c := catalog.New(st, catalog.Options{Poll: noPoll, Logger: discard()})
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	v := c.Current()

	for _, tc := range []struct {
		service, typ string
		want         []string
	}{
		{"shop-api", "", []string{"checkout", "search", "Default"}},
		{"SHOP-API", "AWS::EC2::Instance", []string{"checkout", "search", "Default"}}, // globs ignore case
		{"shop-web", "", []string{"checkout", "Default"}},
		{"shop", "", []string{"Default"}},
		{"payments", "AWS::ECS::Container", []string{"ecs-payments", "Default"}},
		{"payments", "aws::ecs::container", []string{"ecs-payments", "Default"}},
		{"payments", "AWS::EC2::Instance", []string{"Default"}},
		{"payments", "", []string{"Default"}},
	} {
		t.Run(tc.service+"/"+tc.typ, func(t *testing.T) {
			rs := v.ForService(tc.service, tc.typ, nil)
			if got := setNames(rs); !slices.Equal(got, tc.want) {
				t.Errorf("ForService(%q, %q) = %v, want %v", tc.service, tc.typ, got, tc.want)
			}
			if rs.GetRulesVersion() != v.Version {
				t.Errorf("RulesVersion = %d, want the view's %d", rs.GetRulesVersion(), v.Version)
			}
			if again := v.ForService(tc.service, tc.typ, nil); again != rs {
				t.Error("the second call returned a new rule set, not the cached one")
			}
		})
	}

	// After an edit the new view answers anew; the old one keeps its answer.
	old := v.ForService("shop-api", "", nil)
	cur, err := st.Rule(t.Context(), "checkout")
	if err != nil {
		t.Fatal(err)
	}
	cur.ServiceName = "store-*"
	if _, err := st.UpdateRule(t.Context(), cur, cur.Revision, "test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	nv := c.Current()
	rs := nv.ForService("shop-api", "", nil)
	if rs == old || rs.GetRulesVersion() != nv.Version || nv.Version <= v.Version {
		t.Errorf("after the edit: the rule set is version %d (view %d, old view %d), same pointer: %v",
			rs.GetRulesVersion(), nv.Version, v.Version, rs == old)
	}
	if got, want := setNames(rs), []string{"search", "Default"}; !slices.Equal(got, want) {
		t.Errorf("after the edit ForService(shop-api) = %v, want %v", got, want)
	}
	if v.ForService("shop-api", "", nil) != old || !slices.Equal(setNames(old), []string{"checkout", "search", "Default"}) {
		t.Error("the old view's cached rule set changed")
	}
}

// TestForServiceByResource: a service's instances get the rules whose
// resource globs match their resource; instances whose resources differ
// only in attributes no rule names (service.instance.id) share one rule
// set, and those the rules tell apart do not.
func TestForServiceByResource(t *testing.T) {
	st := newMemStore(t)
	prod := rule("shop-prod", 10, "shop", "")
	prod.ResourceAttributes = map[string]string{"deployment.environment.name": "production"}
	staging := rule("shop-staging", 10, "shop", "")
	staging.ResourceAttributes = map[string]string{"deployment.environment.name": "staging"}
	latest := rule("shop-latest", 5, "shop", "")
	latest.ResourceAttributes = map[string]string{"deployment.environment.name": "*", "service.version": "2.5.*"}
	for _, r := range []rules.Rule{prod, staging, latest} {
		create(t, st, r)
	}
	c := catalog.New(st, catalog.Options{Poll: noPoll, Logger: discard()})
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	v := c.Current()
	res := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		resource map[string]string
		want     []string
	}{
		{"no resource", nil, []string{"Default"}},
		{"production", res("deployment.environment.name", "production"), []string{"shop-prod", "Default"}},
		{"PRODUCTION", res("deployment.environment.name", "PRODUCTION"), []string{"shop-prod", "Default"}},
		{"staging", res("deployment.environment.name", "staging", "service.version", "2.4.0"), []string{"shop-staging", "Default"}},
		{"staging, latest", res("deployment.environment.name", "staging", "service.version", "2.5.1"), []string{"shop-latest", "shop-staging", "Default"}},
		{"latest without an environment", res("service.version", "2.5.1"), []string{"shop-latest", "Default"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := setNames(v.ForService("shop", "", tc.resource)); !slices.Equal(got, tc.want) {
				t.Errorf("ForService = %v, want %v", got, tc.want)
			}
			if got := setNames(c.RuleSet("shop", "", tc.resource, time.Now())); !slices.Equal(got, tc.want) {
				t.Errorf("RuleSet = %v, want %v", got, tc.want)
			}
		})
	}
	a := v.ForService("shop", "", res("deployment.environment.name", "production", "service.instance.id", "a"))
	b := v.ForService("shop", "", res("deployment.environment.name", "production", "service.instance.id", "b", "host.name", "h"))
	if a != b {
		t.Error("two production instances that differ only in attributes no rule names got rule sets of their own")
	}
	if s := v.ForService("shop", "", res("deployment.environment.name", "staging")); s == a {
		t.Error("a staging instance shares the production instances' rule set")
	}
	// A value and its absence, or values that run into each other, are
	// told apart.
	if x, y := v.ForService("shop", "", res("deployment.environment.name", "")), v.ForService("shop", "", nil); x == y {
		t.Error("an empty environment and none share a cached rule set")
	}
	if x, y := c.RuleSet("shop", "", res("deployment.environment.name", "production"), time.Now()), c.RuleSet("shop", "", res("deployment.environment.name", "production", "k8s.pod.name", "p1"), time.Now()); x != y {
		t.Error("RuleSet: two production instances got rule sets of their own")
	}
}

// TestForServiceSendsWhatSDKsUse: rule sets leave out description and
// labels, keep every field that decides, and share each rule between
// services.
func TestForServiceSendsWhatSDKsUse(t *testing.T) {
	st := newMemStore(t)
	r := rule("checkout", 10, "shop-*", "")
	r.Host, r.HTTPMethod, r.URLPath, r.ResourceARN = "*.example.com", "POST", "/checkout*", "arn:*"
	r.Attributes = map[string]string{"tier": "gold"}
	// SDKs match resource globs too (this one matches any instance).
	r.ResourceAttributes = map[string]string{"deployment.environment.name": "*"}
	r.Description, r.Labels = "for people", map[string]string{"team": "payments"}
	create(t, st, r)
	c := catalog.New(st, catalog.Options{Poll: noPoll, Logger: discard()})
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	v := c.Current()
	api, web := v.ForService("shop-api", "", nil), v.ForService("shop-web", "", nil)
	got := rulepb.FromProto(api.GetRules()[0])
	want := r
	want.Description, want.Labels = "", nil
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the rule as sent (-want +got):\n%s", diff)
	}
	if api.GetRules()[0] != web.GetRules()[0] {
		t.Error("two services' rule sets hold copies of one rule, not the same one")
	}
}

// A stream fan-out wakes many watchers at once and they all ask for the
// same service; each must get the one shared rule set.
func TestForServiceConcurrentCallersShareOneSet(t *testing.T) {
	st := newMemStore(t)
	create(t, st, rule("checkout", 10, "shop-*", ""))
	c := catalog.New(st, catalog.Options{Poll: noPoll, Logger: discard()})
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	for range 20 { // a fresh view each round, so every round starts uncached
		rerate(t, st, "checkout", 0.2)
		if err := c.Load(t.Context()); err != nil {
			t.Fatal(err)
		}
		v := c.Current()
		const callers = 32
		got := make([]*pb.RuleSet, callers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() {
				<-start
				got[i] = v.ForService("shop-api", "", nil)
			})
		}
		close(start)
		wg.Wait()
		for i, rs := range got {
			if rs != got[0] {
				t.Fatalf("caller %d got a different rule set from caller 0", i)
			}
		}
		if v.ForService("shop-api", "", nil) != got[0] {
			t.Fatal("the cached rule set is not the one the callers got")
		}
	}
}

func TestWatch(t *testing.T) {
	st := newMemStore(t)
	create(t, st, rule("checkout", 10, "shop-*", ""))
	c := catalog.New(st, catalog.Options{Poll: noPoll, Logger: discard()})
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	w := c.Watch()
	slow := c.Watch()
	if n := c.Watchers(); n != 2 {
		t.Fatalf("Watchers() = %d, want 2", n)
	}

	rerate(t, st, "checkout", 0.2)
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.C:
	case <-time.After(waitTimeout):
		t.Fatal("no signal after an edit")
	}
	// A Load that finds nothing new signals nothing.
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.C:
		t.Error("a signal without a change")
	default:
	}

	// The slow watcher never reads: many edits leave it one signal, and the
	// view it then reads is the latest.
	for i := range 10 {
		rerate(t, st, "checkout", float64(i)/10)
		if err := c.Load(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(slow.C); n != 1 {
		t.Fatalf("the slow watcher holds %d signals after 11 edits, want 1", n)
	}
	<-slow.C
	select {
	case <-slow.C:
		t.Error("the slow watcher got a second signal")
	default:
	}
	if v := c.Current(); v.Version != version(t, st) || v.Rule("checkout").FixedRate != 0.9 {
		t.Errorf("the latest view is version %d with fixed rate %v, want version %d, 0.9",
			v.Version, v.Rule("checkout").FixedRate, version(t, st))
	}

	// Close unregisters: a closed watcher is not signalled.
	slow.Close()
	slow.Close() // twice is harmless
	if n := c.Watchers(); n != 1 {
		t.Errorf("Watchers() = %d after Close, want 1", n)
	}
	for len(w.C) > 0 {
		<-w.C
	}
	rerate(t, st, "checkout", 0.5)
	if err := c.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(slow.C) != 0 {
		t.Error("a closed watcher was signalled")
	}
	if len(w.C) != 1 {
		t.Error("the open watcher was not signalled")
	}
	w.Close()
	if n := c.Watchers(); n != 0 {
		t.Errorf("Watchers() = %d after closing both, want 0", n)
	}
}

func TestRunFollowsMemstoreAndStops(t *testing.T) {
	st := newMemStore(t)
	c := catalog.New(st, catalog.Options{Poll: noPoll, Logger: discard()})
	w := c.Watch()
	defer w.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	waitView(t, c, w, "loaded", func(v *catalog.View) bool { return v.Version == version(t, st) })
	create(t, st, rule("checkout", 10, "shop-*", ""))
	waitView(t, c, w, "to hold checkout", func(v *catalog.View) bool { return v.Rule("checkout") != nil })

	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v, want context.Canceled", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return after its context was cancelled")
	}
}

// TestRunFollowsAnotherReplica edits rules through a second store on the same
// Redis, as another replica would: the catalog hears of it by pub/sub.
func TestRunFollowsAnotherReplica(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	mine, other := newRedisStore(t, srv), newRedisStore(t, srv)
	logs := make(logSink, 1000)
	c := catalog.New(mine, catalog.Options{Poll: noPoll, Logger: slog.New(logs)})
	w := c.Watch()
	defer w.Close()
	runCatalog(t, c)

	waitView(t, c, w, "loaded", func(v *catalog.View) bool { return v.Rule(rules.DefaultName) != nil })
	create(t, other, rule("checkout", 10, "shop-*", ""))
	waitView(t, c, w, "to hold checkout", func(v *catalog.View) bool { return v.Rule("checkout") != nil })
	rerate(t, other, "checkout", 0.3)
	last := waitView(t, c, w, "to hold the re-rated checkout", func(v *catalog.View) bool {
		return v.Rule("checkout").FixedRate == 0.3
	})
	if want := version(t, other); last.Version != want {
		t.Errorf("view version %d, want the store's %d", last.Version, want)
	}

	// Redis goes away: the catalog fails to reload and keeps its view.
	srv.Stop()
	c.Kick()
	waitLog(t, logs, "cannot reload rules; serving the last ones")
	if err := c.Load(t.Context()); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Load with Redis stopped = %v, want store.ErrUnavailable", err)
	}
	if c.Current() != last {
		t.Fatal("the view changed while Redis was down")
	}
	if rs := last.ForService("shop-api", "", nil); !slices.Equal(setNames(rs), []string{"checkout", "Default"}) {
		t.Errorf("while Redis is down ForService = %v", setNames(rs))
	}

	// Redis is back with its data; an edit made now is followed.
	srv.Restart()
	waitLog(t, logs, "rules reloaded again")
	create(t, other, rule("search", 20, "shop-api", ""))
	v := waitView(t, c, w, "to hold search", func(v *catalog.View) bool { return v.Rule("search") != nil })
	if v.Version <= last.Version || v.Rule("checkout") == nil {
		t.Errorf("after the restart: version %d (was %d), rules %v", v.Version, last.Version, names(v.Rules))
	}
}

// TestRunFollowsLostData: Redis loses every key (a failover to an empty
// replica, a restart without persistence) and a replica seeds the Default
// rule again. The version it starts from is above every one handed out
// before, so a client that knows an old version is never told its stale
// rules are current, and the view follows at once.
func TestRunFollowsLostData(t *testing.T) {
	srv := redistest.Start(t)
	mine, other := newRedisStore(t, srv), newRedisStore(t, srv)
	c := catalog.New(mine, catalog.Options{Poll: noPoll, Logger: discard()})
	w := c.Watch()
	defer w.Close()
	runCatalog(t, c)

	create(t, other, rule("checkout", 10, "shop-*", ""))
	create(t, other, rule("search", 20, "shop-api", ""))
	rerate(t, other, "checkout", 0.4)
	high := version(t, other)
	waitView(t, c, w, "at the latest version", func(v *catalog.View) bool { return v.Version == high })

	if err := srv.Client(t).FlushAll(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	newRedisStore(t, srv) // seeds the Default rule, and announces it
	seeded := version(t, other)
	if seeded <= high {
		t.Fatalf("after FLUSHALL and a new store the version is %d, not above %d: it was handed out before", seeded, high)
	}
	v := waitView(t, c, w, "at the new version", func(v *catalog.View) bool { return v.Version == seeded })
	if got := names(v.Rules); !slices.Equal(got, []string{rules.DefaultName}) {
		t.Errorf("after the data loss the view holds %v, want only the Default rule", got)
	}
	if rs := v.ForService("shop-api", "", nil); rs.GetRulesVersion() != seeded || !slices.Equal(setNames(rs), []string{"Default"}) {
		t.Errorf("after the data loss ForService = version %d, %v", rs.GetRulesVersion(), setNames(rs))
	}

	// And it follows edits from there on.
	create(t, other, rule("login", 15, "*", ""))
	waitView(t, c, w, "to hold login", func(v *catalog.View) bool { return v.Rule("login") != nil && v.Version == seeded+1 })
}

// TestFactorsPerRule: a budget's decision holds a plan per rule; targets get
// their rule's factors, a rule the decision did not plan gets the strictest,
// and a decision made for an earlier budget of the same name, or an earlier
// month, counts for nothing.
func TestFactorsPerRule(t *testing.T) {
	st := newMemStore(t)
	ctx := t.Context()
	now := time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)
	b, err := st.CreateBudget(ctx, budget.Budget{Name: "shop", MonthlyAmountMicros: 1, Scope: budget.Scope{Services: []string{"shop"}}, UID: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	state := func(uid string, month time.Time) budget.State {
		return budget.State{Budget: b.Name, BudgetUID: uid, MonthStart: month, Computed: now, Decision: budget.Decision{
			FixedRateFactor: 0, ReservoirFactor: 0.1,
			Rules: []budget.RulePlan{
				{Name: "health", FixedRateFactor: 0, ReservoirFactor: 0.1},
				{Name: "checkout", FixedRateFactor: 1, ReservoirFactor: 1},
			},
		}}
	}
	c := catalog.New(st, catalog.Options{Poll: noPoll, Logger: discard()})
	tests := []struct {
		name    string
		state   budget.State
		service string
		rule    string
		f, g    float64
	}{
		{"a cut rule", state("u1", budget.MonthStart(now)), "shop", "health", 0, 0.1},
		{"a kept rule", state("u1", budget.MonthStart(now)), "shop", "checkout", 1, 1},
		{"a rule not planned", state("u1", budget.MonthStart(now)), "shop", "search", 0, 0.1},
		{"out of scope", state("u1", budget.MonthStart(now)), "ads", "health", 1, 1},
		{"another incarnation's decision", state("u0", budget.MonthStart(now)), "shop", "health", 1, 1},
		{"last month's decision", state("u1", budget.MonthStart(now).AddDate(0, -1, 0)), "shop", "health", 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := st.PutStates(ctx, []budget.State{tt.state}); err != nil {
				t.Fatal(err)
			}
			if err := c.LoadBudgets(ctx); err != nil {
				t.Fatal(err)
			}
			r := rule(tt.rule, 1, "*", "")
			if f, g := c.CurrentBudgets().Factors(tt.service, &r, now); f != tt.f || g != tt.g {
				t.Errorf("Factors(%s, %s) = %v, %v; want %v, %v", tt.service, tt.rule, f, g, tt.f, tt.g)
			}
		})
	}
}

// TestRuleSetCarriesRatesInForce: the rule set a service gets lists the
// rules its budgets lower, with the fixed rate in force and the reservoir
// factor (the Default rule, which the decision did not plan, at its
// strictest factors); other services' sets list none. It is cached until the rules or
// the decisions change.
func TestRuleSetCarriesRatesInForce(t *testing.T) {
	st := newMemStore(t)
	ctx := t.Context()
	now := time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC)
	create(t, st, rule("health", 1, "*", ""))
	create(t, st, rule("checkout", 2, "*", ""))
	if _, err := st.CreateBudget(ctx, budget.Budget{Name: "shop", MonthlyAmountMicros: 1, Scope: budget.Scope{Services: []string{"shop"}}, UID: "u1"}); err != nil {
		t.Fatal(err)
	}
	c := catalog.New(st, catalog.Options{Poll: noPoll, Logger: discard()})
	if err := c.Load(ctx); err != nil {
		t.Fatal(err)
	}
	decide := func(health budget.RulePlan) {
		t.Helper()
		if err := st.PutStates(ctx, []budget.State{{Budget: "shop", BudgetUID: "u1", MonthStart: budget.MonthStart(now), Computed: now, Decision: budget.Decision{
			FixedRateFactor: health.FixedRateFactor, ReservoirFactor: health.ReservoirFactor,
			Rules: []budget.RulePlan{health, {Name: "checkout", FixedRateFactor: 1, ReservoirFactor: 1}},
		}}}); err != nil {
			t.Fatal(err)
		}
		if err := c.LoadBudgets(ctx); err != nil {
			t.Fatal(err)
		}
	}
	decide(budget.RulePlan{Name: "health", FixedRateFactor: 0.5, ReservoirFactor: 0.25})
	shop := c.RuleSet("shop", "", nil, now)
	if got, want := shop.GetRatesInForce(), []*pb.RuleRates{{RuleName: "health", FixedRate: 0.05, ReservoirFactor: 0.25}, {RuleName: "Default", FixedRate: 0.025, ReservoirFactor: 0.25}}; !cmp.Equal(got, want, protocmp.Transform()) {
		t.Errorf("shop's rates in force: %v, want %v", got, want)
	}
	if got := c.RuleSet("ads", "", nil, now).GetRatesInForce(); len(got) != 0 {
		t.Errorf("ads, out of the budget's scope: rates in force %v, want none", got)
	}
	if got := setNames(shop); !slices.Equal(got, setNames(c.Current().ForService("shop", "", nil))) {
		t.Errorf("rules %v, want the view's for the service", got)
	}
	if c.RuleSet("shop", "", nil, now) != shop {
		t.Error("asked again: a new rule set, not the cached one")
	}
	if got := c.RuleSet("shop", "", nil, now.AddDate(0, 1, 0)).GetRatesInForce(); len(got) != 0 {
		t.Errorf("next month, before a decision: rates in force %v, want none", got)
	}

	decide(budget.RulePlan{Name: "health", FixedRateFactor: 0, ReservoirFactor: 0})
	if got, want := c.RuleSet("shop", "", nil, now).GetRatesInForce(), []*pb.RuleRates{{RuleName: "health"}, {RuleName: "Default"}}; !cmp.Equal(got, want, protocmp.Transform()) {
		t.Errorf("after a new decision: %v, want %v", got, want)
	}
	rerate(t, st, "checkout", 0.2)
	if err := c.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.RuleSet("shop", "", nil, now); got.GetRulesVersion() != c.Current().Version || len(got.GetRatesInForce()) != 2 {
		t.Errorf("after an edit: version %d (want %d), rates in force %v", got.GetRulesVersion(), c.Current().Version, got.GetRatesInForce())
	}
}
