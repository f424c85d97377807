// Package storetest is the conformance suite of store.Store: every
// implementation runs the same tests, so the server can rely on the contract
// rather than on one implementation's habits.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/clocktest"
	"github.com/tracesampling/controlplane/pkg/rules"
	"github.com/tracesampling/controlplane/pkg/rules/rulestest"
)

// Backend is one fresh, empty place to keep rules (a data directory, a Redis
// key prefix) on which the suite opens stores.
type Backend struct {
	// Open returns a store on the backend that reads time from now. The suite
	// closes the stores it opens; Open should also close them when the test
	// ends, for tests that fail half-way.
	Open func(t *testing.T, now func() time.Time) store.Store
	// Shared means several stores may be open on the backend at once, as
	// replicas share one Redis. Otherwise the suite closes each store before
	// it opens the next, and change notifications are tested on one store.
	Shared bool
	// Durable means a store opened after another was closed finds everything
	// the first one acknowledged. Otherwise it must start afresh.
	Durable bool
	// RemembersKeys means the store can fail without saying whether a
	// report batch landed, and so applies a batch's Key at most once.
	RemembersKeys bool
	// OpenLimited is Open for a store that holds at most maxRules rules
	// (its MaxRules option), so the suite reaches the limit in a few edits.
	OpenLimited func(t *testing.T, now func() time.Time, maxRules int) store.Store
	// OpenTrimmed is Open for a store whose log of all rules keeps about
	// maxEvents entries (its MaxEvents option), so the suite sees it
	// trimmed. Nil: the retention clause is skipped.
	OpenTrimmed func(t *testing.T, now func() time.Time, maxEvents int) store.Store
	// Lose erases everything a Durable backend holds, as a Redis restarted
	// without persistence does. On a Shared backend the suite calls it with
	// stores open (replicas outlive the data); otherwise with every store
	// closed. Nil: the backend cannot lose its data but by being non-Durable.
	Lose func(t *testing.T)
	// Failover, when set, kills the master that holds the backend's data
	// and returns once a replica has taken over, as Redis Cluster and
	// Sentinel do, with a function that brings the killed node back as a
	// replica. The store must keep every edit it acknowledged, and recover
	// by itself.
	Failover func(t *testing.T) (rejoin func())
}

// watchTimeout bounds the wait for a change notification.
const watchTimeout = 10 * time.Second

// Run runs the suite. newBackend returns a fresh, empty backend each time.
func Run(t *testing.T, newBackend func(t *testing.T) Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b Backend)
	}{
		{"DefaultRule", testDefaultRule},
		{"CreateAndRead", testCreateAndRead},
		{"CreateDuplicate", testCreateDuplicate},
		{"Update", testUpdate},
		{"UpdateRefused", testUpdateRefused},
		{"Delete", testDelete},
		{"DeleteRefused", testDeleteRefused},
		{"VersionGrowsOnEveryEdit", testVersion},
		{"VersionsNeverRepeatAfterDataLoss", testVersionAfterLoss},
		{"EventsRecordEdits", testEvents},
		{"EventPaging", testEventPaging},
		{"EventPagingWhileEditing", testEventPagingWhileEditing},
		{"EventListingRefused", testEventListingRefused},
		{"EventRetention", testEventRetention},
		{"WatchChanges", testWatchChanges},
		{"WatchNeverBlocksEdits", testWatchNeverBlocksEdits},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"ConcurrentCreates", testConcurrentCreates},
		{"RuleLimit", testRuleLimit},
		{"ConcurrentCreatesAtTheLimit", testConcurrentCreatesAtTheLimit},
		{"RuleRecordsItsVersion", testRuleRecordsItsVersion},
		{"BatchEdit", testBatchEdit},
		{"BatchEditRefused", testBatchEditRefused},
		{"ConcurrentBatchEdits", testConcurrentBatchEdits},
		{"ConcurrentBatchesAtTheLimit", testConcurrentBatchesAtTheLimit},
		{"ReturnsCopies", testReturnsCopies},
		{"Reopen", testReopen},
		{"EveryFieldKept", testEveryFieldKept},
		{"Close", testClose},
		{"Ledger", testLedger},
		{"LedgerOutage", testLedgerOutage},
		{"LedgerFirstQuota", testLedgerFirstQuota},
		{"LedgerFleet", testLedgerFleet},
		{"LedgerApplied", testLedgerApplied},
		{"ReceiptKeys", testReceiptKeys},
		{"Boost", testBoost},
		{"FirstBorrows", testFirstBorrows},
		{"BudgetCRUD", testBudgetCRUD},
		{"BudgetRefused", testBudgetRefused},
		{"BudgetPaging", testBudgetPaging},
		{"BudgetListingRefused", testBudgetListingRefused},
		{"ConcurrentBudgetUpdates", testConcurrentBudgetUpdates},
		{"BudgetsReturnCopies", testBudgetsReturnCopies},
		{"Usage", testUsage},
		{"UsageMonths", testUsageMonths},
		{"ReportKey", testReportKey},
		{"SequencedUsage", testSequencedUsage},
		{"UsageRefused", testUsageRefused},
		{"UsageReopen", testUsageReopen},
		{"ClaimTick", testClaimTick},
		{"States", testStates},
		{"StatesKeepNewer", testStatesKeepNewer},
		{"StatesLeftOut", testStatesLeftOut},
		{"StatesConcurrent", testStatesConcurrent},
		{"History", testHistory},
		{"FleetUsage", testFleetUsage},
		{"FireAlertOnce", testFireAlertOnce},
		{"AlertsFireSeparately", testAlertsFireSeparately},
		{"AlertPaging", testAlertPaging},
		{"AlertListingRefused", testAlertListingRefused},
		{"AlertsReopen", testAlertsReopen},
		{"WatchBudgetsAndAlerts", testWatchBudgetsAndAlerts},
		{"Failover", testFailover},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newBackend(t)) })
	}
}

// clock is the tests' fake clock; Add returns the time it moved to.
type clock = clocktest.Clock

func newClock() *clock {
	// Nanoseconds and a zone that is not UTC check that stores keep full
	// precision and return times that compare equal.
	return clocktest.New(time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("X", 3600)))
}

// open opens a store on b with clk and closes it when the test ends.
func open(t *testing.T, b Backend, clk *clock) store.Store {
	t.Helper()
	s := b.Open(t, clk.Now)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// peer returns a second store on s's backend if the backend is shared, or s.
func peer(t *testing.T, b Backend, s store.Store, clk *clock) store.Store {
	t.Helper()
	if !b.Shared {
		return s
	}
	return open(t, b, clk)
}

// newRule returns a valid rule with every field set.
func newRule(name string, priority int32) rules.Rule {
	return rules.Rule{
		Name:          name,
		Priority:      priority,
		FixedRate:     0.125,
		ReservoirSize: 7,
		ServiceName:   "checkout-*",
		ServiceType:   "AWS::ECS::Container",
		Host:          "*.example.com",
		HTTPMethod:    "POST",
		URLPath:       "/api/v?/orders*",
		ResourceARN:   "*",
		Attributes:    map[string]string{"tier": "gold", "region": "eu-*"},
		Description:   "rule " + name,
		Labels:        map[string]string{"team": "payments"},
	}
}

// stamped returns r as a store should return it.
func stamped(r rules.Rule, revision int64, created, updated time.Time) rules.Rule {
	r.Revision, r.CreateTime, r.UpdateTime = revision, created, updated
	return r
}

// diffRule describes how got differs from want, or returns "". Times are
// compared as instants, since a store may return them in another zone.
func diffRule(got, want rules.Rule) string {
	var d []string
	if !got.CreateTime.Equal(want.CreateTime) {
		d = append(d, fmt.Sprintf("CreateTime = %v, want %v", got.CreateTime, want.CreateTime))
	}
	if !got.UpdateTime.Equal(want.UpdateTime) {
		d = append(d, fmt.Sprintf("UpdateTime = %v, want %v", got.UpdateTime, want.UpdateTime))
	}
	got.CreateTime, got.UpdateTime, want.CreateTime, want.UpdateTime = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	// Checked by RuleRecordsItsVersion.
	got.RulesVersion, want.RulesVersion = 0, 0
	if len(got.Attributes) == 0 && len(want.Attributes) == 0 {
		got.Attributes, want.Attributes = nil, nil
	}
	if len(got.Labels) == 0 && len(want.Labels) == 0 {
		got.Labels, want.Labels = nil, nil
	}
	if !reflect.DeepEqual(got, want) {
		d = append(d, fmt.Sprintf("got %+v\nwant %+v", got, want))
	}
	if len(d) == 0 {
		return ""
	}
	return fmt.Sprint(d)
}

func checkRule(t *testing.T, what string, got, want rules.Rule) {
	t.Helper()
	if d := diffRule(got, want); d != "" {
		t.Errorf("%s: %s", what, d)
	}
}

func mustSnapshot(t *testing.T, s store.Store) store.Snapshot {
	t.Helper()
	snap, err := s.Snapshot(t.Context())
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	return snap
}

func mustVersion(t *testing.T, s store.Store) int64 {
	t.Helper()
	v, err := s.RulesVersion(t.Context())
	if err != nil {
		t.Fatalf("RulesVersion: %v", err)
	}
	return v
}

func mustCreate(t *testing.T, s store.Store, r rules.Rule) rules.Rule {
	t.Helper()
	got, err := s.CreateRule(t.Context(), r, "tester")
	if err != nil {
		t.Fatalf("CreateRule(%q): %v", r.Name, err)
	}
	return got
}

// allEvents lists the whole audit log (or one rule's) in one page.
func allEvents(t *testing.T, s store.Store, ruleName string) []store.Event {
	t.Helper()
	page, err := s.RuleEvents(t.Context(), ruleName, 1000, "")
	if err != nil {
		t.Fatalf("RuleEvents(%q): %v", ruleName, err)
	}
	if page.NextToken != "" {
		t.Fatalf("RuleEvents(%q): more than 1000 events", ruleName)
	}
	return page.Events
}

func names(rs []rules.Rule) []string {
	out := make([]string, len(rs))
	for i := range rs {
		out[i] = rs[i].Name
	}
	return out
}

func eventIDs(evs []store.Event) []string {
	out := make([]string, len(evs))
	for i := range evs {
		out[i] = evs[i].ID
	}
	return out
}

// checkSnapshot checks that a store holds exactly want (in order) at version.
func checkSnapshot(t *testing.T, s store.Store, want []rules.Rule, version int64) {
	t.Helper()
	snap := mustSnapshot(t, s)
	if !slices.Equal(names(snap.Rules), names(want)) {
		t.Fatalf("Snapshot rules = %q, want %q", names(snap.Rules), names(want))
	}
	for i := range want {
		checkRule(t, "Snapshot rule "+want[i].Name, snap.Rules[i], want[i])
	}
	if snap.Version != version {
		t.Errorf("Snapshot version = %d, want %d", snap.Version, version)
	}
}

func testDefaultRule(t *testing.T, b Backend) {
	clk := newClock()
	start := clk.Now()
	s := open(t, b, clk)
	clk.Add(time.Minute)

	want := stamped(rules.Default(), 1, start, start)
	first := store.FirstVersion(start)
	checkSnapshot(t, s, []rules.Rule{want}, first)
	if v := mustVersion(t, s); v != first {
		t.Errorf("RulesVersion = %d, want %d (the clock at the first edit)", v, first)
	}
	got, err := s.Rule(t.Context(), rules.DefaultName)
	if err != nil {
		t.Fatalf("Rule(Default): %v", err)
	}
	checkRule(t, "Rule(Default)", got, want)

	evs := allEvents(t, s, "")
	if len(evs) != 1 || evs[0].Action != store.ActionCreate || evs[0].RuleName != rules.DefaultName ||
		evs[0].Before != nil || evs[0].After == nil || evs[0].RulesVersion != first {
		t.Fatalf("events = %+v, want the Default rule's creation at version %d", evs, first)
	}
	checkRule(t, "creation event", *evs[0].After, want)

	// The Default rule sorts after every other rule, even one at the
	// highest priority whose name sorts after "Default".
	zzz := mustCreate(t, s, newRule("zzz-last", rules.MaxPriority))
	aaa := mustCreate(t, s, newRule("AAA-first", rules.MaxPriority))
	checkSnapshot(t, s, []rules.Rule{aaa, zzz, want}, first+2)
}

func testCreateAndRead(t *testing.T, b Backend) {
	clk := newClock()
	first := store.FirstVersion(clk.Now())
	s := open(t, b, clk)
	ctx := t.Context()

	// Created out of order: the snapshot sorts by priority, then name.
	in := []rules.Rule{
		newRule("b-mid", 20),
		newRule("z-first", 1),
		newRule("a-mid", 20),
		newRule("c-last", 9000),
		newRule("minimal", 30),
	}
	in[4] = rules.Rule{Name: "minimal", Priority: 30}
	created := map[string]rules.Rule{}
	for _, r := range in {
		now := clk.Add(time.Second)
		got, err := s.CreateRule(ctx, r, "alice")
		if err != nil {
			t.Fatalf("CreateRule(%q): %v", r.Name, err)
		}
		want := stamped(r, 1, now, now)
		checkRule(t, "CreateRule("+r.Name+")", got, want)
		created[r.Name] = want
	}
	clk.Add(time.Hour) // reads must not restamp anything
	for name, want := range created {
		got, err := s.Rule(ctx, name)
		if err != nil {
			t.Fatalf("Rule(%q): %v", name, err)
		}
		checkRule(t, "Rule("+name+")", got, want)
	}
	def, err := s.Rule(ctx, rules.DefaultName)
	if err != nil {
		t.Fatal(err)
	}
	order := []string{"z-first", "a-mid", "b-mid", "minimal", "c-last"}
	want := make([]rules.Rule, 0, len(order)+1)
	for _, n := range order {
		want = append(want, created[n])
	}
	checkSnapshot(t, s, append(want, def), first+int64(len(in)))

	if _, err := s.Rule(ctx, "no-such-rule"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Rule(unknown) error = %v, want ErrNotFound", err)
	}
}

func testCreateDuplicate(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	orig := mustCreate(t, s, newRule("dup", 10))
	before := mustSnapshot(t, s)

	for _, name := range []string{"dup", rules.DefaultName} {
		clk.Add(time.Second)
		r := newRule(name, 99)
		if name == rules.DefaultName {
			r = rules.Default()
		}
		_, err := s.CreateRule(t.Context(), r, "bob")
		if !errors.Is(err, store.ErrAlreadyExists) {
			t.Errorf("CreateRule(%q) again: error = %v, want ErrAlreadyExists", name, err)
		}
	}
	checkSnapshot(t, s, before.Rules, before.Version)
	got, err := s.Rule(t.Context(), "dup")
	if err != nil {
		t.Fatal(err)
	}
	checkRule(t, "rule after a refused create", got, orig)
}

func testUpdate(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	ctx := t.Context()
	created := mustCreate(t, s, newRule("upd", 10))

	next := newRule("upd", 5)
	next.FixedRate = 0.5
	next.Attributes = nil
	next.Labels = map[string]string{"team": "growth", "tier": "1"}
	updatedAt := clk.Add(90 * time.Second)
	got, err := s.UpdateRule(ctx, next, created.Revision, "bob")
	if err != nil {
		t.Fatalf("UpdateRule: %v", err)
	}
	want := stamped(next, 2, created.CreateTime, updatedAt)
	checkRule(t, "UpdateRule", got, want)
	read, err := s.Rule(ctx, "upd")
	if err != nil {
		t.Fatal(err)
	}
	checkRule(t, "Rule after update", read, want)

	// The revision a caller sends is what it read; a revision in the rule
	// itself is ignored.
	again := newRule("upd", 6)
	again.Revision = 99
	updatedAt = clk.Add(time.Second)
	got, err = s.UpdateRule(ctx, again, 2, "carol")
	if err != nil {
		t.Fatalf("second UpdateRule: %v", err)
	}
	checkRule(t, "second UpdateRule", got, stamped(again, 3, created.CreateTime, updatedAt))

	// The Default rule can be re-rated.
	d := rules.Default()
	d.FixedRate = 0.01
	updatedAt = clk.Add(time.Second)
	got, err = s.UpdateRule(ctx, d, 1, "dave")
	if err != nil {
		t.Fatalf("UpdateRule(Default): %v", err)
	}
	if got.Revision != 2 || got.FixedRate != 0.01 || !got.UpdateTime.Equal(updatedAt) {
		t.Errorf("UpdateRule(Default) = %+v, want revision 2, rate 0.01, updated %v", got, updatedAt)
	}
}

func testUpdateRefused(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	ctx := t.Context()
	r := mustCreate(t, s, newRule("r", 10))
	r2, err := s.UpdateRule(ctx, newRule("r", 11), r.Revision, "alice")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		rule       rules.Rule
		ifRevision int64
		want       error
	}{
		{"stale revision", newRule("r", 12), r.Revision, store.ErrConflict},
		{"future revision", newRule("r", 12), r2.Revision + 1, store.ErrConflict},
		{"revision zero", newRule("r", 12), 0, store.ErrConflict},
		{"unknown rule", newRule("ghost", 12), 1, store.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := mustSnapshot(t, s)
			eventsBefore := allEvents(t, s, "")
			clk.Add(time.Second)
			if _, err := s.UpdateRule(ctx, tt.rule, tt.ifRevision, "mallory"); !errors.Is(err, tt.want) {
				t.Fatalf("UpdateRule error = %v, want %v", err, tt.want)
			}
			checkSnapshot(t, s, before.Rules, before.Version)
			if got := allEvents(t, s, ""); !slices.Equal(eventIDs(got), eventIDs(eventsBefore)) {
				t.Errorf("a refused update was logged: events %q, want %q", eventIDs(got), eventIDs(eventsBefore))
			}
		})
	}
}

func testDelete(t *testing.T, b Backend) {
	tests := []struct {
		name       string
		ifRevision func(r rules.Rule) int64
	}{
		{"any revision", func(rules.Rule) int64 { return 0 }},
		{"current revision", func(r rules.Rule) int64 { return r.Revision }},
	}
	clk := newClock()
	s := open(t, b, clk)
	ctx := t.Context()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustCreate(t, s, newRule("del", 10))
			r, err := s.UpdateRule(ctx, newRule("del", 11), r.Revision, "alice")
			if err != nil {
				t.Fatal(err)
			}
			v := mustVersion(t, s)
			if err := s.DeleteRule(ctx, "del", tt.ifRevision(r), "bob"); err != nil {
				t.Fatalf("DeleteRule: %v", err)
			}
			if _, err := s.Rule(ctx, "del"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Rule after delete: error = %v, want ErrNotFound", err)
			}
			if got := mustVersion(t, s); got != v+1 {
				t.Errorf("version after delete = %d, want %d", got, v+1)
			}
			if snap := mustSnapshot(t, s); slices.Contains(names(snap.Rules), "del") {
				t.Errorf("Snapshot after delete still has the rule: %q", names(snap.Rules))
			}
			// The name is free again, and the new rule starts afresh.
			now := clk.Add(time.Second)
			re := mustCreate(t, s, newRule("del", 12))
			checkRule(t, "re-created rule", re, stamped(newRule("del", 12), 1, now, now))
			if err := s.DeleteRule(ctx, "del", 0, "bob"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func testDeleteRefused(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	ctx := t.Context()
	r := mustCreate(t, s, newRule("keep", 10))
	if _, err := s.UpdateRule(ctx, newRule("keep", 10), r.Revision, "alice"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		rule       string
		ifRevision int64
		want       error
	}{
		{"stale revision", "keep", 1, store.ErrConflict},
		{"future revision", "keep", 3, store.ErrConflict},
		{"unknown rule", "ghost", 0, store.ErrNotFound},
		{"unknown rule with revision", "ghost", 1, store.ErrNotFound},
		{"Default rule", rules.DefaultName, 0, rules.ErrDefaultRule},
		{"Default rule at its revision", rules.DefaultName, 1, rules.ErrDefaultRule},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := mustSnapshot(t, s)
			eventsBefore := allEvents(t, s, "")
			if err := s.DeleteRule(ctx, tt.rule, tt.ifRevision, "mallory"); !errors.Is(err, tt.want) {
				t.Fatalf("DeleteRule error = %v, want %v", err, tt.want)
			}
			checkSnapshot(t, s, before.Rules, before.Version)
			if got := allEvents(t, s, ""); len(got) != len(eventsBefore) {
				t.Errorf("a refused delete was logged: %d events, want %d", len(got), len(eventsBefore))
			}
		})
	}
}

func testVersion(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	ctx := t.Context()
	steps := []struct {
		name string
		edit func() error
		ok   bool
	}{
		{"create a", func() error { _, err := s.CreateRule(ctx, newRule("a", 1), "u"); return err }, true},
		{"create a again", func() error { _, err := s.CreateRule(ctx, newRule("a", 1), "u"); return err }, false},
		{"create b", func() error { _, err := s.CreateRule(ctx, newRule("b", 2), "u"); return err }, true},
		{"update a", func() error { _, err := s.UpdateRule(ctx, newRule("a", 3), 1, "u"); return err }, true},
		{"stale update a", func() error { _, err := s.UpdateRule(ctx, newRule("a", 4), 1, "u"); return err }, false},
		{"update ghost", func() error { _, err := s.UpdateRule(ctx, newRule("ghost", 4), 1, "u"); return err }, false},
		{"stale delete b", func() error { return s.DeleteRule(ctx, "b", 7, "u") }, false},
		{"delete Default", func() error { return s.DeleteRule(ctx, rules.DefaultName, 0, "u") }, false},
		{"delete b", func() error { return s.DeleteRule(ctx, "b", 1, "u") }, true},
		{"delete ghost", func() error { return s.DeleteRule(ctx, "ghost", 0, "u") }, false},
		{"update Default", func() error { _, err := s.UpdateRule(ctx, rules.Default(), 1, "u"); return err }, true},
	}
	v := mustVersion(t, s)
	for _, st := range steps {
		clk.Add(time.Second)
		err := st.edit()
		if (err == nil) != st.ok {
			t.Fatalf("%s: error = %v, want success %v", st.name, err, st.ok)
		}
		got := mustVersion(t, s)
		switch {
		case st.ok && got <= v:
			t.Fatalf("%s: version %d after %d, want it to grow", st.name, got, v)
		case !st.ok && got != v:
			t.Fatalf("%s failed but moved the version from %d to %d", st.name, v, got)
		}
		if st.ok {
			evs := allEvents(t, s, "")
			if evs[0].RulesVersion != got {
				t.Errorf("%s: newest event has version %d, want %d", st.name, evs[0].RulesVersion, got)
			}
		}
		if snap := mustSnapshot(t, s); snap.Version != got {
			t.Errorf("%s: Snapshot version %d, RulesVersion %d", st.name, snap.Version, got)
		}
		v = got
	}
}

func testEvents(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	ctx := t.Context()

	tCreate := clk.Add(time.Second)
	created, err := s.CreateRule(ctx, newRule("ev", 10), "alice")
	if err != nil {
		t.Fatal(err)
	}
	vCreate := mustVersion(t, s)
	mustCreate(t, s, newRule("other", 20))
	tUpdate := clk.Add(time.Second)
	updated, err := s.UpdateRule(ctx, newRule("ev", 11), 1, "bob")
	if err != nil {
		t.Fatal(err)
	}
	vUpdate := mustVersion(t, s)
	tDelete := clk.Add(time.Second)
	if err := s.DeleteRule(ctx, "ev", 0, "carol"); err != nil {
		t.Fatal(err)
	}
	vDelete := mustVersion(t, s)

	want := []struct {
		action        store.Action
		actor         string
		at            time.Time
		before, after *rules.Rule
		version       int64
	}{
		{store.ActionDelete, "carol", tDelete, &updated, nil, vDelete},
		{store.ActionUpdate, "bob", tUpdate, &created, &updated, vUpdate},
		{store.ActionCreate, "alice", tCreate, nil, &created, vCreate},
	}
	got := allEvents(t, s, "ev")
	if len(got) != len(want) {
		t.Fatalf("RuleEvents(ev) returned %d events, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.RuleName != "ev" || g.Action != w.action || g.Actor != w.actor || !g.Time.Equal(w.at) || g.RulesVersion != w.version {
			t.Errorf("event %d = {%s %s by %q at %v, version %d}, want {ev %s by %q at %v, version %d}",
				i, g.RuleName, g.Action, g.Actor, g.Time, g.RulesVersion, w.action, w.actor, w.at, w.version)
		}
		for _, side := range []struct {
			name      string
			got, want *rules.Rule
		}{{"Before", g.Before, w.before}, {"After", g.After, w.after}} {
			switch {
			case side.want == nil && side.got != nil:
				t.Errorf("event %d: %s = %+v, want nil", i, side.name, side.got)
			case side.want != nil && side.got == nil:
				t.Errorf("event %d: %s = nil, want the rule", i, side.name)
			case side.want != nil:
				checkRule(t, fmt.Sprintf("event %d %s", i, side.name), *side.got, *side.want)
			}
		}
	}

	all := allEvents(t, s, "")
	if len(all) != 5 { // the Default rule's creation, then four edits
		t.Fatalf("RuleEvents() returned %d events, want 5", len(all))
	}
	ids := map[string]bool{}
	for i, ev := range all {
		if ids[ev.ID] || ev.ID == "" {
			t.Errorf("event %d has a missing or repeated ID %q", i, ev.ID)
		}
		ids[ev.ID] = true
		if i > 0 && ev.RulesVersion >= all[i-1].RulesVersion {
			t.Errorf("events not newest first: version %d after %d", ev.RulesVersion, all[i-1].RulesVersion)
		}
	}
	if evs := allEvents(t, s, "never-existed"); len(evs) != 0 {
		t.Errorf("RuleEvents(never-existed) = %+v, want none", evs)
	}
}

// makeEvents makes n edits spread over two rules and returns the whole log.
func makeEvents(t *testing.T, s store.Store, clk *clock, n int) []store.Event {
	t.Helper()
	ctx := t.Context()
	revs := map[string]int64{}
	for i := range n {
		clk.Add(time.Millisecond)
		name := []string{"alpha", "beta"}[i%2]
		var err error
		if revs[name] == 0 {
			_, err = s.CreateRule(ctx, newRule(name, 10), "pager")
		} else {
			_, err = s.UpdateRule(ctx, newRule(name, int32(10+i)), revs[name], "pager")
		}
		if err != nil {
			t.Fatalf("edit %d: %v", i, err)
		}
		revs[name]++
	}
	return allEvents(t, s, "")
}

// collect lists the log page by page with pageSize and checks each page.
func collect(t *testing.T, s store.Store, ruleName string, pageSize int) []store.Event {
	t.Helper()
	size := pageSize
	if size == 0 {
		size = 100 // the documented default
	}
	var out []store.Event
	token := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("paging does not end")
		}
		page, err := s.RuleEvents(t.Context(), ruleName, pageSize, token)
		if err != nil {
			t.Fatalf("RuleEvents(%q, %d, page %d): %v", ruleName, pageSize, pages, err)
		}
		if len(page.Events) > size {
			t.Fatalf("page %d has %d events, more than the page size %d", pages, len(page.Events), size)
		}
		if page.NextToken != "" && len(page.Events) != size {
			t.Fatalf("page %d has %d events and a next page, want a full page of %d", pages, len(page.Events), size)
		}
		out = append(out, page.Events...)
		if page.NextToken == "" {
			return out
		}
		token = page.NextToken
	}
}

func testEventPaging(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	all := makeEvents(t, s, clk, 23) // with the Default's creation: 24
	var alpha []store.Event
	for _, ev := range all {
		if ev.RuleName == "alpha" {
			alpha = append(alpha, ev)
		}
	}
	tests := []struct {
		name     string
		rule     string
		pageSize int
		want     []store.Event
	}{
		{"one per page", "", 1, all},
		{"pages of 5", "", 5, all},
		{"pages of 7", "", 7, all},
		{"exact fit", "", 24, all},
		{"one page", "", 100, all},
		{"default size", "", 0, all},
		{"one rule, pages of 4", "alpha", 4, alpha},
		{"one rule, pages of 5", "alpha", 5, alpha},
		{"one rule, one page", "alpha", 50, alpha},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := collect(t, s, tt.rule, tt.pageSize)
			if !slices.Equal(eventIDs(got), eventIDs(tt.want)) {
				t.Fatalf("paged events %q, want %q", eventIDs(got), eventIDs(tt.want))
			}
		})
	}
}

func testEventPagingWhileEditing(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	all := makeEvents(t, s, clk, 9) // 10 with the Default's creation

	first, err := s.RuleEvents(t.Context(), "", 4, "")
	if err != nil {
		t.Fatal(err)
	}
	// Edits between pages are newer than the listing: they must not push
	// entries already listed onto the next page.
	mustCreate(t, s, newRule("late", 10))
	got := first.Events
	token := first.NextToken
	for token != "" {
		page, err := s.RuleEvents(t.Context(), "", 4, token)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page.Events...)
		token = page.NextToken
	}
	if !slices.Equal(eventIDs(got), eventIDs(all)) {
		t.Fatalf("paged events %q, want %q", eventIDs(got), eventIDs(all))
	}
}

func testEventListingRefused(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	makeEvents(t, s, clk, 3)
	page, err := s.RuleEvents(t.Context(), "", 1, "")
	if err != nil || page.NextToken == "" {
		t.Fatalf("RuleEvents = %+v, %v; want a next page", page, err)
	}
	tests := []struct {
		name     string
		pageSize int
		token    string
		field    string
	}{
		{"not base64", 10, "!!!not a token!!!", "page_token"},
		{"base64 of junk", 10, "aGVsbG8gd29ybGQ", "page_token"},
		{"truncated", 10, page.NextToken[:len(page.NextToken)/2], "page_token"},
		{"extended", 10, page.NextToken + "AAAA", "page_token"},
		{"negative page size", -1, "", "page_size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.RuleEvents(t.Context(), "", tt.pageSize, tt.token)
			var verr *rules.ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("RuleEvents error = %v, want a *rules.ValidationError", err)
			}
			if len(verr.Violations) != 1 || verr.Violations[0].Field != tt.field {
				t.Errorf("violations = %+v, want one for %s", verr.Violations, tt.field)
			}
		})
	}
}

// watch runs WatchChanges until the test ends and returns its notifications.
// notify never blocks: notifications are hints, and a full buffer still
// holds one.
func watch(t *testing.T, s store.Store) (<-chan store.Topic, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan store.Topic, 64)
	done := make(chan error, 1)
	go func() {
		done <- s.WatchChanges(ctx, func(topic store.Topic) {
			select {
			case ch <- topic:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return ch, done
}

// waitTopic waits for a notification of topic, passing over others: a
// store may announce every topic when it (re)subscribes.
func waitTopic(t *testing.T, ch <-chan store.Topic, want store.Topic, what string) {
	t.Helper()
	timeout := time.After(watchTimeout)
	for {
		select {
		case topic := <-ch:
			if topic == want {
				return
			}
		case <-timeout:
			t.Fatalf("%s: no %q notification within %v", what, want, watchTimeout)
		}
	}
}

// drain empties ch.
func drain(ch <-chan store.Topic) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func testWatchChanges(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	editor := peer(t, b, s, clk)
	ctx := t.Context()

	ch, _ := watch(t, s)
	waitTopic(t, ch, store.TopicRules, "on subscribing")
	edits := []struct {
		name string
		edit func() error
	}{
		{"create", func() error { _, err := editor.CreateRule(ctx, newRule("w", 1), "u"); return err }},
		{"update", func() error { _, err := editor.UpdateRule(ctx, newRule("w", 2), 1, "u"); return err }},
		{"delete", func() error { return editor.DeleteRule(ctx, "w", 0, "u") }},
	}
	for _, e := range edits {
		drain(ch)
		if err := e.edit(); err != nil {
			t.Fatalf("%s: %v", e.name, err)
		}
		waitTopic(t, ch, store.TopicRules, "after "+e.name)
	}

	// WatchChanges ends with its context and returns its error.
	wctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.WatchChanges(wctx, func(store.Topic) {}) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("WatchChanges returned %v, want context.Canceled", err)
		}
	case <-time.After(watchTimeout):
		t.Fatal("WatchChanges did not return after its context was cancelled")
	}
}

func testWatchNeverBlocksEdits(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	ctx, cancel := context.WithCancel(context.Background())
	release := make(chan struct{})
	stuck := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		done <- s.WatchChanges(ctx, func(store.Topic) {
			once.Do(func() { close(stuck) })
			<-release // a watcher stuck in notify
		})
	}()
	t.Cleanup(func() {
		cancel()
		close(release)
		<-done
	})
	select {
	case <-stuck:
	case <-time.After(watchTimeout):
		t.Fatalf("no notification on subscribing within %v", watchTimeout)
	}

	finished := make(chan error, 1)
	go func() {
		for i := range 20 {
			if _, err := s.CreateRule(context.Background(), newRule(fmt.Sprintf("n%d", i), 10), "u"); err != nil {
				finished <- err
				return
			}
		}
		finished <- nil
	}()
	select {
	case err := <-finished:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(watchTimeout):
		t.Fatal("edits blocked behind a watcher that does not return")
	}
}

func testConcurrentUpdates(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	stores := []store.Store{s, peer(t, b, s, clk)}
	r := mustCreate(t, s, newRule("hot", 10))
	v := mustVersion(t, s)

	const writers = 16
	errs := make([]error, writers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range writers {
		wg.Go(func() {
			<-start
			_, errs[i] = stores[i%len(stores)].UpdateRule(context.Background(), newRule("hot", int32(100+i)), r.Revision, fmt.Sprint("writer", i))
		})
	}
	close(start)
	wg.Wait()

	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("writers %d and %d both won", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("writer %d: error = %v, want ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer won")
	}
	got, err := s.Rule(t.Context(), "hot")
	if err != nil {
		t.Fatal(err)
	}
	if got.Revision != 2 || got.Priority != int32(100+winner) {
		t.Errorf("rule = revision %d priority %d, want revision 2 priority %d", got.Revision, got.Priority, 100+winner)
	}
	if got := mustVersion(t, s); got != v+1 {
		t.Errorf("version = %d, want %d: exactly one edit", got, v+1)
	}
	if evs := allEvents(t, s, "hot"); len(evs) != 2 {
		t.Errorf("%d events for the rule, want 2 (create and one update)", len(evs))
	}
}

func testConcurrentCreates(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	stores := []store.Store{s, peer(t, b, s, clk)}
	const writers = 16
	errs := make([]error, writers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range writers {
		wg.Go(func() {
			<-start
			_, errs[i] = stores[i%len(stores)].CreateRule(context.Background(), newRule("new", int32(1+i)), "u")
		})
	}
	close(start)
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrAlreadyExists):
			t.Errorf("writer %d: error = %v, want ErrAlreadyExists", i, err)
		}
	}
	if won != 1 {
		t.Errorf("%d creates won, want 1", won)
	}
	if v, want := mustVersion(t, s), store.FirstVersion(clk.Now())+1; v != want {
		t.Errorf("version = %d, want %d", v, want)
	}
}

// openLimited opens a store on b that holds at most maxRules rules, and a
// second one (a replica) if the backend is shared.
func openLimited(t *testing.T, b Backend, clk *clock, maxRules int) (s, peer store.Store) {
	t.Helper()
	if b.OpenLimited == nil {
		t.Fatal("the backend has no OpenLimited")
	}
	s = b.OpenLimited(t, clk.Now, maxRules)
	t.Cleanup(func() { _ = s.Close() })
	peer = s
	if b.Shared {
		peer = b.OpenLimited(t, clk.Now, maxRules)
		t.Cleanup(func() { _ = peer.Close() })
	}
	return s, peer
}

// testRuleLimit: a create past the limit (the Default rule counts) is refused
// with ErrRuleLimit and changes nothing; updates still work at the limit,
// an existing name is still ErrAlreadyExists, and a delete makes room.
func testRuleLimit(t *testing.T, b Backend) {
	const limit = 4
	clk := newClock()
	s, other := openLimited(t, b, clk, limit)
	ctx := t.Context()
	var created []rules.Rule
	for i := range limit - 1 {
		created = append(created, mustCreate(t, s, newRule(fmt.Sprintf("r%d", i), int32(1+i))))
	}
	version := mustVersion(t, s)
	events := len(allEvents(t, s, ""))
	for _, st := range []store.Store{s, other} {
		if _, err := st.CreateRule(ctx, newRule("over", 50), "u"); !errors.Is(err, store.ErrRuleLimit) {
			t.Fatalf("create past the limit: error = %v, want ErrRuleLimit", err)
		}
	}
	if _, err := s.CreateRule(ctx, newRule("r0", 50), "u"); !errors.Is(err, store.ErrAlreadyExists) {
		t.Errorf("create of an existing rule at the limit: error = %v, want ErrAlreadyExists", err)
	}
	if v := mustVersion(t, s); v != version {
		t.Errorf("version = %d after refused creates, want %d", v, version)
	}
	if n := len(allEvents(t, s, "")); n != events {
		t.Errorf("%d audit events after refused creates, want %d", n, events)
	}
	if _, err := s.Rule(ctx, "over"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused rule: Rule error = %v, want ErrNotFound", err)
	}
	r := created[0]
	r.FixedRate = 0.5
	if _, err := s.UpdateRule(ctx, r, r.Revision, "u"); err != nil {
		t.Errorf("update at the limit: %v", err)
	}
	if err := s.DeleteRule(ctx, "r1", 0, "u"); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, other, newRule("over", 50))
	if n := len(mustSnapshot(t, s).Rules); n != limit {
		t.Errorf("the store holds %d rules, want %d", n, limit)
	}
}

// testConcurrentCreatesAtTheLimit: creates racing on two replicas for the
// last free places take exactly those places.
func testConcurrentCreatesAtTheLimit(t *testing.T, b Backend) {
	const limit, free, writers = 10, 3, 16
	clk := newClock()
	s, other := openLimited(t, b, clk, limit)
	stores := []store.Store{s, other}
	for i := range limit - 1 - free {
		mustCreate(t, s, newRule(fmt.Sprintf("r%d", i), int32(1+i)))
	}
	version := mustVersion(t, s)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range writers {
		wg.Go(func() {
			<-start
			_, errs[i] = stores[i%len(stores)].CreateRule(context.Background(), newRule(fmt.Sprintf("new%d", i), int32(100+i)), "u")
		})
	}
	close(start)
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrRuleLimit):
			t.Errorf("writer %d: error = %v, want ErrRuleLimit", i, err)
		}
	}
	if won != free {
		t.Errorf("%d creates won, want %d", won, free)
	}
	if n := len(mustSnapshot(t, s).Rules); n != limit {
		t.Errorf("the store holds %d rules, want %d", n, limit)
	}
	if v := mustVersion(t, s); v != version+free {
		t.Errorf("version = %d, want %d", v, version+free)
	}
}

func testReturnsCopies(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	ctx := t.Context()

	in := newRule("copy", 10)
	created, err := s.CreateRule(ctx, in, "u")
	if err != nil {
		t.Fatal(err)
	}
	want := created.Clone()
	// Change every map the caller holds: the argument and each result.
	in.Attributes["tier"], in.Labels["team"] = "changed", "changed"
	created.Attributes["tier"], created.Labels["new"] = "changed", "x"
	got, err := s.Rule(ctx, "copy")
	if err != nil {
		t.Fatal(err)
	}
	got.Attributes["tier"] = "changed"
	snap := mustSnapshot(t, s)
	for i := range snap.Rules {
		maps.DeleteFunc(snap.Rules[i].Labels, func(string, string) bool { return true })
	}
	evs := allEvents(t, s, "copy")
	evs[0].After.Attributes["tier"] = "changed"

	got, err = s.Rule(ctx, "copy")
	if err != nil {
		t.Fatal(err)
	}
	checkRule(t, "rule after callers changed their copies", got, want)
	checkRule(t, "event after callers changed their copies", *allEvents(t, s, "copy")[0].After, want)

	// Same for an update's argument and result.
	next := newRule("copy", 11)
	updated, err := s.UpdateRule(ctx, next, 1, "u")
	if err != nil {
		t.Fatal(err)
	}
	want = updated.Clone()
	next.Labels["team"], updated.Attributes["region"] = "changed", "changed"
	got, err = s.Rule(ctx, "copy")
	if err != nil {
		t.Fatal(err)
	}
	checkRule(t, "rule after callers changed update copies", got, want)
}

func testReopen(t *testing.T, b Backend) {
	clk := newClock()
	ctx := t.Context()
	s := b.Open(t, clk.Now)
	mustCreate(t, s, newRule("kept", 10))
	mustCreate(t, s, newRule("gone", 20))
	if _, err := s.UpdateRule(ctx, newRule("kept", 11), 1, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRule(ctx, "gone", 0, "bob"); err != nil {
		t.Fatal(err)
	}
	wantSnap := mustSnapshot(t, s)
	wantEvents := allEvents(t, s, "")
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	clk.Add(time.Hour)
	s2 := open(t, b, clk)
	if !b.Durable {
		// A fresh store: only the Default rule, stamped now, at a version
		// above every one the lost store handed out.
		now := clk.Now()
		checkSnapshot(t, s2, []rules.Rule{stamped(rules.Default(), 1, now, now)}, store.FirstVersion(now))
		if v := mustVersion(t, s2); v <= wantSnap.Version {
			t.Errorf("the fresh store is at version %d, not above the lost store's %d", v, wantSnap.Version)
		}
		if evs := allEvents(t, s2, ""); len(evs) != 1 {
			t.Errorf("reopened store has %d events, want 1", len(evs))
		}
		return
	}
	checkSnapshot(t, s2, wantSnap.Rules, wantSnap.Version)
	gotEvents := allEvents(t, s2, "")
	if !slices.Equal(eventIDs(gotEvents), eventIDs(wantEvents)) {
		t.Fatalf("events after reopening %q, want %q", eventIDs(gotEvents), eventIDs(wantEvents))
	}
	for i := range wantEvents {
		g, w := gotEvents[i], wantEvents[i]
		if g.Action != w.Action || g.Actor != w.Actor || !g.Time.Equal(w.Time) || g.RulesVersion != w.RulesVersion ||
			(g.Before == nil) != (w.Before == nil) || (g.After == nil) != (w.After == nil) {
			t.Errorf("event %d after reopening = %+v, want %+v", i, g, w)
		}
	}
	// Edits go on from where they were: the version keeps growing and
	// revisions are kept.
	if _, err := s2.UpdateRule(ctx, newRule("kept", 12), 2, "carol"); err != nil {
		t.Fatalf("update after reopening: %v", err)
	}
	if v := mustVersion(t, s2); v != wantSnap.Version+1 {
		t.Errorf("version after reopening and editing = %d, want %d", v, wantSnap.Version+1)
	}
}

// testVersionAfterLoss: a store that lost its data (a new embedded store
// without a data directory, Redis restarted without persistence) must not
// hand out a version it handed out before, or an SDK that reconnects with
// that version is told its stale rules are current.
func testVersionAfterLoss(t *testing.T, b Backend) {
	clk := newClock()
	ctx := t.Context()
	s := b.Open(t, clk.Now)
	t.Cleanup(func() { _ = s.Close() })
	r := mustCreate(t, s, newRule("lost", 10))
	for range 5 {
		clk.Add(time.Millisecond)
		var err error
		if r, err = s.UpdateRule(ctx, r, r.Revision, "u"); err != nil {
			t.Fatal(err)
		}
	}
	high := mustVersion(t, s)

	clk.Add(time.Second)
	switch {
	case !b.Durable:
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = open(t, b, clk)
	case b.Lose == nil:
		t.Skip("the backend cannot lose its data")
	case b.Shared:
		b.Lose(t) // the replica's store stays open
	default:
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		b.Lose(t)
		s = open(t, b, clk)
	}
	// The first edit after the loss, then the snapshot that puts the
	// Default rule back where it went missing.
	mustCreate(t, s, newRule("after", 10))
	afterEdit := mustVersion(t, s)
	snap := mustSnapshot(t, s)
	if !slices.Contains(names(snap.Rules), rules.DefaultName) || !slices.Contains(names(snap.Rules), "after") || slices.Contains(names(snap.Rules), "lost") {
		t.Fatalf("after the loss the store holds %q, want the Default rule and \"after\"", names(snap.Rules))
	}
	if afterEdit <= high || snap.Version < afterEdit {
		t.Errorf("versions after the loss: %d after an edit, %d in the snapshot; want both above %d, the highest before", afterEdit, snap.Version, high)
	}
}

func testClose(t *testing.T, b Backend) {
	clk := newClock()
	s := b.Open(t, clk.Now)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// testEveryFieldKept: a rule with every field set (rulestest.Filled, so
// whatever fields rules.Rule has) reads back with each of them: from a
// create, an update, the audit log and, on a durable backend, a store
// opened after the first was closed.
func testEveryFieldKept(t *testing.T, b Backend) {
	clk := newClock()
	ctx := t.Context()
	s := b.Open(t, clk.Now)
	check := func(where string, want, got rules.Rule) {
		t.Helper()
		if diff := cmp.Diff(want, rulestest.Without(t, got, rulestest.StoreSet...)); diff != "" {
			t.Errorf("%s lost a field of the rule (-put +read):\n%s", where, diff)
		}
	}
	want := rulestest.Without(t, rulestest.Filled(t, 1), rulestest.StoreSet...)
	created := mustCreate(t, s, want)
	check("CreateRule's answer", want, created)
	got, err := s.Rule(ctx, want.Name)
	if err != nil {
		t.Fatal(err)
	}
	check("Rule after a create", want, got)

	next := rulestest.Without(t, rulestest.Filled(t, 2), rulestest.StoreSet...)
	next.Name = want.Name
	updated, err := s.UpdateRule(ctx, next, created.Revision, "tester")
	if err != nil {
		t.Fatal(err)
	}
	check("UpdateRule's answer", next, updated)
	for _, r := range mustSnapshot(t, s).Rules {
		if r.Name == next.Name {
			check("Snapshot after an update", next, r)
		}
	}
	evs := allEvents(t, s, next.Name)
	if len(evs) != 2 || evs[0].Before == nil || evs[0].After == nil {
		t.Fatalf("%d events of %q, want the update (with the rule before and after) and the create", len(evs), next.Name)
	}
	check("the audit log's rule before", want, *evs[0].Before)
	check("the audit log's rule after", next, *evs[0].After)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if !b.Durable {
		return
	}
	got, err = open(t, b, clk).Rule(ctx, next.Name)
	if err != nil {
		t.Fatal(err)
	}
	check("Rule after reopening", next, got)
}
