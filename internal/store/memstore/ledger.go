package memstore

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/receipt"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/internal/record"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

// live is what changes with every report batch and controller tick: the
// fleet ledgers, budget usage, budget states and tick claims. It has a mutex
// of its own so that reports never wait for an edit's disk write.
//
// Ledgers, receipt keys and tick claims live only in memory: a ledger is
// rebuilt within two report intervals, a claim lapses within one tick, and
// the receipts of an earlier process would name ledgers it does not have, so
// persisting them would buy nothing. Usage and states are written to the usage file by the
// flusher and on Close; dirty says they changed since the last write.
type live struct {
	mu       sync.Mutex
	closed   bool
	dirty    bool
	flushErr error // of the last write of the usage file
	ledgers  map[string]*reservoir.Account
	keys     *receipt.KeySet // nil until the first ReceiptKeys
	swept    time.Time       // when ledgers past their TTL were last dropped
	usage    map[usageKey]*monthUsage
	history  map[usageKey]map[int]budget.HistoryPoint // hour of the month → last decision
	states   map[string]budget.State                  // values never modified in place
	ticks    map[int64]time.Time                      // claimed tick → when the claim lapses
	// seqs is the highest report seq recorded per client, kept in memory
	// only (a restart forgets them, see README). pruneAt is the size at
	// which expired marks are next swept out.
	seqs    map[string]seqMark
	pruneAt int
	// Scratch of applyRates, and the last month addUsage named.
	idx   []int
	ups   []reservoir.Update
	month monthKeyCache
}

// maxScratch is the most updates a batch may have for applyRates to keep
// its scratch slices for the next.
const maxScratch = 1024

// monthKeyCache is the budget.MonthKey of the month from start to end.
type monthKeyCache struct {
	start, end time.Time
	key        string
}

// monthKey is budget.MonthKey(t), formatted once a month rather than for
// every increment: a batch's increments all name its month. The caller
// holds l.mu.
func (l *live) monthKey(t time.Time) string {
	if c := &l.month; c.key == "" || t.Before(c.start) || !t.Before(c.end) {
		c.start = budget.MonthStart(t)
		c.end = c.start.AddDate(0, 1, 0)
		c.key = budget.MonthKey(c.start)
	}
	return l.month.key
}

// seqMark is a client's highest recorded report seq, and until when it is
// remembered.
type seqMark struct {
	seq   uint64
	until time.Time
}

// maxSeqs bounds the clients whose seq is remembered at once. Past it (a
// million clients reporting within store.SeqWindow: clients inventing ids)
// a new client's report is applied without its seq being remembered, so
// that a repeat of it would be billed again.
const maxSeqs = 1 << 20

// usageKey names one budget's month.
type usageKey struct {
	budget string
	month  string // budget.MonthKey
}

// monthUsage is one budget's month of counts.
type monthUsage struct {
	start     time.Time
	requests  []int64 // by hour of the month
	sampled   []int64
	rules     map[string]budget.RuleUsage
	ruleHours map[string][]int64 // rule → requests by hour of the month
	// Kept for store.FleetUsage only: rule → sampled by hour of the
	// month, and rule → service → counts (at most store.MaxFleetPairs).
	ruleSampled map[string][]int64
	services    map[string]map[string]budget.RuleUsage
	pairs       int
}

func newMonthUsage(start time.Time) *monthUsage {
	n := budget.HoursIn(start)
	return &monthUsage{
		start: start, requests: make([]int64, n), sampled: make([]int64, n),
		rules: map[string]budget.RuleUsage{}, ruleHours: map[string][]int64{},
	}
}

func (l *live) init() {
	l.ledgers = map[string]*reservoir.Account{}
	l.usage = map[usageKey]*monthUsage{}
	l.history = map[usageKey]map[int]budget.HistoryPoint{}
	l.states = map[string]budget.State{}
	l.ticks = map[int64]time.Time{}
	l.seqs = map[string]seqMark{}
	l.pruneAt = 1024
}

// close refuses every later change.
func (l *live) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
}

// written records the outcome of writing a snapshot: after a failure, what
// it held is still to be written.
func (l *live) written(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushErr = err
	if err != nil {
		l.dirty = true
	}
}

func (l *live) flushError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.flushErr
}

// snapshot returns the usage and states in their file form if they changed
// since the last snapshot, and marks them clean; the caller reports the
// write with written.
func (l *live) snapshot() (_ fileLive, dirty bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.dirty {
		return fileLive{}, false
	}
	l.dirty = false
	out := fileLive{
		Format: fileFormat,
		Usage:  make([]fileUsage, 0, len(l.usage)),
		States: make([]record.State, 0, len(l.states)),
	}
	for k, u := range l.usage {
		fu := fileUsage{
			Budget:   k.budget,
			Month:    k.month,
			Requests: trimZeros(u.requests),
			Sampled:  trimZeros(u.sampled),
			Rules:    make(map[string]record.RuleUsage, len(u.rules)),
		}
		for name, ru := range u.rules {
			fu.Rules[name] = record.RuleUsage(ru)
		}
		if len(u.ruleHours) > 0 {
			fu.RuleHours = make(map[string][]int64, len(u.ruleHours))
			for name, hours := range u.ruleHours {
				fu.RuleHours[name] = trimZeros(hours)
			}
		}
		if len(u.ruleSampled) > 0 {
			fu.RuleSampled = make(map[string][]int64, len(u.ruleSampled))
			for name, hours := range u.ruleSampled {
				fu.RuleSampled[name] = trimZeros(hours)
			}
		}
		if len(u.services) > 0 {
			fu.Services = make(map[string]map[string]record.RuleUsage, len(u.services))
			for rule, m := range u.services {
				fm := make(map[string]record.RuleUsage, len(m))
				for svc, c := range m {
					fm[svc] = record.RuleUsage(c)
				}
				fu.Services[rule] = fm
			}
		}
		out.Usage = append(out.Usage, fu)
	}
	for k, points := range l.history {
		fh := fileHistory{Budget: k.budget, Month: k.month, Points: make([]record.Point, 0, len(points))}
		for _, p := range points {
			fh.Points = append(fh.Points, record.Point(p))
		}
		slices.SortFunc(fh.Points, func(a, b record.Point) int { return cmp.Compare(a.Hour, b.Hour) })
		out.History = append(out.History, fh)
	}
	for _, st := range l.states {
		out.States = append(out.States, record.FromState(&st))
	}
	return out, true
}

// trimZeros returns a copy of counts without its trailing zeros: the hours
// of the month still to come.
func trimZeros(counts []int64) []int64 {
	n := len(counts)
	for n > 0 && counts[n-1] == 0 {
		n--
	}
	return append([]int64(nil), counts[:n]...)
}

// restore loads usage and states read from the usage file, dropping months
// past their retention at now.
func (l *live) restore(f *fileLive, now time.Time) error {
	for _, fu := range f.Usage {
		start, err := time.Parse("200601", fu.Month)
		if err != nil {
			return fmt.Errorf("usage of budget %q: month %q: %w", fu.Budget, fu.Month, err)
		}
		if !now.Before(record.UsageExpiry(start)) {
			continue
		}
		u := newMonthUsage(start)
		if len(fu.Requests) > len(u.requests) || len(fu.Sampled) > len(u.sampled) {
			return fmt.Errorf("usage of budget %q: more hours than %s has", fu.Budget, fu.Month)
		}
		copy(u.requests, fu.Requests)
		copy(u.sampled, fu.Sampled)
		for name, ru := range fu.Rules {
			u.rules[name] = budget.RuleUsage(ru)
		}
		for _, series := range []struct {
			from map[string][]int64
			to   *map[string][]int64
		}{{fu.RuleHours, &u.ruleHours}, {fu.RuleSampled, &u.ruleSampled}} {
			for name, hours := range series.from {
				if len(hours) > len(u.requests) {
					return fmt.Errorf("usage of budget %q: rule %q has more hours than %s has", fu.Budget, name, fu.Month)
				}
				if *series.to == nil {
					*series.to = map[string][]int64{}
				}
				(*series.to)[name] = make([]int64, len(u.requests))
				copy((*series.to)[name], hours)
			}
		}
		for rule, m := range fu.Services {
			for svc, c := range m {
				if u.pairs >= store.MaxFleetPairs {
					break
				}
				if u.services == nil {
					u.services = map[string]map[string]budget.RuleUsage{}
				}
				if u.services[rule] == nil {
					u.services[rule] = map[string]budget.RuleUsage{}
				}
				u.services[rule][svc] = budget.RuleUsage(c)
				u.pairs++
			}
		}
		l.usage[usageKey{fu.Budget, fu.Month}] = u
	}
	for _, fh := range f.History {
		start, err := time.Parse("200601", fh.Month)
		if err != nil {
			return fmt.Errorf("history of budget %q: month %q: %w", fh.Budget, fh.Month, err)
		}
		if !now.Before(record.UsageExpiry(start)) {
			continue
		}
		points := make(map[int]budget.HistoryPoint, len(fh.Points))
		for _, p := range fh.Points {
			points[p.Hour] = budget.HistoryPoint(p)
		}
		l.history[usageKey{fh.Budget, fh.Month}] = points
	}
	for i := range f.States {
		l.states[f.States[i].Budget] = f.States[i].ToState()
	}
	return nil
}

// RecordReports implements store.LedgerStore. Usage increments are checked
// before anything is applied, so a batch is applied whole or not at all.
func (s *Store) RecordReports(ctx context.Context, b store.ReportBatch) ([]store.RateResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("record reports: %w: %w", err, store.ErrNotApplied)
	}
	for _, u := range b.Usage {
		if err := record.CheckUsage(u.Budget, u.Month, u.Hour, u.Requests, u.Sampled); err != nil {
			return nil, fmt.Errorf("record reports: %w", err)
		}
	}
	for i := range b.Sequenced {
		if err := record.CheckSequenced(&b.Sequenced[i]); err != nil {
			return nil, fmt.Errorf("record reports: %w", err)
		}
	}
	if err := record.CheckSeen(&b); err != nil {
		return nil, fmt.Errorf("record reports: %w", err)
	}
	l := &s.live
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errClosed
	}
	// Key is ignored: every failure here says that it changed nothing.
	l.addUsage(b.Usage, b.Now)
	for i := range b.Sequenced {
		sq := &b.Sequenced[i]
		fresh := l.newSeq(sq.Client, sq.Seq, b.Now)
		if fresh {
			l.addUsage(sq.Usage, b.Now)
		}
		if b.Seen != nil {
			b.Seen[i] = !fresh
		}
	}
	return l.applyRates(b), nil
}

// newSeq reports whether seq is above the highest seq recorded for client,
// and records it if so. Either way the client's mark is remembered for
// store.SeqWindow from now. The caller holds l.mu.
func (l *live) newSeq(client string, seq uint64, now time.Time) bool {
	until := now.Add(store.SeqWindow)
	m, ok := l.seqs[client]
	if ok && now.Before(m.until) && seq <= m.seq {
		m.until = until
		l.seqs[client] = m
		return false
	}
	if !ok && len(l.seqs) >= l.pruneAt {
		maps.DeleteFunc(l.seqs, func(_ string, m seqMark) bool { return !now.Before(m.until) })
		l.pruneAt = max(1024, 2*len(l.seqs))
	}
	if ok || len(l.seqs) < maxSeqs {
		l.seqs[client] = seqMark{seq: seq, until: until}
	}
	return true
}

// applyRates applies a batch's rate updates to the ledgers, rule by rule,
// each rule's in the batch's order. The caller holds l.mu.
func (l *live) applyRates(b store.ReportBatch) []store.RateResult {
	out := make([]store.RateResult, len(b.Rates))
	// The updates' indexes grouped by rule, and one rule's updates: kept
	// from batch to batch (under l.mu), as a map and slices made for each
	// batch cost a third of what the embedded store spent on one.
	rates := b.Rates
	all := l.idx[:0]
	for i := range rates {
		all = append(all, i)
	}
	if len(all) > 1 {
		slices.SortStableFunc(all, func(i, j int) int { return strings.Compare(rates[i].Rule, rates[j].Rule) })
	}
	for idx := all; len(idx) > 0; {
		rule := b.Rates[idx[0]].Rule
		n := 1
		for n < len(idx) && b.Rates[idx[n]].Rule == rule {
			n++
		}
		group := idx[:n]
		idx = idx[n:]
		ups := l.ups[:0]
		var version int64
		for _, i := range group {
			u := &b.Rates[i]
			ups = append(ups, reservoir.Update{Add: u.Add, Reservoir: u.Reservoir, Retract: u.Retract, Client: u.Client, RuleVersion: u.RuleVersion, Applied: u.Applied})
			version = max(version, u.RuleVersion)
		}
		l.ups = ups
		a := l.ledgers[rule]
		if a == nil {
			a = &reservoir.Account{}
		}
		fleet, grants, t := b.Ledger.ApplyTotals(a, b.Now, b.DownSince, ups)
		if a.Written {
			l.ledgers[rule] = a
		}
		for k, i := range group {
			out[i] = store.RateResult{Fleet: fleet, Quota: grants[k], Sampled: t.Sampled, Instances: t.Instances, Granted: t.Quota, Applied: t.AppliedAt(version)}
		}
	}
	// Retract points into the batch: not kept past it. A big batch's
	// scratch is not kept either.
	clear(l.ups)
	l.idx = all[:0]
	if cap(all) > maxScratch {
		l.idx, l.ups = nil, nil
	}
	// Ledgers nobody wrote for as long as storage keeps them go, as their
	// Redis keys expire; looked for once an interval.
	if b.Ledger.Interval > 0 && b.Now.Sub(l.swept) >= b.Ledger.Interval {
		l.swept = b.Now
		for rule, a := range l.ledgers {
			if b.Now.Sub(time.Unix(0, (a.Last+1)*int64(b.Ledger.Interval))) > b.Ledger.TTL() {
				delete(l.ledgers, rule)
			}
		}
	}
	return out
}

// ReceiptKeys implements store.LedgerStore.
func (s *Store) ReceiptKeys(ctx context.Context, now time.Time) (receipt.KeySet, error) {
	if err := ctx.Err(); err != nil {
		return receipt.KeySet{}, err
	}
	l := &s.live
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return receipt.KeySet{}, errClosed
	}
	var cur receipt.KeySet
	if l.keys != nil {
		cur = *l.keys
	}
	next, changed := receipt.Rotate(cur, l.keys != nil, now, receipt.NewKey(now))
	if changed {
		l.keys = &next
	}
	return next, nil
}

// addUsage adds checked increments. A month seen for the first time is
// when months past their retention are dropped. The caller holds l.mu.
func (l *live) addUsage(incs []store.UsageIncrement, now time.Time) {
	for _, inc := range incs {
		if inc.Requests == 0 && inc.Sampled == 0 {
			continue
		}
		k := usageKey{inc.Budget, l.monthKey(inc.Month)}
		u := l.usage[k]
		if u == nil {
			maps.DeleteFunc(l.usage, func(_ usageKey, u *monthUsage) bool {
				return !now.Before(record.UsageExpiry(u.start))
			})
			u = newMonthUsage(budget.MonthStart(inc.Month))
			l.usage[k] = u
		}
		u.requests[inc.Hour] += inc.Requests
		u.sampled[inc.Hour] += inc.Sampled
		if inc.Rule != "" {
			ru := u.rules[inc.Rule]
			ru.Requests += inc.Requests
			ru.Sampled += inc.Sampled
			u.rules[inc.Rule] = ru
			if inc.Requests != 0 {
				hours := u.ruleHours[inc.Rule]
				if hours == nil {
					hours = make([]int64, len(u.requests))
					u.ruleHours[inc.Rule] = hours
				}
				hours[inc.Hour] += inc.Requests
			}
			if inc.Budget == store.FleetUsage {
				u.addFleet(&inc)
			}
		}
		l.dirty = true
	}
}

// addFleet keeps what the fleet's record has besides a budget's.
func (u *monthUsage) addFleet(inc *store.UsageIncrement) {
	if inc.Sampled != 0 {
		if u.ruleSampled == nil {
			u.ruleSampled = map[string][]int64{}
		}
		hours := u.ruleSampled[inc.Rule]
		if hours == nil {
			hours = make([]int64, len(u.requests))
			u.ruleSampled[inc.Rule] = hours
		}
		hours[inc.Hour] += inc.Sampled
	}
	if inc.Service == "" {
		return
	}
	if u.services == nil {
		u.services = map[string]map[string]budget.RuleUsage{}
	}
	m := u.services[inc.Rule]
	c, ok := m[inc.Service]
	if !ok {
		if u.pairs >= store.MaxFleetPairs {
			return
		}
		u.pairs++
		if m == nil {
			m = map[string]budget.RuleUsage{}
			u.services[inc.Rule] = m
		}
	}
	c.Requests += inc.Requests
	c.Sampled += inc.Sampled
	m[inc.Service] = c
}

// Usage returns a budget's month as recorded so far; a month without
// reports is empty.
func (s *Store) Usage(ctx context.Context, budgetName string, month time.Time) (budget.Usage, error) {
	if err := ctx.Err(); err != nil {
		return budget.Usage{}, err
	}
	start := budget.MonthStart(month)
	out := budget.NewUsage(start)
	l := &s.live
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return budget.Usage{}, errClosed
	}
	u := l.usage[usageKey{budgetName, budget.MonthKey(start)}]
	if u == nil {
		return out, nil
	}
	for h := range out.Requests {
		out.Requests[h] = float64(u.requests[h])
		out.Sampled[h] = float64(u.sampled[h])
	}
	maps.Copy(out.Rules, u.rules)
	floats := func(hours []int64) []float64 {
		fs := make([]float64, len(hours))
		for h, n := range hours {
			fs[h] = float64(n)
		}
		return fs
	}
	for name, hours := range u.ruleHours {
		out.RuleRequests[name] = floats(hours)
	}
	if budgetName == store.FleetUsage {
		out.RuleSampled = make(map[string][]float64, len(u.ruleSampled))
		for name, hours := range u.ruleSampled {
			out.RuleSampled[name] = floats(hours)
		}
		out.Services = make(map[string]map[string]budget.RuleUsage, len(u.services))
		for rule, m := range u.services {
			out.Services[rule] = maps.Clone(m)
		}
	}
	return out, nil
}
