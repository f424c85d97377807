package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// Failover clause timing.
const (
	// failoverEditEvery paces the writer; failoverMaxEdits bounds what it
	// adds to the store.
	failoverEditEvery = 40 * time.Millisecond
	failoverMaxEdits  = 400
	// failoverRecovery bounds how long after Backend.Failover returns the
	// store may still fail: clients must find the new master by
	// themselves, soon.
	failoverRecovery = 20 * time.Second
	// failoverCallTimeout bounds one call, so that none hangs on a dead
	// master.
	failoverCallTimeout = 5 * time.Second
)

// failoverLog is what the writer learnt. An edit that failed without
// ErrNotApplied may or may not have landed.
type failoverLog struct {
	mu      sync.Mutex
	rules   map[string]rules.Rule    // acknowledged creates
	budgets map[string]budget.Budget // acknowledged creates
	unknown map[string]bool          // failed creates that may have landed
	errs    map[string]int           // failures by kind, for the log
	wrong   []error                  // errors that are not ErrUnavailable
}

// testFailover kills the master that holds the backend's data while a
// writer creates rules and budgets and a reader takes snapshots. Every
// error meanwhile says ErrUnavailable; no snapshot lacks an acknowledged
// rule; the store takes edits again soon after a replica took over, and
// a watcher hears them; every acknowledged edit is still there, intact.
func testFailover(t *testing.T, b Backend) {
	if b.Failover == nil {
		t.Skip("the backend has no replica to fail over to")
	}
	clk := newClock()
	s := open(t, b, clk)
	ch, _ := watch(t, peer(t, b, s, clk))
	waitTopic(t, ch, store.TopicRules, "on subscribing")

	log := &failoverLog{
		rules: map[string]rules.Rule{}, budgets: map[string]budget.Budget{},
		unknown: map[string]bool{}, errs: map[string]int{},
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { failoverWriter(s, log, stop) })
	wg.Go(func() { failoverReader(s, log, stop) })
	stopAll := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopAll)

	// Some edits before the fault, so that the fault meets a store in use.
	failoverWaitFor(t, "acknowledged edits before the failover", func() bool {
		log.mu.Lock()
		defer log.mu.Unlock()
		return len(log.rules)+len(log.budgets) >= 6
	})
	start := time.Now()
	rejoin := b.Failover(t)
	failedOver := time.Now()

	// The store takes an edit again, and a watcher hears of it.
	var after rules.Rule
	recovery := time.Now().Add(failoverRecovery)
	for {
		drain(ch)
		ctx, cancel := context.WithTimeout(context.Background(), failoverCallTimeout)
		r, err := s.CreateRule(ctx, newRule("after-failover", 9999), "u")
		cancel()
		if err == nil {
			after = r
			break
		}
		if !errors.Is(err, store.ErrUnavailable) && !errors.Is(err, store.ErrAlreadyExists) {
			t.Fatalf("CreateRule after the failover: %v, want ErrUnavailable while it lasts", err)
		}
		if errors.Is(err, store.ErrAlreadyExists) {
			// An earlier try landed without its answer.
			if after, err = s.Rule(t.Context(), "after-failover"); err == nil {
				break
			}
		}
		if time.Now().After(recovery) {
			t.Fatalf("the store still fails %v after the failover: %v", failoverRecovery, err)
		}
		time.Sleep(failoverEditEvery) // pacing, not synchronisation
	}
	t.Logf("failover took %v; the store took an edit again %v after it", failedOver.Sub(start), time.Since(failedOver).Round(time.Millisecond))
	waitTopic(t, ch, store.TopicRules, "after an edit once the failover was over")
	stopAll()
	rejoin()

	log.mu.Lock()
	defer log.mu.Unlock()
	for _, err := range log.wrong {
		t.Errorf("during the failover: %v, want an error wrapping ErrUnavailable", err)
	}
	t.Logf("%d rules and %d budgets acknowledged, %d edits of unknown outcome, failures %v",
		len(log.rules), len(log.budgets), len(log.unknown), log.errs)

	// Every acknowledged edit survived, intact; nothing else appeared.
	snap := failoverSnapshot(t, s)
	got := map[string]rules.Rule{}
	for _, r := range snap.Rules {
		got[r.Name] = r
	}
	log.rules[after.Name] = after
	for name, want := range log.rules {
		g, ok := got[name]
		if !ok {
			t.Errorf("acknowledged rule %q is lost", name)
			continue
		}
		checkRule(t, "rule "+name+" after the failover", g, want)
	}
	for name := range got {
		if _, ok := log.rules[name]; !ok && !log.unknown[name] && name != rules.DefaultName {
			t.Errorf("rule %q is in the store, but was never sent", name)
		}
	}
	for name, want := range log.budgets {
		ctx, cancel := context.WithTimeout(context.Background(), failoverCallTimeout)
		g, err := s.Budget(ctx, name)
		cancel()
		if err != nil {
			t.Errorf("acknowledged budget %q: %v", name, err)
			continue
		}
		checkBudget(t, "budget "+name+" after the failover", g, want)
	}
}

// failoverWriter creates rules and budgets, alternately, until stop is
// closed or it has made failoverMaxEdits.
func failoverWriter(s store.Store, log *failoverLog, stop <-chan struct{}) {
	tick := time.NewTicker(failoverEditEvery)
	defer tick.Stop()
	for i := range failoverMaxEdits {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		name := fmt.Sprintf("fo-%04d", i)
		ctx, cancel := context.WithTimeout(context.Background(), failoverCallTimeout)
		var err error
		var r rules.Rule
		var bu budget.Budget
		if i%2 == 0 {
			r, err = s.CreateRule(ctx, newRule(name, int32(i+1)), "u")
		} else {
			bu, err = s.CreateBudget(ctx, newBudget(name))
		}
		cancel()
		log.mu.Lock()
		switch {
		case err == nil && i%2 == 0:
			log.rules[name] = r
		case err == nil:
			log.budgets[name] = bu
		case errors.Is(err, store.ErrUnavailable):
			log.errs[failureKind(err)]++
			if !errors.Is(err, store.ErrNotApplied) {
				log.unknown[name] = true
			}
		default:
			log.wrong = append(log.wrong, fmt.Errorf("create %s: %w", name, err))
		}
		log.mu.Unlock()
	}
}

// failoverReader takes snapshots until stop is closed: each fails with
// ErrUnavailable or holds every rule acknowledged before it began.
func failoverReader(s store.Store, log *failoverLog, stop <-chan struct{}) {
	tick := time.NewTicker(failoverEditEvery / 2)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		log.mu.Lock()
		acked := maps.Clone(log.rules)
		log.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), failoverCallTimeout)
		snap, err := s.Snapshot(ctx)
		cancel()
		log.mu.Lock()
		switch {
		case errors.Is(err, store.ErrUnavailable):
			log.errs["snapshot: "+failureKind(err)]++
		case err != nil:
			log.wrong = append(log.wrong, fmt.Errorf("snapshot: %w", err))
		default:
			have := map[string]bool{}
			for _, r := range snap.Rules {
				have[r.Name] = true
			}
			if !have[rules.DefaultName] {
				log.wrong = append(log.wrong, fmt.Errorf("snapshot at version %d without the Default rule", snap.Version))
			}
			for name := range acked {
				if !have[name] {
					log.wrong = append(log.wrong, fmt.Errorf("snapshot at version %d lacks acknowledged rule %q", snap.Version, name))
				}
			}
		}
		log.mu.Unlock()
	}
}

// failureKind names an ErrUnavailable for the log.
func failureKind(err error) string {
	switch {
	case errors.Is(err, store.ErrNotApplied):
		return "unavailable, not applied"
	case errors.Is(err, store.ErrNotReplicated):
		return "applied, not replicated"
	}
	return "unavailable"
}

// failoverWaitFor polls cond until it holds, failing the test after watchTimeout.
func failoverWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(watchTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, watchTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// failoverSnapshot takes a snapshot, retrying while the store is unavailable.
func failoverSnapshot(t *testing.T, s store.Store) store.Snapshot {
	t.Helper()
	deadline := time.Now().Add(failoverRecovery)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), failoverCallTimeout)
		snap, err := s.Snapshot(ctx)
		cancel()
		if err == nil {
			return snap
		}
		if !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("Snapshot after the failover: %v", err)
		}
		time.Sleep(failoverEditEvery)
	}
}
