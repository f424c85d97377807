package xraycore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/internal/fleet"
	"github.com/tracesampling/controlplane/internal/promtest"
	"github.com/tracesampling/controlplane/internal/receipt"
	"github.com/tracesampling/controlplane/internal/sampling"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/pkg/clocktest"
	"github.com/tracesampling/controlplane/pkg/reservoir"
	"github.com/tracesampling/controlplane/pkg/rules"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock = clocktest.Clock

// replica is one replica's X-Ray core over a store that replicas share.
type replica struct {
	core *Core
	cat  *catalog.Catalog
	reg  *prometheus.Registry
}

func newReplica(t *testing.T, st *memstore.Store, clk *clock, maxClients int) *replica {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cat := catalog.New(st, catalog.Options{Logger: log})
	if err := cat.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := cat.LoadBudgets(context.Background()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	rep := sampling.New(sampling.Options{Catalog: cat, Store: st, Interval: 10 * time.Second, Now: clk.Now, Logger: log, Registerer: reg})
	t.Cleanup(rep.Close)
	core, err := New(Options{
		Catalog: cat, Rules: edit.NewRules(st, edit.WithClock(clk.Now)), Sampling: rep,
		Fleet: fleet.New(cat, st, 10*time.Second, clk.Now), MaxClients: maxClients, Registerer: reg, Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &replica{core: core, cat: cat, reg: reg}
}

type env struct {
	clk *clock
	st  *memstore.Store
	*replica
}

func newEnv(t *testing.T) *env {
	t.Helper()
	clk := clocktest.New(time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC))
	st, err := memstore.New(memstore.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &env{clk: clk, st: st, replica: newReplica(t, st, clk, 0)}
}

// as is a context with an editor principal, as the guard makes one.
func as(name string, services ...string) context.Context {
	return auth.NewContext(context.Background(), &auth.Principal{Name: name, Role: auth.RoleEditor, Kind: auth.KindAccessKey, Services: services})
}

func rule(name string, reservoir int64, fixed float64) xray.Rule {
	r := rules.Rule{Name: name, Priority: 10, FixedRate: fixed, ReservoirSize: reservoir, ServiceName: "shop", ServiceType: "*",
		Host: "*", HTTPMethod: "*", URLPath: "/" + name + "/*", ResourceARN: "*"}
	return xray.Rule{Rule: r.Normalize()}
}

func (e *env) create(t *testing.T, r xray.Rule) xray.Rule {
	t.Helper()
	got, err := e.core.CreateRule(as("ci"), r, nil)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func clientID(i int) string { return fmt.Sprintf("%024x", i+1) }

// TestRulesLeaveOutThoseThatNeedAResource: X-Ray clients declare no
// resource and match the rules they list themselves, so a rule for
// staging instances (a resource glob other than "*") is not listed: it
// would apply to every instance. One whose resource globs are all "*"
// matches any instance and is listed. X-Ray edits by name still reach
// the unlisted rule.
func TestRulesLeaveOutThoseThatNeedAResource(t *testing.T) {
	e := newEnv(t)
	ctx := as("ci")
	staging := rule("staging", 1, 1).Rule
	staging.ResourceAttributes = map[string]string{"deployment.environment.name": "staging"}
	anyEnv := rule("any-env", 2, 0.5).Rule
	anyEnv.ResourceAttributes = map[string]string{"deployment.environment.name": "*"}
	for _, r := range []rules.Rule{staging, anyEnv} {
		if _, err := e.st.CreateRule(ctx, r, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.cat.Load(ctx); err != nil {
		t.Fatal(err)
	}
	listed, err := e.core.Rules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range listed {
		names = append(names, r.Name)
	}
	if want := []string{"any-env", rules.DefaultName}; !slices.Equal(names, want) {
		t.Errorf("Rules = %v, want %v", names, want)
	} // An X-Ray update that names it changes what it sends, and keeps
	// the rule's resource globs.
	up, err := e.core.UpdateRule(ctx, xray.RuleUpdate{Name: "staging", Patch: xray.Rule{Rule: rules.Rule{FixedRate: 0.25}}, Fields: []string{xray.FieldFixedRate}}, "")
	if err != nil || up.FixedRate != 0.25 || up.ResourceAttributes["deployment.environment.name"] != "staging" {
		t.Errorf("X-Ray update of the unlisted rule: %+v, %v; want fixed rate 0.25 and its resource globs kept", up.Rule, err)
	}
}

// TestEdits: rules made, changed and deleted through the core are the
// store's rules, seen by the catalog at once, audited under the principal,
// refused with the errors package xray maps.
func TestEdits(t *testing.T) {
	e := newEnv(t)
	ctx := as("ci")
	created := e.create(t, rule("checkout", 5, 0.1))
	if created.Revision == 0 || e.cat.Current().Rule("checkout") == nil {
		t.Fatalf("created %+v; in the catalog: %v", created.Rule, e.cat.Current().Rule("checkout") != nil)
	}
	listed, err := e.core.Rules(ctx)
	if err != nil || len(listed) != 2 || listed[0].Name != "checkout" || listed[1].Name != rules.DefaultName {
		t.Fatalf("Rules = %v, %v; want checkout, Default in matching order", listed, err)
	}
	up, err := e.core.UpdateRule(ctx, xray.RuleUpdate{Name: "checkout", Patch: xray.Rule{Rule: rules.Rule{FixedRate: 0.5}}, Fields: []string{xray.FieldFixedRate}}, "")
	if err != nil || up.FixedRate != 0.5 || up.ReservoirSize != 5 || e.cat.Current().Rule("checkout").FixedRate != 0.5 {
		t.Fatalf("update: %+v, %v", up.Rule, err)
	}
	if _, err := e.core.UpdateRule(ctx, xray.RuleUpdate{Name: "checkout", Patch: xray.Rule{Rule: rules.Rule{FixedRate: 0.6}}, Fields: []string{xray.FieldFixedRate}}, "1"); !errors.Is(err, store.ErrConflict) {
		t.Errorf("update at a stale etag: %v, want ErrConflict", err)
	}
	if _, err := e.core.UpdateRule(ctx, xray.RuleUpdate{Name: rules.DefaultName, Patch: xray.Rule{Rule: rules.Rule{URLPath: "/x"}}, Fields: []string{xray.FieldURLPath}}, ""); !errors.Is(err, rules.ErrDefaultRule) {
		t.Errorf("Default's URLPath changed: %v", err)
	}
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"a second create", func() error { _, err := e.core.CreateRule(ctx, rule("checkout", 1, 0), nil); return err }(), store.ErrAlreadyExists},
		{"out of scope", func() error { _, err := e.core.CreateRule(as("team", "billing"), rule("other", 1, 0), nil); return err }(), xray.ErrAccessDenied},
		{"no principal", func() error { _, err := e.core.CreateRule(context.Background(), rule("other", 1, 0), nil); return err }(), xray.ErrAccessDenied},
		{"the Default deleted", func() error { _, err := e.core.DeleteRule(ctx, rules.DefaultName, ""); return err }(), rules.ErrDefaultRule},
		{"an unknown rule deleted", func() error { _, err := e.core.DeleteRule(ctx, "nope", ""); return err }(), store.ErrNotFound},
		{"an unknown rule's tags", func() error { _, err := e.core.RuleTags(ctx, "nope"); return err }(), store.ErrNotFound},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	deleted, err := e.core.DeleteRule(ctx, "checkout", "")
	if err != nil || deleted.FixedRate != 0.5 || e.cat.Current().Rule("checkout") != nil {
		t.Fatalf("delete: %+v, %v", deleted.Rule, err)
	}
	page, err := e.st.RuleEvents(context.Background(), "checkout", 10, "")
	if err != nil || len(page.Events) != 3 { // create, update, delete
		t.Fatalf("audit log %+v, %v", page.Events, err)
	}
	for _, ev := range page.Events {
		if ev.Actor != "aws:ci" {
			t.Errorf("%s by %q, want aws:ci", ev.Action, ev.Actor)
		}
	}
}

// TestTagsAndBoosts: tags and boosts are the rule's own fields: made with
// the rule, changed by read-modify-writes of the rule (audited), seen
// through the gRPC API's store, bounded as X-Ray bounds them.
func TestTagsAndBoosts(t *testing.T) {
	e := newEnv(t)
	ctx := as("ci")
	r := rule("checkout", 5, 0.1)
	r.Boost = &xray.RateBoost{MaxRate: 0.5, Cooldown: 5 * time.Minute}
	if _, err := e.core.CreateRule(ctx, r, xray.Tags{"team": "shop"}); err != nil {
		t.Fatal(err)
	}
	if err := e.core.TagRule(ctx, "checkout", xray.Tags{"env": "prod", "team": "cart"}); err != nil {
		t.Fatal(err)
	}
	if err := e.core.UntagRule(ctx, "checkout", []string{"env", "absent"}); err != nil {
		t.Fatal(err)
	}
	if err := e.core.UntagRule(ctx, "checkout", []string{"absent"}); err != nil {
		t.Fatal(err)
	}
	tags, err := e.core.RuleTags(ctx, "checkout")
	if err != nil || len(tags) != 1 || tags["team"] != "cart" {
		t.Errorf("tags %v, %v; want team=cart", tags, err)
	}
	stored, err := e.st.Rule(context.Background(), "checkout")
	if err != nil || stored.Tags["team"] != "cart" || stored.Boost == nil || stored.Boost.MaxRate != 0.5 {
		t.Errorf("stored %+v, %v", stored, err)
	}
	page, err := e.st.RuleEvents(context.Background(), "checkout", 10, "")
	if err != nil || len(page.Events) != 3 { // create, tag, untag; the empty untag writes nothing
		t.Errorf("audit log %d entries, %v; want 3", len(page.Events), err)
	}
	if _, err := e.core.UpdateRule(ctx, xray.RuleUpdate{Name: "checkout", Fields: []string{xray.FieldBoost}}, ""); err != nil {
		t.Fatal(err)
	}
	listed, err := e.core.Rules(ctx)
	if err != nil || listed[0].Boost != nil || listed[0].Tags["team"] != "cart" {
		t.Errorf("after the boost's removal: %+v, %v", listed[0].Rule, err)
	}
	many := xray.Tags{}
	for i := range rules.MaxTags {
		many[fmt.Sprint("k", i)] = "v"
	}
	if err := e.core.TagRule(ctx, "checkout", many); !errors.Is(err, xray.ErrTooManyTags) {
		t.Errorf("%d tags: %v, want ErrTooManyTags", rules.MaxTags+1, err)
	}
	if err := e.core.TagRule(as("team", "billing"), "checkout", xray.Tags{"x": "y"}); !errors.Is(err, xray.ErrAccessDenied) {
		t.Errorf("tags out of scope: %v", err)
	}
}

// TestRulesModified: LastRuleModification moves on creates, updates and
// deletes, and two replicas on one store give the same time.
func TestRulesModified(t *testing.T) {
	e := newEnv(t)
	other := newReplica(t, e.st, e.clk, 0)
	ctx := as("ci")
	modified := func(r *replica) time.Time {
		t.Helper()
		if err := r.cat.Load(ctx); err != nil {
			t.Fatal(err)
		}
		m, err := r.core.RulesModified(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	var last time.Time
	for _, step := range []struct {
		name string
		edit func() error
	}{
		{"create", func() error { _, err := e.core.CreateRule(ctx, rule("a", 1, 0), nil); return err }},
		{"update", func() error {
			_, err := e.core.UpdateRule(ctx, xray.RuleUpdate{Name: "a", Patch: xray.Rule{Rule: rules.Rule{Priority: 3}}, Fields: []string{xray.FieldPriority}}, "")
			return err
		}},
		{"delete", func() error { _, err := e.core.DeleteRule(ctx, "a", ""); return err }},
	} {
		e.clk.Add(time.Minute)
		if err := step.edit(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		got, theirs := modified(e.replica), modified(other)
		if !got.Equal(e.clk.Now()) || !got.After(last) {
			t.Errorf("after the %s: %v, want %v (after %v)", step.name, got, e.clk.Now(), last)
		}
		if !theirs.Equal(got) {
			t.Errorf("after the %s: the other replica says %v, this one %v", step.name, theirs, got)
		}
		last = got
	}
}

// TestReports: statistics feed the ledger; an unknown rule is rejected
// (X-Ray's "400", so the client refreshes its rules), and so are boost
// documents of unknown rules or with bad counts, by code; targets carry the
// interval, the quota's expiry and a running phase.
func TestReports(t *testing.T) {
	e := newEnv(t)
	e.create(t, rule("checkout", 10, 0.1))
	got, err := e.core.Report(context.Background(), xray.Report{ClientID: clientID(0),
		Statistics: []xray.Statistics{{Rule: "checkout", Requests: 100, Sampled: 10}, {Rule: "gone", Requests: 1}},
		Boosts: []xray.BoostStatistics{
			{Rule: "checkout", Service: "shop", Total: 10, Anomalies: 5},
			{Rule: "gone", Service: "shop", Total: 10},
			{Rule: "checkout", Service: "shop", Total: -1},
			{Rule: "checkout", Service: "shop", Total: 10, Anomalies: 11},
			{Rule: "checkout", Service: "shop", Total: 10, Anomalies: 2, SampledAnomalies: 3},
			{Rule: "checkout", Service: "shop", Total: 1e12},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Rejected) != 1 || got.Rejected[0].Rule != "gone" || got.Rejected[0].Code != sampling.RejectUnknownRule {
		t.Errorf("rejected %+v, want gone as UNKNOWN_RULE", got.Rejected)
	}
	var codes []string
	for _, rj := range got.BoostRejected {
		codes = append(codes, rj.Rule+" "+rj.Code)
	}
	if diff := cmp.Diff([]string{"gone UNKNOWN_RULE", "checkout NEGATIVE_COUNT", "checkout INCONSISTENT_COUNTS", "checkout INCONSISTENT_COUNTS", "checkout COUNT_TOO_LARGE"}, codes); diff != "" {
		t.Errorf("boost documents rejected (-want +got):\n%s", diff)
	}
	if len(got.Targets) != 1 {
		t.Fatalf("targets %+v", got.Targets)
	}
	tg := got.Targets[0]
	if tg.Rule != "checkout" || tg.FixedRate != 0.1 || tg.Interval != 10*time.Second || !tg.Expiry.Equal(e.clk.Now().Add(20*time.Second)) || !tg.RunningPhase || tg.Quota <= 0 || tg.Quota > 10 {
		t.Errorf("target %+v", tg)
	}
}

// TestBorrowsCountedApart: the X-Ray SDK for Go reports borrowed traces
// apart from SampledCount (sampled 0, borrowed 11 of 199 requests): the
// report is taken, not rejected as inconsistent, and the borrows count as
// sampled in the ledger.
func TestBorrowsCountedApart(t *testing.T) {
	e := newEnv(t)
	e.create(t, rule("checkout", 10, 0))
	got, err := e.core.Report(context.Background(), xray.Report{ClientID: clientID(0),
		Statistics: []xray.Statistics{{Rule: "checkout", Requests: 200, Sampled: 0, Borrowed: 10}}})
	if err != nil || len(got.Rejected) != 0 || len(got.Targets) != 1 {
		t.Fatalf("report: %+v, %v", got, err)
	}
	st, err := e.core.fleet.Status(context.Background(), fleet.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if r := st.Rules[0]; math.Abs(r.Sampled-1) > 1e-9 || math.Abs(r.Rate-20) > 1e-9 {
		t.Errorf("fleet: %v req/s, %v sampled/s; want 20 and 1 (10 borrowed in 10 s)", r.Rate, r.Sampled)
	}
}

// TestClaimsRetract: a client's next report retracts its last one, so the
// fleet's rate is its rate, not the sum of its reports; without the claim
// (the table full) it counts twice, and the metric says so.
func TestClaimsRetract(t *testing.T) {
	for _, tc := range []struct {
		name       string
		maxClients int
		wantRate   float64
		wantFull   float64
	}{
		{"held", 10, 10, 0},
		{"table full", 1, 20, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.replica = newReplica(t, e.st, e.clk, tc.maxClients)
			e.create(t, rule("checkout", 10, 0.1))
			e.create(t, rule("filler", 10, 0.1))
			ctx := context.Background()
			// The filler's claim takes the last place in a table of one.
			if _, err := e.core.Report(ctx, xray.Report{ClientID: clientID(9), Statistics: []xray.Statistics{{Rule: "filler", Requests: 1}}}); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				e.clk.Add(10 * time.Second)
				if _, err := e.core.Report(ctx, xray.Report{ClientID: clientID(0), Statistics: []xray.Statistics{{Rule: "checkout", Requests: 100}}}); err != nil {
					t.Fatal(err)
				}
			}
			st, err := e.core.fleet.Status(ctx, fleet.Query{})
			if err != nil {
				t.Fatal(err)
			}
			if r := st.Rules[0]; r.Rule.Name != "checkout" || math.Abs(r.Rate-tc.wantRate) > 1e-9 {
				t.Errorf("fleet rate %v of %s, want %v", r.Rate, r.Rule.Name, tc.wantRate)
			}
			if got := promtest.Value(t, e.reg, "controlplane_xray_claims_full_total"); got != tc.wantFull {
				t.Errorf("claims_full_total = %v, want %v", got, tc.wantFull)
			}
		})
	}
}

// TestClaimsLapse: an entry lapses a quota's lifetime and an interval
// after it was kept, and a full table makes room by sweeping lapsed ones.
func TestClaimsLapse(t *testing.T) {
	clk := clocktest.New(time.Unix(1e9, 0))
	c := newClaims(2, 30*time.Second, clk.Now, prometheus.NewRegistry())
	c.Keep("a", "r", receiptAt(1))
	c.Keep("b", "r", receiptAt(2))
	if _, ok, _ := c.Previous("a", "r", "", clk.Now().Add(29*time.Second)); !ok {
		t.Errorf("a lapsed early")
	}
	if _, ok, _ := c.Previous("a", "r", "", clk.Now().Add(30*time.Second)); ok {
		t.Errorf("a held past its lifetime")
	}
	c.Keep("c", "r", receiptAt(3)) // full: not kept
	if _, ok, _ := c.Previous("c", "r", "", clk.Now()); ok || c.len() != 2 {
		t.Errorf("a full table took c (%d entries)", c.len())
	}
	clk.Add(30 * time.Second)
	c.Keep("c", "r", receiptAt(3))
	if got, ok, _ := c.Previous("c", "r", "", clk.Now()); !ok || got.Rate != 3 || c.len() != 1 {
		t.Errorf("after the sweep: %+v %v, %d entries", got, ok, c.len())
	}
}

// TestWholeQuotasOfAThousandClients: 1,000 X-Ray clients share rules whose
// reservoirs split into fractional shares (0.3, and uneven rates summing to
// 137 traces/s); every period, the whole quotas handed out add up to the
// reservoir within ±5 % (with the running phase, within a few traces:
// Σ⌊S+q⌋−⌊S⌋ telescopes), where the rotating phase alone varies by about
// √N/2 traces.
func TestWholeQuotasOfAThousandClients(t *testing.T) {
	const clients = 1000
	for _, tc := range []struct {
		name      string
		reservoir int64
		rate      func(i int) int64 // requests per 10 s
	}{
		{"equal shares of 0.3", 300, func(int) int64 { return 100 }},
		{"uneven shares", 137, func(i int) int64 { return int64(10 + i%17*13) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.create(t, rule("r", tc.reservoir, 0))
			ctx := context.Background()
			for period := range 6 {
				e.clk.Add(10*time.Second - clients*time.Millisecond)
				var total int64
				var shares float64
				for i := range clients {
					e.clk.Add(time.Millisecond)
					got, err := e.core.Report(ctx, xray.Report{ClientID: clientID(i), Statistics: []xray.Statistics{{Rule: "r", Requests: tc.rate(i)}}})
					if err != nil {
						t.Fatal(err)
					}
					tg := got.Targets[0]
					total += int64(xray.WholeQuota(tg.Quota, tg.Phase))
					shares += tg.Quota
				}
				t.Logf("period %d: whole quotas %d, shares %.2f, reservoir %d", period, total, shares, tc.reservoir)
				if period < 2 {
					continue // the ledger learns the fleet in the first periods
				}
				if d := math.Abs(float64(total) - float64(tc.reservoir)); d > 0.05*float64(tc.reservoir) {
					t.Errorf("period %d: whole quotas add up to %d, want %d ± 5 %%", period, total, tc.reservoir)
				}
				if d := math.Abs(float64(total) - shares); d > 1 {
					t.Errorf("period %d: whole quotas %d, shares %.3f: off by more than one trace", period, total, shares)
				}
			}
		})
	}
}

func receiptAt(rate float64) receipt.Claim {
	return receipt.Claim{Receipt: reservoir.Receipt{Rate: rate}}
}

// TestReplicasWithoutAffinity measures what a load balancer without
// client affinity costs the split: each replica holds the claims of the
// reports it took, so a client whose calls alternate between two replicas
// finds no claim for the report it made on the other one, and its last
// rate stays in the ledger until its bucket ages out. The figures are in
// the README (X-Ray sampling API, replicas); the test fails if affinity
// stops mattering, which would make the documented advice wrong.
func TestReplicasWithoutAffinity(t *testing.T) {
	const clients = 200
	run := func(alternate bool) (total int64, fleetRate float64) {
		e := newEnv(t)
		other := newReplica(t, e.st, e.clk, 0)
		e.create(t, rule("r", 100, 0))
		if err := other.cat.Load(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for period := range 6 {
			e.clk.Add(10*time.Second - clients*time.Millisecond)
			total = 0
			for i := range clients {
				e.clk.Add(time.Millisecond)
				r := e.replica
				if alternate && (period+i)%2 == 1 {
					r = other
				}
				got, err := r.core.Report(ctx, xray.Report{ClientID: clientID(i), Statistics: []xray.Statistics{{Rule: "r", Requests: 100}}})
				if err != nil {
					t.Fatal(err)
				}
				tg := got.Targets[0]
				total += int64(xray.WholeQuota(tg.Quota, tg.Phase))
			}
		}
		st, err := e.core.fleet.Status(ctx, fleet.Query{})
		if err != nil {
			t.Fatal(err)
		}
		return total, st.Rules[0].Rate
	}
	stickyTotal, stickyRate := run(false)
	altTotal, altRate := run(true)
	t.Logf("%d clients at 10 req/s each, reservoir 100: with affinity, quotas %d/period and fleet rate %.0f req/s; alternating between two replicas, quotas %d and fleet rate %.0f",
		clients, stickyTotal, stickyRate, altTotal, altRate)
	if stickyTotal < 95 || stickyTotal > 105 || math.Abs(stickyRate-clients*10) > 1 {
		t.Errorf("with affinity: quotas %d, fleet rate %v", stickyTotal, stickyRate)
	}
	if altRate < 1.5*stickyRate {
		t.Errorf("alternating replicas: fleet rate %v, no longer inflated beside %v: update the README", altRate, stickyRate)
	}
}

// TestBudgetsSeeTheRulesService: X-Ray statistics name no service, so each
// document counts for budgets as its rule's ServiceName: a budget scoped to
// "shop" counts the requests of the rule for "shop", not those of the
// rule for "billing"; a budget for every service counts both.
func TestBudgetsSeeTheRulesService(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.create(t, rule("checkout", 10, 0.1)) // service "shop"
	other := rule("invoice", 10, 0.1)
	other.ServiceName = "billing"
	e.create(t, other)
	for _, bg := range []budget.Budget{
		{Name: "shop", Scope: budget.Scope{Services: []string{"shop"}}, Mode: budget.AlertOnly, MonthlyAmountMicros: 1_000_000, PricePerMillionMicros: 1_000_000},
		{Name: "all", Mode: budget.AlertOnly, MonthlyAmountMicros: 1_000_000, PricePerMillionMicros: 1_000_000},
	} {
		if _, err := e.st.CreateBudget(ctx, bg); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.cat.LoadBudgets(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.core.Report(ctx, xray.Report{ClientID: clientID(0), Statistics: []xray.Statistics{
		{Rule: "checkout", Requests: 100, Sampled: 5}, {Rule: "invoice", Requests: 40, Sampled: 2},
	}}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int64{"shop": 100, "all": 140} {
		u, err := e.st.Usage(ctx, name, e.clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		var got float64
		for _, r := range u.Requests {
			got += r
		}
		if int64(got) != want {
			t.Errorf("budget %s counted %v requests, want %d", name, got, want)
		}
	}
}

// TestEditsSeenAtOnce: after an edit through this replica, its next
// GetSamplingRules shows it, also a delete of a rule edited long before
// (the catalog is not running here: nothing else reloads it).
func TestEditsSeenAtOnce(t *testing.T) {
	e := newEnv(t)
	ctx := as("ci")
	e.create(t, rule("old", 1, 0))
	e.create(t, rule("new", 1, 0))
	e.create(t, rule("newer", 1, 0))
	if _, err := e.core.DeleteRule(ctx, "old", ""); err != nil {
		t.Fatal(err)
	}
	listed, err := e.core.Rules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range listed {
		if r.Name == "old" {
			t.Errorf("the deleted rule is still listed at version %d", e.cat.Current().Version)
		}
	}
	if len(listed) != 3 {
		t.Errorf("%d rules listed, want new, newer and Default", len(listed))
	}
}

// TestSummaries: each reported rule's fleet-wide rates from the ledger, as
// counts over one report interval; rules nobody reports are left out.
func TestSummaries(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.create(t, rule("checkout", 10, 0.1))
	e.create(t, rule("quiet", 10, 0.1))
	for i := range 2 {
		if _, err := e.core.Report(ctx, xray.Report{ClientID: clientID(i), Statistics: []xray.Statistics{{Rule: "checkout", Requests: 100, Sampled: 5}}}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := e.core.Summaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []xray.Summary{{Rule: "checkout", Start: e.clk.Now().Add(-10 * time.Second), Requests: 200, Sampled: 10}}
	if len(got) != 1 || got[0] != want[0] {
		t.Errorf("Summaries = %+v, want %+v", got, want)
	}
}
