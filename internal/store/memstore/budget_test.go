package memstore_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/clocktest"
	"github.com/tracesampling/controlplane/pkg/rules"
)

var march = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func addUsage(t *testing.T, s *memstore.Store, at time.Time, requests int64) {
	t.Helper()
	inc := store.UsageIncrement{Budget: "team", Month: at, Hour: int(at.Sub(budget.MonthStart(at)) / time.Hour), Rule: "a", Requests: requests, Sampled: requests}
	if _, err := s.RecordReports(t.Context(), store.ReportBatch{Now: at, Usage: []store.UsageIncrement{inc}}); err != nil {
		t.Fatal(err)
	}
}

func usageTotal(t *testing.T, s *memstore.Store, month time.Time) float64 {
	t.Helper()
	u, err := s.Usage(t.Context(), "team", month)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := u.Totals()
	return r
}

// fileUsage reads the requests of budget "team" in March from the usage
// file, as a store opened on it would find them.
func fileUsage(t *testing.T, dir string) int64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "usage.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Usage []struct {
			Budget, Month string
			Requests      []int64
		}
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, u := range f.Usage {
		if u.Budget == "team" && u.Month == "202603" {
			for _, r := range u.Requests {
				n += r
			}
		}
	}
	return n
}

// TestUsageWrittenOnClose checks that usage and states do not wait for the
// flusher to be kept across a Close, and that neither reports nor edits
// write them.
func TestUsageWrittenOnClose(t *testing.T) {
	dir := t.TempDir()
	clk := clocktest.New(march.Add(36 * time.Hour))
	s := open(t, memstore.Options{DataDir: dir, Now: clk.Now, FlushInterval: time.Hour})
	ctx := t.Context()
	addUsage(t, s, clk.Now(), 5)
	if err := s.PutStates(ctx, []budget.State{{Budget: "team", MonthStart: march}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateRule(ctx, rules.Rule{Name: "r", Priority: 1}, "u"); err != nil {
		t.Fatal(err)
	}
	addUsage(t, s, clk.Now(), 7)
	if n := fileUsage(t, dir); n != 0 {
		t.Fatalf("usage in the file before a flush = %d, want none yet", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := fileUsage(t, dir); n != 12 {
		t.Fatalf("usage in the file after Close = %d, want 12", n)
	}
	s2 := open(t, memstore.Options{DataDir: dir, Now: clk.Now})
	if got := usageTotal(t, s2, march); got != 12 {
		t.Errorf("usage after reopening = %v, want 12", got)
	}
	states, err := s2.States(ctx)
	if err != nil || len(states) != 1 {
		t.Errorf("states after reopening = %v, %v; want the one put", states, err)
	}
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling the file, not synchronising
	}
}

// TestUsageFlushedByTimer checks that usage reaches the usage file within
// FlushInterval without a Close: what a crash can lose.
func TestUsageFlushedByTimer(t *testing.T) {
	dir := t.TempDir()
	s := open(t, memstore.Options{DataDir: dir, FlushInterval: 10 * time.Millisecond})
	addUsage(t, s, march.Add(time.Hour), 3)
	waitFor(t, "usage in the file", func() bool { return fileUsage(t, dir) == 3 })
	addUsage(t, s, march.Add(time.Hour), 4)
	waitFor(t, "more usage in the file", func() bool { return fileUsage(t, dir) == 7 })
}

// TestUsageWriteFailure breaks the usage file: Ping says so, and once the
// directory is repaired the next flush writes everything since.
func TestUsageWriteFailure(t *testing.T) {
	dir := t.TempDir()
	s := open(t, memstore.Options{DataDir: dir, FlushInterval: 10 * time.Millisecond})
	path := filepath.Join(dir, "usage.json")
	mustDo(t, os.MkdirAll(filepath.Join(path, "occupied"), 0o700)) // renaming over it fails
	addUsage(t, s, march.Add(time.Hour), 3)
	waitFor(t, "Ping failing", func() bool { return errors.Is(s.Ping(t.Context()), store.ErrUnavailable) })
	addUsage(t, s, march.Add(time.Hour), 4)
	mustDo(t, os.RemoveAll(path))
	waitFor(t, "usage in the file after repair", func() bool { return fileUsage(t, dir) == 7 })
	waitFor(t, "Ping succeeding", func() bool { return s.Ping(t.Context()) == nil })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	mustDo(t, err)
	for _, e := range entries {
		if n := e.Name(); n != "rules.json" && n != "usage.json" && n != "rules.lock" {
			t.Errorf("failed writes left %s in the data directory", n)
		}
	}
}

// TestUsageAgesOut checks that a month is dropped 70 days after it ends,
// in memory and when the state file is loaded.
func TestUsageAgesOut(t *testing.T) {
	dir := t.TempDir()
	clk := clocktest.New(march.Add(time.Hour))
	s := open(t, memstore.Options{DataDir: dir, Now: clk.Now})
	addUsage(t, s, clk.Now(), 4)
	expiry := march.AddDate(0, 1, 70)

	// Reopened just before the end of retention, March is kept.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	clk.Set(expiry.Add(-time.Minute))
	s = open(t, memstore.Options{DataDir: dir, Now: clk.Now})
	if got := usageTotal(t, s, march); got != 4 {
		t.Fatalf("March just before its retention ends = %v, want 4", got)
	}
	// The first report of a month after it drops March.
	clk.Set(expiry)
	addUsage(t, s, clk.Now(), 1)
	if got := usageTotal(t, s, march); got != 0 {
		t.Errorf("March after its retention = %v, want 0", got)
	}

	// So does loading the file later.
	dir2 := t.TempDir()
	clk.Set(march.Add(time.Hour))
	s2 := open(t, memstore.Options{DataDir: dir2, Now: clk.Now})
	addUsage(t, s2, clk.Now(), 4)
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	clk.Set(expiry)
	if got := usageTotal(t, open(t, memstore.Options{DataDir: dir2, Now: clk.Now}), march); got != 0 {
		t.Errorf("March loaded after its retention = %v, want 0", got)
	}
}

func TestFiredMarkAgesOut(t *testing.T) {
	clk := clocktest.New(march.Add(time.Hour))
	s := open(t, memstore.Options{Now: clk.Now})
	a := budget.Alert{Budget: "team", Kind: budget.AlertSpend, Threshold: 0.5, MonthStart: march}
	fire := func() bool {
		t.Helper()
		_, fired, err := s.FireAlert(t.Context(), a)
		if err != nil {
			t.Fatal(err)
		}
		return fired
	}
	if !fire() {
		t.Fatal("first FireAlert did not fire")
	}
	clk.Set(march.Add(time.Hour).Add(69 * 24 * time.Hour))
	if fire() {
		t.Fatal("FireAlert fired again within 70 days")
	}
	clk.Set(march.Add(time.Hour).Add(70 * 24 * time.Hour))
	if !fire() {
		t.Fatal("FireAlert did not fire 70 days later, when the mark is gone")
	}
}

// TestSeqMarkAgesOut: a client's highest report seq is remembered for
// store.SeqWindow after its last report, new or repeated, then forgotten.
func TestSeqMarkAgesOut(t *testing.T) {
	clk := clocktest.New(march.Add(time.Hour))
	s := open(t, memstore.Options{Now: clk.Now})
	report := func() {
		t.Helper()
		_, err := s.RecordReports(t.Context(), store.ReportBatch{Now: clk.Now(), Sequenced: []store.SequencedUsage{{Client: "c", Seq: 3,
			Usage: []store.UsageIncrement{{Budget: "team", Month: clk.Now(), Hour: 1, Requests: 1, Sampled: 1}}}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	report()
	clk.Set(clk.Now().Add(store.SeqWindow - time.Second))
	report() // a repeat: not billed, and remembered for another window
	clk.Set(clk.Now().Add(store.SeqWindow - time.Second))
	report()
	if got := usageTotal(t, s, march); got != 1 {
		t.Fatalf("%v requests after two repeats within the window, want 1", got)
	}
	clk.Set(clk.Now().Add(store.SeqWindow))
	report()
	if got := usageTotal(t, s, march); got != 2 {
		t.Errorf("%v requests after a repeat past the window, want 2: the seq is forgotten", got)
	}
}

func TestClaimLapses(t *testing.T) {
	clk := clocktest.New(march)
	s := open(t, memstore.Options{Now: clk.Now})
	claim := func() bool {
		t.Helper()
		ok, err := s.ClaimTick(t.Context(), 7, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !claim() || claim() {
		t.Fatal("want the first claim only")
	}
	clk.Set(march.Add(time.Minute))
	if !claim() {
		t.Fatal("a claim did not lapse after its ttl")
	}
}

func TestMaxAlerts(t *testing.T) {
	dir := t.TempDir()
	s := open(t, memstore.Options{DataDir: dir, MaxAlerts: 3})
	for i := range 5 {
		if _, fired, err := s.FireAlert(t.Context(), budget.Alert{Budget: "b", Kind: budget.AlertSpend, Threshold: float64(i + 1)}); err != nil || !fired {
			t.Fatalf("FireAlert %d: %v, %v", i, fired, err)
		}
	}
	check := func(s *memstore.Store) {
		t.Helper()
		page, err := s.Alerts(t.Context(), "", 0, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Alerts) != 3 || page.Alerts[0].Threshold != 5 || page.Alerts[2].Threshold != 3 {
			t.Fatalf("kept %+v, want the newest 3", page.Alerts)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check(open(t, memstore.Options{DataDir: dir, MaxAlerts: 3}))
}

func TestCorruptUsageFile(t *testing.T) {
	tests := []struct {
		name, content string
	}{
		{"not json", "{"},
		{"unknown format", `{"format": 99}`},
		{"bad month", `{"format": 1, "usage": [{"budget": "b", "month": "March"}]}`},
		{"too many hours", `{"format": 1, "usage": [{"budget": "b", "month": "202602", "requests": [` + strings.Repeat("1,", 672) + `1]}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			mustDo(t, os.WriteFile(filepath.Join(dir, "usage.json"), []byte(tt.content), 0o600))
			if s, err := memstore.New(memstore.Options{DataDir: dir, Now: func() time.Time { return march }}); err == nil {
				_ = s.Close()
				t.Fatal("New accepted a corrupt usage file")
			}
		})
	}
}
