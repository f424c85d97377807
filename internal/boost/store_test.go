package boost

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestMemoryRecord(t *testing.T) {
	ctx := context.Background()
	o := Options{}.WithDefaults()
	m := NewMemory()
	// A read of a rule never recorded: the zero State, and nothing kept.
	got, err := m.RecordBoostCounts(ctx, t0, o, []Add{{Rule: "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]State{{}}, got); diff != "" {
		t.Errorf("read (-want +got):\n%s", diff)
	}
	if len(m.states) != 0 {
		t.Errorf("a read kept %d states", len(m.states))
	}

	// The same arithmetic as State.Record, rule by rule.
	adds := []Add{{Rule: "a", Counts: Counts{Total: 10, Anomalies: 2, Sampled: 1}}, {Rule: "b", Counts: Counts{Total: 5}}, {Rule: "a", Counts: Counts{Total: 1, Anomalies: 1}}}
	var wantA, wantB State
	wantA.Record(t0, adds[0].Counts, o)
	wantB.Record(t0, adds[1].Counts, o)
	first := wantA
	wantA.Record(t0, adds[2].Counts, o)
	got, err = m.RecordBoostCounts(ctx, t0, o, adds)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]State{first, wantB, wantA}, got); diff != "" {
		t.Errorf("record (-want +got):\n%s", diff)
	}

	// A boost in force counts the sampled anomalies reported.
	b := Boost{Rate: 0.5, Start: t0, Expiry: t0.Add(time.Minute)}
	if _, ok, err := m.StartBoost(ctx, "a", time.Time{}, b); err != nil || !ok {
		t.Fatalf("StartBoost = %v, %v", ok, err)
	}
	got, err = m.RecordBoostCounts(ctx, t0.Add(time.Second), o, []Add{{Rule: "a", Counts: Counts{Total: 10, Anomalies: 4, Sampled: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Captured != 3 || got[0].Boost != b {
		t.Errorf("after a report in the boost: captured %v, boost %+v; want 3, %+v", got[0].Captured, got[0].Boost, b)
	}
	got, err = m.RecordBoostCounts(ctx, t0.Add(time.Minute), o, []Add{{Rule: "a", Counts: Counts{Total: 10, Anomalies: 4, Sampled: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Captured != 3 {
		t.Errorf("a report after the boost's expiry counted: captured %v, want 3", got[0].Captured)
	}

	// A state not written for StateTTL is forgotten.
	if _, err := m.RecordBoostCounts(ctx, t0.Add(StateTTL+2*time.Hour), o, []Add{{Rule: "b", Counts: Counts{Total: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.states["a"]; ok || len(m.states) != 1 {
		t.Errorf("states after a day idle: %v, want only b", m.states)
	}
}

func TestMemoryStartBoost(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	b1 := Boost{Rate: 0.2, Start: t0.Add(1500 * time.Microsecond), Expiry: t0.Add(time.Minute)}
	b2 := Boost{Rate: 0.3, Start: t0.Add(5 * time.Minute), Expiry: t0.Add(6 * time.Minute)}
	ms := func(b Boost) Boost { return Boost{Rate: b.Rate, Start: millis(b.Start), Expiry: millis(b.Expiry)} }
	steps := []struct {
		name    string
		prev    time.Time
		b       Boost
		want    Boost
		started bool
	}{
		{"the first boost", time.Time{}, b1, ms(b1), true},
		{"another replica's, decided from no boost", time.Time{}, b2, ms(b1), false},
		{"decided from a boost that is not the last", b2.Start, b2, ms(b1), false},
		{"decided from the last boost, to the millisecond", b1.Start.Add(200 * time.Microsecond), b2, ms(b2), true},
	}
	for _, s := range steps {
		got, started, err := m.StartBoost(ctx, "r", s.prev, s.b)
		if err != nil {
			t.Fatal(err)
		}
		if got != s.want || started != s.started {
			t.Errorf("%s: StartBoost = %+v, %v; want %+v, %v", s.name, got, started, s.want, s.started)
		}
	}
}

// TestMemoryStartBoostRace: of many replicas deciding a boost from the same
// state at once, one starts it.
func TestMemoryStartBoostRace(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	const n = 16
	var wg sync.WaitGroup
	won := make(chan Boost, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := Boost{Rate: float64(i+1) / 100, Start: t0.Add(time.Duration(i) * time.Millisecond), Expiry: t0.Add(time.Minute)}
			if got, started, err := m.StartBoost(ctx, "r", time.Time{}, b); err != nil {
				t.Error(err)
			} else if started {
				won <- got
			}
		}()
	}
	wg.Wait()
	close(won)
	var winners []Boost
	for b := range won {
		winners = append(winners, b)
	}
	states, _ := m.RecordBoostCounts(ctx, t0, Options{}, []Add{{Rule: "r"}})
	if len(winners) != 1 || states[0].Boost != winners[0] {
		t.Errorf("winners %+v, boost kept %+v: want one, kept", winners, states[0].Boost)
	}
}
