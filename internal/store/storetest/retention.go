package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// lastPage returns the last page of a listing and every event listed, page
// by page with pageSize.
func lastPage(t *testing.T, s store.Store, ruleName string, pageSize int) (store.EventPage, []store.Event) {
	t.Helper()
	var all []store.Event
	token := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("paging does not end")
		}
		page, err := s.RuleEvents(t.Context(), ruleName, pageSize, token)
		if err != nil {
			t.Fatalf("RuleEvents(%q): %v", ruleName, err)
		}
		if page.NextToken != "" && page.Trimmed {
			t.Errorf("RuleEvents(%q): Trimmed on a page that is not the last", ruleName)
		}
		all = append(all, page.Events...)
		if page.NextToken == "" {
			return page, all
		}
		token = page.NextToken
	}
}

// testEventRetention: the log of all rules keeps about its retention and
// says, on its last page, that older entries were dropped. A rule edited
// once keeps its whole history however many other edits push it out of the
// log of all rules, and says it is whole; a rule edited more than its
// history keeps says it was trimmed. (Redis trims a stream in whole nodes
// of up to 100 entries, hence the numbers.)
func testEventRetention(t *testing.T, b Backend) {
	if b.OpenTrimmed == nil {
		t.Skip("the backend cannot open a store with a short audit log")
	}
	const keep, others = 10, 300
	clk := newClock()
	s := b.OpenTrimmed(t, clk.Now, keep)
	t.Cleanup(func() { _ = s.Close() })
	ctx := t.Context()

	page, all := lastPage(t, s, "", 7)
	if page.Trimmed {
		t.Errorf("a new store's log says it was trimmed: %+v", all)
	}
	def, err := s.Rule(ctx, rules.DefaultName)
	if err != nil {
		t.Fatal(err)
	}
	def.FixedRate = 0.5
	if _, err := s.UpdateRule(ctx, def, def.Revision, "early"); err != nil {
		t.Fatal(err)
	}
	busy := mustCreate(t, s, newRule("busy", 1))
	for i := range others {
		clk.Add(time.Millisecond)
		name := fmt.Sprintf("r%d", i%20)
		if i%40 < 20 {
			mustCreate(t, s, newRule(name, 10))
		} else if err := s.DeleteRule(ctx, name, 0, "pruner"); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			next := busy
			next.FixedRate = float64(i%100) / 100
			if busy, err = s.UpdateRule(ctx, next, busy.Revision, "busy-bee"); err != nil {
				t.Fatal(err)
			}
		}
	}

	page, all = lastPage(t, s, "", 50)
	if !page.Trimmed {
		t.Errorf("after %d edits the log of all rules (%d entries listed) does not say it was trimmed", others, len(all))
	}
	if len(all) >= others {
		t.Errorf("the log of all rules keeps %d entries, with a retention of %d", len(all), keep)
	}

	page, hist := lastPage(t, s, rules.DefaultName, 1)
	var actions []store.Action
	for _, e := range hist {
		actions = append(actions, e.Action)
	}
	if !slices.Equal(actions, []store.Action{store.ActionUpdate, store.ActionCreate}) || hist[0].Actor != "early" {
		t.Errorf("Default's history after %d other edits: %+v, want its update and its creation", others, hist)
	}
	if page.Trimmed {
		t.Error("Default's whole history says it was trimmed")
	}

	if b.Durable {
		// What a rule's history keeps survives a restart.
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = b.OpenTrimmed(t, clk.Now, keep)
		t.Cleanup(func() { _ = s.Close() })
		if _, again := lastPage(t, s, rules.DefaultName, 1); len(again) != len(hist) {
			t.Errorf("Default's history after a restart: %+v, want %+v", again, hist)
		}
	}

	page, hist = lastPage(t, s, "busy", 40)
	if !page.Trimmed {
		t.Errorf("busy's history (%d of its %d entries) does not say it was trimmed", len(hist), others/2+1)
	}
	if len(hist) == 0 || hist[0].After == nil || hist[0].After.Revision != busy.Revision {
		t.Errorf("busy's history does not start with its newest revision %d", busy.Revision)
	}
	for i := 1; i < len(hist); i++ {
		if hist[i].After.Revision != hist[i-1].After.Revision-1 {
			t.Fatalf("busy's history has a gap between revisions %d and %d", hist[i].After.Revision, hist[i-1].After.Revision)
		}
	}
}
