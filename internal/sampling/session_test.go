package sampling

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/clocktest"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// sessionEnv is a core on the embedded store (behind a recordingStore, to
// fail calls and see what is recorded) with one rule, "r", on a fake clock.
type sessionEnv struct {
	clk  *clocktest.Clock
	mem  *memstore.Store
	st   *recordingStore
	cat  *catalog.Catalog
	core *Core
}

const sessionInterval = 10 * time.Second

func newSessionEnv(t *testing.T, start time.Time) *sessionEnv {
	t.Helper()
	ctx := context.Background()
	clk := clocktest.New(start)
	mem, err := memstore.New(memstore.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	r := rules.Rule{Name: "r", Priority: 1, ServiceName: "shop", FixedRate: 0.1, ReservoirSize: 10}
	if _, err := mem.CreateRule(ctx, r.Normalize(), "test"); err != nil {
		t.Fatal(err)
	}
	cat := catalog.New(mem, catalog.Options{Logger: discardLogger()})
	if err := errors.Join(cat.Load(ctx), cat.LoadBudgets(ctx)); err != nil {
		t.Fatal(err)
	}
	e := &sessionEnv{clk: clk, mem: mem, st: &recordingStore{Store: mem}, cat: cat}
	e.core = New(Options{Catalog: cat, Store: e.st, Now: clk.Now, Interval: sessionInterval, Logger: discardLogger(), Registerer: prometheus.NewRegistry()})
	t.Cleanup(e.core.Close)
	return e
}

// report is a report of rule r numbered seq, over one interval.
func (e *sessionEnv) report(seq uint64) Report {
	return Report{Seq: seq, Statistics: []Statistics{{Rule: "r", Requests: 100, Sampled: 1, Interval: sessionInterval, Time: e.clk.Now()}}}
}

// answerOn records r on s and answers it, as a transport does.
func answerOn(ctx context.Context, s *Session, r Report) Answer {
	return s.Answer(s.Record(ctx, &r))
}

// enforce creates a budget over service shop whose decision in force
// scales fixed rates and quotas by factor, and loads it.
func (e *sessionEnv) enforce(t *testing.T, name string, factor float64) {
	t.Helper()
	ctx := context.Background()
	bg := budget.Budget{Name: name, UID: "uid-" + name, MonthlyAmountMicros: 1_000_000, Mode: budget.Enforce, Scope: budget.Scope{Services: []string{"shop"}}}
	if _, err := e.mem.CreateBudget(ctx, bg); err != nil {
		t.Fatal(err)
	}
	now := e.clk.Now()
	if err := e.mem.PutStates(ctx, []budget.State{{Budget: name, BudgetUID: bg.UID, MonthStart: budget.MonthStart(now), Computed: now, Decision: budget.Decision{
		FixedRateFactor: factor, ReservoirFactor: factor,
	}}}); err != nil {
		t.Fatal(err)
	}
	if err := e.cat.LoadBudgets(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestSessionAnswersCopiesFromTheLastTargets: a numbered report at or below
// the last one acknowledged is a copy sent before its answer arrived; it is
// answered with the last targets, acknowledging its own seq, without the
// receipt the first answer brought, and not recorded again. Unnumbered
// reports are never copies.
func TestSessionAnswersCopiesFromTheLastTargets(t *testing.T) {
	ctx := context.Background()
	e := newSessionEnv(t, time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC))
	s := e.core.Session(Hello{Client: "c", Service: "shop"})
	var quota float64
	for i, step := range []struct {
		seq                uint64
		again              bool
		acked              uint64
		recorded, receipts bool
	}{
		{seq: 1, acked: 1, recorded: true, receipts: true},
		{seq: 1, again: true, acked: 1},
		{seq: 0, recorded: true, receipts: true},
		{seq: 3, acked: 3, recorded: true, receipts: true},
		{seq: 2, again: true, acked: 2},
		{seq: 3, again: true, acked: 3},
		{seq: 4, acked: 4, recorded: true, receipts: true},
	} {
		e.clk.Add(sessionInterval)
		before := len(e.st.kept())
		a := answerOn(ctx, s, e.report(step.seq))
		if a.Err != nil {
			t.Fatalf("step %d: %v", i, a.Err)
		}
		if a.Again != step.again || a.Acked != step.acked || a.RulesFollow != step.recorded {
			t.Errorf("step %d (seq %d): again %v, acked %d, rules follow %v; want %v, %d, %v", i, step.seq, a.Again, a.Acked, a.RulesFollow, step.again, step.acked, step.recorded)
		}
		if got := len(e.st.kept()) - before; got != map[bool]int{false: 0, true: 1}[step.recorded] {
			t.Errorf("step %d (seq %d): %d updates recorded, want recorded=%v", i, step.seq, got, step.recorded)
		}
		if len(a.Targets.Targets) != 1 {
			t.Fatalf("step %d: targets %+v, want one", i, a.Targets.Targets)
		}
		got := a.Targets.Targets[0]
		if (got.Receipt != "") != step.receipts {
			t.Errorf("step %d (seq %d): receipt %q, want one: %v", i, step.seq, got.Receipt, step.receipts)
		}
		if step.recorded {
			quota = got.Quota
		} else if got.Quota != quota || got.Quota == 0 {
			t.Errorf("step %d (seq %d): quota %v, want the last answer's, %v", i, step.seq, got.Quota, quota)
		}
	}
}

// TestSessionRenewsTheLastQuotasWhenTheStoreFails: a report the store does
// not take is answered with the client's last quotas renewed (an explicit
// zero for a client the session knows nothing of), acknowledges nothing,
// says why and asks for no rule set; the report sent again is then
// recorded, not taken for a copy.
func TestSessionRenewsTheLastQuotasWhenTheStoreFails(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		before    int  // reports recorded before the outage
		wantQuota bool // the renewal is of a quota held; else 0
	}{
		{"first report", 0, false},
		{"after a recorded one", 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSessionEnv(t, time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC))
			s := e.core.Session(Hello{Client: "c", Service: "shop"})
			var held float64
			seq := uint64(0)
			for range tc.before {
				seq++
				e.clk.Add(sessionInterval)
				a := answerOn(ctx, s, e.report(seq))
				if a.Err != nil || a.Acked != seq {
					t.Fatalf("report %d: %+v", seq, a)
				}
				held = a.Targets.Targets[0].Quota
			}
			e.clk.Add(sessionInterval)
			seq++
			e.st.failNext(1)
			a := answerOn(ctx, s, e.report(seq))
			if !errors.Is(a.Err, store.ErrUnavailable) {
				t.Fatalf("answer of a report the store refused: error %v, want unavailable", a.Err)
			}
			want := Answer{
				Targets: TargetSet{RulesVersion: e.cat.Current().Version, Interval: sessionInterval, Targets: []Target{
					{Rule: "r", Quota: held, FixedRate: 0.1, Expiry: e.clk.Now().Add(e.core.QuotaLifetime())},
				}},
				Err: a.Err,
			}
			if diff := cmp.Diff(want, a, cmpopts.EquateErrors()); diff != "" {
				t.Errorf("answer while the store is away, -want +got:\n%s", diff)
			}
			if (held > 0) != tc.wantQuota {
				t.Errorf("quota held before the outage %v, want one: %v", held, tc.wantQuota)
			}
			a = answerOn(ctx, s, e.report(seq))
			if a.Err != nil || a.Again || a.Acked != seq || len(e.st.kept()) != 1 {
				t.Errorf("the report sent again: %+v, %d updates recorded; want it recorded and acknowledged", a, len(e.st.kept()))
			}
		})
	}
}

// TestSessionBudgetsChanged: once the session has answered, a change of
// budgets re-sends the last targets with the new factors, acknowledging
// nothing and without the receipts the answer brought; once, and nothing
// before the first answer.
func TestSessionBudgetsChanged(t *testing.T) {
	ctx := context.Background()
	e := newSessionEnv(t, time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC))
	s := e.core.Session(Hello{Client: "c", Service: "shop"})
	e.enforce(t, "early", 1)
	if ts, ok := s.BudgetsChanged(); ok {
		t.Errorf("before any answer, budgets changed: %+v, want nothing to send", ts)
	}
	e.clk.Add(sessionInterval)
	a := answerOn(ctx, s, e.report(1))
	if a.Err != nil {
		t.Fatal(a.Err)
	}
	first := a.Targets.Targets[0]
	if ts, ok := s.BudgetsChanged(); ok {
		t.Errorf("budgets unchanged since the answer: %+v, want nothing to send", ts)
	}
	e.enforce(t, "half", 0.5)
	ts, ok := s.BudgetsChanged()
	if !ok {
		t.Fatal("budgets changed: nothing to send")
	}
	want := first
	want.Quota, want.FixedRate, want.Receipt = first.Quota*0.5, first.FixedRate*0.5, ""
	if diff := cmp.Diff([]Target{want}, ts.Targets); diff != "" {
		t.Errorf("targets sent again, -want +got:\n%s", diff)
	}
	if ts, ok := s.BudgetsChanged(); ok {
		t.Errorf("asked again: %+v, want nothing to send", ts)
	}
}

// TestSessionRuleSet: the rule set is sent when it is not the one the
// client holds — its version, or the rates in force budgets lower, which a
// client cannot know, or the month's rates once the month turns — and not
// again while it is; a new instance's first goes through the first-borrow
// gate (here, the second instance at the same moment is withheld).
func TestSessionRuleSet(t *testing.T) {
	ctx := context.Background()
	e := newSessionEnv(t, time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC))
	v := e.cat.Current().Version
	type got struct {
		Version  int64
		Rates    []*pb.RuleRates
		Sent     bool
		Withheld bool
	}
	ruleSet := func(s *Session) got {
		rs, changed := s.RuleSet(ctx)
		if !changed {
			if rs != nil {
				t.Errorf("unchanged, with a rule set %v", rs)
			}
			return got{}
		}
		g := got{Version: rs.GetRulesVersion(), Sent: true}
		for _, r := range rs.GetRatesInForce() {
			if r.GetFirstBorrowWithheld() {
				g.Withheld = true
			} else {
				g.Rates = append(g.Rates, r)
			}
		}
		return g
	}
	newA := e.core.Session(Hello{Client: "a", Service: "shop"})
	newB := e.core.Session(Hello{Client: "b", Service: "shop"})
	stale := e.core.Session(Hello{Client: "c", Service: "shop", RulesVersion: v - 1})
	current := e.core.Session(Hello{Client: "d", Service: "shop", RulesVersion: v})
	half := []*pb.RuleRates{
		{RuleName: "r", FixedRate: 0.05, ReservoirFactor: 0.5},
		{RuleName: rules.DefaultName, FixedRate: rules.DefaultFixedRate * 0.5, ReservoirFactor: 0.5},
	}
	for _, step := range []struct {
		name    string
		s       *Session
		change  func()
		want    got
		version bool // want.Version is the catalog's at the step
	}{
		{name: "new instance", s: newA, want: got{Sent: true}, version: true},
		{name: "new instance asks again", s: newA},
		{name: "second new instance withheld", s: newB, want: got{Sent: true, Withheld: true}, version: true},
		{name: "stale version", s: stale, want: got{Sent: true}, version: true},
		{name: "current version", s: current},
		{name: "budget lowers the rates", s: current, change: func() { e.enforce(t, "half", 0.5) }, want: got{Sent: true, Rates: half}, version: true},
		{name: "same rates asked again", s: current},
		{name: "rule edited", s: current, change: func() {
			r := e.cat.Current().Rule("r").Clone()
			r.URLPath = "/edited"
			if _, err := e.mem.UpdateRule(ctx, r, r.Revision, "test"); err != nil {
				t.Fatal(err)
			}
			if err := e.cat.Load(ctx); err != nil {
				t.Fatal(err)
			}
		}, want: got{Sent: true, Rates: half}, version: true},
		{name: "within the month", s: current, change: func() { e.clk.Add(30 * time.Second) }},
		{name: "next month: November's decision not in force", s: current, change: func() { e.clk.Add(time.Minute) }, want: got{Sent: true}, version: true},
		{name: "next month asked again", s: current},
	} {
		if step.change != nil {
			step.change()
		}
		if step.version {
			step.want.Version = e.cat.Current().Version
		}
		if diff := cmp.Diff(step.want, ruleSet(step.s), protocmp.Transform()); diff != "" {
			t.Errorf("%s: rule set, -want +got:\n%s", step.name, diff)
		}
	}
	if v2 := e.cat.Current().Version; v2 == v {
		t.Errorf("rules version %d after an edit, want a new one", v2)
	}
}
