package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// testBatchEdit: one batch creates, updates and deletes; every rule is as
// the batch says, the version grows by one, each rule has one audit entry
// with that version, the actor and the message, and watchers hear of it.
func testBatchEdit(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	editor := peer(t, b, s, clk)
	ctx := t.Context()

	upd := mustCreate(t, s, newRule("upd", 10))
	del := mustCreate(t, s, newRule("del", 20))
	keep := mustCreate(t, s, newRule("keep", 30))
	before := mustVersion(t, s)
	ch, _ := watch(t, s)
	waitTopic(t, ch, store.TopicRules, "on subscribing")
	drain(ch)

	at := clk.Add(time.Minute)
	changed := newRule("upd", 11)
	changed.FixedRate = 0.5
	def := rules.Default()
	def.FixedRate = 0.25
	res, err := editor.ApplyRuleEdits(ctx, []store.RuleEdit{
		{Action: store.ActionCreate, Rule: newRule("new1", 40)},
		{Action: store.ActionUpdate, Rule: changed, IfRevision: upd.Revision},
		{Action: store.ActionDelete, Rule: rules.Rule{Name: "del"}, IfRevision: del.Revision},
		{Action: store.ActionCreate, Rule: newRule("new2", 50)},
		{Action: store.ActionUpdate, Rule: def, IfRevision: 1},
	}, "alice", "applied from rules.yaml")
	if err != nil {
		t.Fatalf("ApplyRuleEdits: %v", err)
	}
	if res.Version != before+1 {
		t.Errorf("result version = %d, want %d (one bump per batch)", res.Version, before+1)
	}
	if v := mustVersion(t, s); v != before+1 {
		t.Errorf("RulesVersion = %d, want %d", v, before+1)
	}
	wantRules := []rules.Rule{
		stamped(newRule("new1", 40), 1, at, at),
		stamped(changed, 2, upd.CreateTime, at),
		{},
		stamped(newRule("new2", 50), 1, at, at),
	}
	if len(res.Rules) != 5 {
		t.Fatalf("result holds %d rules, want 5", len(res.Rules))
	}
	for i, w := range wantRules {
		checkRule(t, fmt.Sprintf("result rule %d", i), res.Rules[i], w)
	}
	if got := res.Rules[4]; got.Name != rules.DefaultName || got.FixedRate != 0.25 || got.Revision != 2 {
		t.Errorf("result Default rule = %+v, want fixed rate 0.25 at revision 2", got)
	}
	snap := mustSnapshot(t, s)
	if got, want := names(snap.Rules), []string{"upd", "keep", "new1", "new2", rules.DefaultName}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("rules after the batch = %v, want %v", got, want)
	}
	for _, r := range snap.Rules {
		if r.Name == "keep" {
			checkRule(t, "untouched rule", r, keep)
		}
	}
	waitTopic(t, ch, store.TopicRules, "after the batch")

	events := allEvents(t, s, "")
	if len(events) < 5 {
		t.Fatalf("audit log holds %d events, want at least 5", len(events))
	}
	got := map[string]store.Event{}
	for _, e := range events[:5] {
		got[e.RuleName] = e
		if e.RulesVersion != before+1 || e.Actor != "alice" || e.Message != "applied from rules.yaml" || !e.Time.Equal(at) {
			t.Errorf("event of %q = {version %d, actor %q, message %q, time %v}, want {%d, alice, applied from rules.yaml, %v}",
				e.RuleName, e.RulesVersion, e.Actor, e.Message, e.Time, before+1, at)
		}
	}
	for name, action := range map[string]store.Action{"new1": store.ActionCreate, "upd": store.ActionUpdate, "del": store.ActionDelete, "new2": store.ActionCreate, rules.DefaultName: store.ActionUpdate} {
		e, ok := got[name]
		if !ok || e.Action != action {
			t.Errorf("event of %q = %+v, want a %s", name, e, action)
		}
	}
	if e := got["del"]; e.Before == nil || e.After != nil {
		t.Errorf("delete event: before %v, after %v; want before only", e.Before, e.After)
	} else {
		checkRule(t, "delete event's before", *e.Before, del)
	}
	if e := got["upd"]; e.Before == nil || e.After == nil {
		t.Errorf("update event: before %v, after %v; want both", e.Before, e.After)
	} else {
		checkRule(t, "update event's before", *e.Before, upd)
		checkRule(t, "update event's after", *e.After, wantRules[1])
	}
	if one := allEvents(t, s, "new2"); len(one) != 1 || one[0].Action != store.ActionCreate {
		t.Errorf("RuleEvents(new2) = %+v, want its create", one)
	}

	// An empty batch changes nothing and says the version.
	res, err = s.ApplyRuleEdits(ctx, nil, "alice", "")
	if err != nil || res.Version != before+1 {
		t.Errorf("empty batch = %+v, %v; want version %d", res, err, before+1)
	}
}

// testBatchEditRefused: a batch with one edit that cannot be made changes
// nothing, and says which edit and why.
func testBatchEditRefused(t *testing.T, b Backend) {
	clk := newClock()
	s, _ := openLimited(t, b, clk, 5)
	ctx := t.Context()
	a := mustCreate(t, s, newRule("a", 10))
	mustCreate(t, s, newRule("b", 20))
	good := store.RuleEdit{Action: store.ActionCreate, Rule: newRule("fresh", 30)}
	tests := []struct {
		name  string
		edits []store.RuleEdit
		want  error
		index int // of the EditError; -1: none
	}{
		{"create of a rule that exists", []store.RuleEdit{good, {Action: store.ActionCreate, Rule: newRule("b", 1)}}, store.ErrAlreadyExists, 1},
		{"update of a rule that does not exist", []store.RuleEdit{good, {Action: store.ActionUpdate, Rule: newRule("nope", 1), IfRevision: 1}}, store.ErrNotFound, 1},
		{"update at a stale revision", []store.RuleEdit{{Action: store.ActionUpdate, Rule: newRule("a", 11), IfRevision: a.Revision + 1}, good}, store.ErrConflict, 0},
		{"delete of a rule that does not exist", []store.RuleEdit{good, {Action: store.ActionDelete, Rule: rules.Rule{Name: "nope"}}}, store.ErrNotFound, 1},
		{"delete at a stale revision", []store.RuleEdit{good, {Action: store.ActionDelete, Rule: rules.Rule{Name: "a"}, IfRevision: 9}}, store.ErrConflict, 1},
		{"past the rule limit", []store.RuleEdit{good, {Action: store.ActionCreate, Rule: newRule("c", 1)}, {Action: store.ActionCreate, Rule: newRule("d", 2)}}, store.ErrRuleLimit, -1},
		{"the Default rule deleted", []store.RuleEdit{good, {Action: store.ActionDelete, Rule: rules.Rule{Name: rules.DefaultName}}}, rules.ErrDefaultRule, -1},
		{"one rule twice", []store.RuleEdit{good, {Action: store.ActionDelete, Rule: rules.Rule{Name: "fresh"}}}, nil, -1},
	}
	version := mustVersion(t, s)
	snap := mustSnapshot(t, s)
	nEvents := len(allEvents(t, s, ""))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.ApplyRuleEdits(ctx, tt.edits, "u", "")
			if err == nil {
				t.Fatal("ApplyRuleEdits succeeded, want an error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error = %v, want %v", err, tt.want)
			}
			var ee *store.EditError
			switch {
			case tt.index < 0 && errors.As(err, &ee):
				t.Errorf("error = %v, an EditError; want none", err)
			case tt.index >= 0 && !errors.As(err, &ee):
				t.Errorf("error = %v, want an EditError", err)
			case tt.index >= 0 && (ee.Index != tt.index || ee.Name != tt.edits[tt.index].Rule.Name || ee.Action != tt.edits[tt.index].Action):
				t.Errorf("EditError = {#%d %s %q}, want {#%d %s %q}", ee.Index, ee.Action, ee.Name,
					tt.index, tt.edits[tt.index].Action, tt.edits[tt.index].Rule.Name)
			}
			if v := mustVersion(t, s); v != version {
				t.Errorf("version = %d after a refused batch, want %d", v, version)
			}
			if got := names(mustSnapshot(t, s).Rules); fmt.Sprint(got) != fmt.Sprint(names(snap.Rules)) {
				t.Errorf("rules = %v after a refused batch, want %v", got, names(snap.Rules))
			}
			if n := len(allEvents(t, s, "")); n != nEvents {
				t.Errorf("%d audit events after a refused batch, want %d", n, nEvents)
			}
		})
	}
	// At the limit, a batch that deletes as many as it creates passes.
	mustCreate(t, s, newRule("c", 40))
	mustCreate(t, s, newRule("d", 50))
	if _, err := s.ApplyRuleEdits(ctx, []store.RuleEdit{
		{Action: store.ActionCreate, Rule: newRule("e", 60)},
		{Action: store.ActionDelete, Rule: rules.Rule{Name: "d"}},
	}, "u", ""); err != nil {
		t.Errorf("a batch that keeps the count at the limit: %v", err)
	}
}

// testConcurrentBatchEdits: batches and single edits of the same rules,
// from every replica at once. No reader sees part of a batch, no edit is
// lost (each rule's revision counts the edits that touched it), and each
// call bumps the version once.
func testConcurrentBatchEdits(t *testing.T, b Backend) {
	const batchers, singles, rounds = 3, 3, 8
	clk := newClock()
	s := open(t, b, clk)
	stores := []store.Store{s, peer(t, b, s, clk)}
	names := []string{"x", "y", "z"}
	for i, n := range names {
		mustCreate(t, s, newRule(n, int32(10+i)))
	}
	v0 := mustVersion(t, s)
	ctx := context.Background()

	stop := make(chan struct{})
	var readers sync.WaitGroup
	var torn error
	var tornOnce sync.Once
	readers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			snap, err := s.Snapshot(ctx)
			if err != nil {
				continue
			}
			rates := map[float64]bool{}
			for _, r := range snap.Rules {
				if r.Name != rules.DefaultName {
					rates[r.FixedRate] = true
				}
			}
			if len(rates) != 1 {
				tornOnce.Do(func() { torn = fmt.Errorf("a snapshot shows part of a batch: %+v", snap.Rules) })
			}
		}
	})

	var wg sync.WaitGroup
	errs := make(chan error, batchers+singles)
	for w := range batchers {
		st := stores[w%len(stores)]
		wg.Go(func() {
			for round := 0; round < rounds; {
				snap, err := st.Snapshot(ctx)
				if err != nil {
					errs <- err
					return
				}
				var edits []store.RuleEdit
				rate := float64(w*rounds+round+1) / 1000
				for _, r := range snap.Rules {
					if r.Name == rules.DefaultName {
						continue
					}
					next := r.Clone()
					next.FixedRate = rate
					edits = append(edits, store.RuleEdit{Action: store.ActionUpdate, Rule: next, IfRevision: r.Revision})
				}
				_, err = st.ApplyRuleEdits(ctx, edits, fmt.Sprintf("batch%d", w), "")
				switch {
				case errors.Is(err, store.ErrConflict):
					continue
				case err != nil:
					errs <- err
					return
				}
				round++
			}
		})
	}
	for w := range singles {
		st := stores[w%len(stores)]
		name := names[w%len(names)]
		wg.Go(func() {
			for round := 0; round < rounds; {
				cur, err := st.Rule(ctx, name)
				if err != nil {
					errs <- err
					return
				}
				cur.Description = fmt.Sprintf("single %d round %d", w, round)
				_, err = st.UpdateRule(ctx, cur, cur.Revision, fmt.Sprintf("single%d", w))
				switch {
				case errors.Is(err, store.ErrConflict):
					continue
				case err != nil:
					errs <- err
					return
				}
				round++
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("edit: %v", err)
	}
	if torn != nil {
		t.Error(torn)
	}
	// Every batch touched each rule once; each single edit one rule.
	snap := mustSnapshot(t, s)
	total := 0
	for _, r := range snap.Rules {
		if r.Name == rules.DefaultName {
			continue
		}
		want := int64(1 + batchers*rounds)
		for w := range singles {
			if names[w%len(names)] == r.Name {
				want += rounds
			}
		}
		if r.Revision != want {
			t.Errorf("rule %s at revision %d, want %d (an edit was lost or applied twice)", r.Name, r.Revision, want)
		}
		total++
	}
	if total != len(names) {
		t.Errorf("%d rules, want %d", total, len(names))
	}
	if v := mustVersion(t, s); v != v0+int64(batchers*rounds+singles*rounds) {
		t.Errorf("version = %d, want %d (one bump per call that succeeded)", v, v0+int64(batchers*rounds+singles*rounds))
	}
}

// testConcurrentBatchesAtTheLimit: batches and single creates on every
// replica at once never pass the rule limit, and a refused batch creates
// none of its rules.
func testConcurrentBatchesAtTheLimit(t *testing.T, b Backend) {
	const limit, writers = 12, 12
	clk := newClock()
	s, other := openLimited(t, b, clk, limit)
	stores := []store.Store{s, other}
	for i := range 3 {
		mustCreate(t, s, newRule(fmt.Sprintf("r%d", i), int32(1+i)))
	}
	var wg sync.WaitGroup
	errs := make([]error, writers)
	start := make(chan struct{})
	for i := range writers {
		st := stores[i%len(stores)]
		wg.Go(func() {
			<-start
			if i%2 == 0 {
				_, errs[i] = st.CreateRule(context.Background(), newRule(fmt.Sprintf("one%d", i), int32(100+i)), "u")
				return
			}
			_, errs[i] = st.ApplyRuleEdits(context.Background(), []store.RuleEdit{
				{Action: store.ActionCreate, Rule: newRule(fmt.Sprintf("pa%d", i), int32(200+i))},
				{Action: store.ActionCreate, Rule: newRule(fmt.Sprintf("pb%d", i), int32(300+i))},
				{Action: store.ActionCreate, Rule: newRule(fmt.Sprintf("pc%d", i), int32(400+i))},
			}, "u", "")
		})
	}
	close(start)
	wg.Wait()
	want := 4 // the Default rule and r0..r2
	for i, err := range errs {
		switch {
		case err == nil && i%2 == 0:
			want++
		case err == nil:
			want += 3
		case !errors.Is(err, store.ErrRuleLimit):
			t.Errorf("writer %d: %v, want success or ErrRuleLimit", i, err)
		}
	}
	snap := mustSnapshot(t, s)
	if len(snap.Rules) != want {
		t.Errorf("the store holds %d rules, want %d (the creates that succeeded)", len(snap.Rules), want)
	}
	if len(snap.Rules) > limit {
		t.Errorf("the store holds %d rules, over its limit of %d", len(snap.Rules), limit)
	}
	// A batch is whole or absent.
	have := map[string]bool{}
	for _, r := range snap.Rules {
		have[r.Name] = true
	}
	for i := 1; i < writers; i += 2 {
		n := 0
		for _, p := range []string{"pa", "pb", "pc"} {
			if have[fmt.Sprintf("%s%d", p, i)] {
				n++
			}
		}
		if n != 0 && n != 3 {
			t.Errorf("batch %d: %d of its 3 rules stored", i, n)
		}
	}
}

// testRuleRecordsItsVersion: a rule keeps the rules version its last edit
// made, whichever edit it was, as returned, read back and in the audit log.
func testRuleRecordsItsVersion(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	other := peer(t, b, s, clk)
	ctx := t.Context()
	check := func(what string, r rules.Rule, want int64) {
		t.Helper()
		if r.RulesVersion != want {
			t.Errorf("%s: rule %s has rules version %d, want %d", what, r.Name, r.RulesVersion, want)
		}
	}
	a := mustCreate(t, s, newRule("a", 10))
	va := mustVersion(t, s)
	check("create", a, va)
	mustCreate(t, s, newRule("b", 20))
	up, err := s.UpdateRule(ctx, newRule("a", 11), a.Revision, "u")
	if err != nil {
		t.Fatal(err)
	}
	vu := mustVersion(t, s)
	check("update", up, vu)
	res, err := other.ApplyRuleEdits(ctx, []store.RuleEdit{
		{Action: store.ActionCreate, Rule: newRule("c", 30)},
		{Action: store.ActionUpdate, Rule: newRule("b", 21), IfRevision: 1},
	}, "u", "")
	if err != nil {
		t.Fatal(err)
	}
	check("batch create", res.Rules[0], res.Version)
	check("batch update", res.Rules[1], res.Version)
	want := map[string]int64{"a": vu, "b": res.Version, "c": res.Version}
	for _, r := range mustSnapshot(t, s).Rules {
		if w, ok := want[r.Name]; ok {
			check("snapshot", r, w)
		}
	}
	got, err := s.Rule(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	check("Rule", got, vu)
	ev := allEvents(t, s, "a")[0]
	if ev.After == nil || ev.After.RulesVersion != ev.RulesVersion {
		t.Errorf("the update's audit entry: after %+v, want the rule at version %d", ev.After, ev.RulesVersion)
	}
}
