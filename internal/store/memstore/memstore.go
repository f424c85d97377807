// Package memstore is the embedded store: rules, budgets and alerts in
// process memory, optionally kept in one JSON file, for a single replica that
// needs no Redis. It meets the store.Store contract, checked by storetest
// like redisstore.
//
// With a DataDir, every edit (rules, budgets) and every alert that fires is
// in the state file (rules.json) before it is acknowledged. Budget usage and
// budget states change with every report batch and controller tick, so they
// go to a file of their own (usage.json), written by a timer every
// Options.FlushInterval when they changed, and on Close: a crash (not a
// Close) loses at most the last FlushInterval of usage, and neither edits
// nor reports wait for the other's writes.
package memstore

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tracesampling/controlplane/internal/boost"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/internal/record"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// Options configure a Store.
type Options struct {
	// DataDir is the directory that holds the state file (rules.json: rules,
	// audit log, budgets, alerts) and the usage file (usage.json: budget
	// usage and states). It is created if missing. Default: empty, nothing
	// is kept after exit.
	DataDir string
	// Now is the clock that stamps rules and audit events. Default: time.Now.
	Now func() time.Time
	// MaxEvents is how many audit events the log of all rules keeps; older
	// ones are dropped from it. Default: 10000.
	MaxEvents int
	// MaxRuleEvents is how many of its newest events each existing rule's
	// history keeps at least, however many other rules' edits pushed them
	// out of the log of all rules: a rule's history is its entries still in
	// that log and these. A deleted rule's history keeps only what the log
	// of all rules does. Default: 100.
	MaxRuleEvents int
	// MaxAlerts is how many alerts are kept; older ones are dropped.
	// Default: 10000.
	MaxAlerts int
	// MaxRules is the most rules the store holds, the Default rule
	// included; CreateRule refuses more with store.ErrRuleLimit. Default,
	// and the most allowed: rules.MaxRules.
	MaxRules int
	// FlushInterval is how often budget usage and states that changed since
	// the usage file was last written are written to it; only with a
	// DataDir. A crash loses at most this much usage. Default: 5s.
	FlushInterval time.Duration
	// MaxTokens is how many tokens are kept; CreateToken refuses more with
	// store.ErrLimit. Default: store.MaxTokens.
	MaxTokens int
}

// Defaults of Options.
const (
	DefaultMaxEvents     = 10000
	DefaultMaxRuleEvents = 100
	DefaultMaxAlerts     = 10000
	DefaultFlushInterval = 5 * time.Second
)

// systemActor is the actor of edits the store makes by itself.
const systemActor = "system"

// errClosed is returned by every call after Close.
var errClosed = fmt.Errorf("memstore: %w: %w: store closed", store.ErrUnavailable, store.ErrNotApplied)

// Store is the in-process store. It is safe for concurrent use; one mutex
// orders every edit, and with a DataDir each edit is on disk before it is
// visible or acknowledged. Report batches and controller decisions go to
// live, under a mutex of their own, so they never wait for a disk write.
type Store struct {
	dataDir   string
	now       func() time.Time
	maxEvents int
	maxRule   int // MaxRuleEvents
	maxAlerts int
	maxRules  int
	maxTokens int

	mu     sync.Mutex // orders edits
	st     state
	closed bool
	lock   *os.File // holds the DataDir's lock; nil without a DataDir

	live live
	// boosts keeps the rules' boost states (boost.go); in memory only, as
	// ledgers are: a state is rebuilt within a warm-up.
	boosts *boost.Memory
	// borrows keeps the first-borrow gate's buckets (borrow.go), in
	// memory only: a lost bucket is a full one.
	borrows borrowBuckets
	// flushMu orders writes of the usage file; taken before live.mu.
	flushMu sync.Mutex

	wmu      sync.Mutex // guards watchers; taken last
	watchers map[*watcher]struct{}

	// The flusher writes live's changes with a DataDir; Close stops it.
	flushStop chan struct{}
	flushDone chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// state is everything the store writes to disk on every edit. An edit builds
// the next state and swaps it in only after it is on disk, so a failed write
// changes nothing.
type state struct {
	// rules and budgets values are never modified in place, so a state can
	// share them with the next one.
	rules   map[string]rules.Rule
	version int64
	// events are oldest first, with strictly increasing seq. An edit may
	// append in place past len: the current state does not see that slot.
	events  []entry
	lastSeq int64
	// tails keep, for each existing rule, its newest events (at most
	// maxRule, oldest first) that were dropped from events: they are older
	// than any of its entries still there. The map and its slices are never
	// modified in place.
	tails map[string][]entry

	budgets map[string]budget.Budget
	// alerts are oldest first, like events; fired maps the DedupKey of
	// every alert that fired to when the mark may be dropped.
	alerts   []alertEntry
	alertSeq int64
	fired    map[string]time.Time

	// tokens values are never modified in place, like rules.
	tokens        map[string]store.Token
	tokensVersion int64
}

// alertEntry is an alert and its position in the list.
type alertEntry struct {
	seq   int64
	alert budget.Alert
}

// entry is an audit event and its position in the log.
type entry struct {
	seq int64
	ev  store.Event
}

// New opens a store. With a DataDir it loads the state kept there, if any.
// A new store holds the Default rule at revision 1, at the rules version
// store.FirstVersion gives for its clock.
func New(opts Options) (*Store, error) {
	if opts.MaxRules > rules.MaxRules {
		return nil, fmt.Errorf("memstore: MaxRules %d is over the limit of %d", opts.MaxRules, rules.MaxRules)
	}
	s := &Store{
		dataDir:   opts.DataDir,
		now:       opts.Now,
		maxEvents: opts.MaxEvents,
		maxRule:   opts.MaxRuleEvents,
		maxAlerts: opts.MaxAlerts,
		maxRules:  opts.MaxRules,
		watchers:  make(map[*watcher]struct{}),
		boosts:    boost.NewMemory(),
		st:        state{rules: map[string]rules.Rule{}, budgets: map[string]budget.Budget{}, fired: map[string]time.Time{}, tokens: map[string]store.Token{}},
	}
	s.live.init()
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxEvents <= 0 {
		s.maxEvents = DefaultMaxEvents
	}
	if s.maxAlerts <= 0 {
		s.maxAlerts = DefaultMaxAlerts
	}
	if s.maxRule <= 0 {
		s.maxRule = DefaultMaxRuleEvents
	}
	s.maxTokens = opts.MaxTokens
	if s.maxTokens <= 0 {
		s.maxTokens = store.MaxTokens
	}
	if s.maxRules <= 0 {
		s.maxRules = rules.MaxRules
	}
	flushEvery := opts.FlushInterval
	if flushEvery <= 0 {
		flushEvery = DefaultFlushInterval
	}
	if s.dataDir != "" {
		if err := os.MkdirAll(s.dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("create data directory: %w", err)
		}
		lock, err := lockDir(s.dataDir)
		if err != nil {
			return nil, err
		}
		s.lock = lock
		st, err := load(s.dataDir, &s.live, s.now())
		if err != nil {
			_ = lock.Close()
			return nil, err
		}
		if st != nil {
			s.st = *st
			// The file holds the log of all rules and the rules' tails in
			// one list: the newest MaxEvents are the log, the rest go back
			// to the tails (all of them if MaxEvents was lowered).
			if n := len(s.st.events) - s.maxEvents; n > 0 {
				s.st.tails = s.keepTails(nil, s.st.events[:n], s.st.rules)
				s.st.events = s.st.events[n:]
			}
			if n := len(s.st.alerts) - s.maxAlerts; n > 0 {
				s.st.alerts = s.st.alerts[n:]
			}
		}
	}
	if _, ok := s.st.rules[rules.DefaultName]; !ok {
		d := rules.Default()
		now := record.Timestamp(s.now())
		d.Revision, d.CreateTime, d.UpdateTime = 1, now, now
		if err := s.commit(store.ActionCreate, nil, &d, systemActor, now); err != nil {
			_ = s.Close()
			return nil, fmt.Errorf("seed the Default rule: %w", err)
		}
	}
	if s.dataDir != "" {
		s.flushStop, s.flushDone = make(chan struct{}), make(chan struct{})
		go s.flushLoop(flushEvery)
	}
	return s, nil
}

// Snapshot returns every rule in matching order and the version they were
// read at.
func (s *Store) Snapshot(context.Context) (store.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.Snapshot{}, errClosed
	}
	rs := make([]rules.Rule, 0, len(s.st.rules))
	for _, r := range s.st.rules {
		rs = append(rs, r.Clone())
	}
	rules.Sort(rs)
	return store.Snapshot{Rules: rs, Version: s.st.version}, nil
}

// Rule returns the rule called name or an error wrapping store.ErrNotFound.
func (s *Store) Rule(_ context.Context, name string) (rules.Rule, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return rules.Rule{}, errClosed
	}
	r, ok := s.st.rules[name]
	if !ok {
		return rules.Rule{}, fmt.Errorf("rule %q: %w", name, store.ErrNotFound)
	}
	return r.Clone(), nil
}

// CreateRule stores r at revision 1.
func (s *Store) CreateRule(_ context.Context, r rules.Rule, actor string) (rules.Rule, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return rules.Rule{}, errClosed
	}
	if _, ok := s.st.rules[r.Name]; ok {
		return rules.Rule{}, fmt.Errorf("create rule %q: %w", r.Name, store.ErrAlreadyExists)
	}
	if len(s.st.rules) >= s.maxRules {
		return rules.Rule{}, fmt.Errorf("create rule %q: %w (at most %d rules, the Default rule included)", r.Name, store.ErrRuleLimit, s.maxRules)
	}
	now := record.Timestamp(s.now())
	r = r.Clone()
	r.Revision, r.CreateTime, r.UpdateTime = 1, now, now
	if err := s.commit(store.ActionCreate, nil, &r, actor, now); err != nil {
		return rules.Rule{}, fmt.Errorf("create rule %q: %w", r.Name, err)
	}
	return r.Clone(), nil
}

// UpdateRule replaces the rule called r.Name if it is at ifRevision.
func (s *Store) UpdateRule(_ context.Context, r rules.Rule, ifRevision int64, actor string) (rules.Rule, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return rules.Rule{}, errClosed
	}
	cur, ok := s.st.rules[r.Name]
	if !ok {
		return rules.Rule{}, fmt.Errorf("update rule %q: %w", r.Name, store.ErrNotFound)
	}
	if cur.Revision != ifRevision {
		return rules.Rule{}, fmt.Errorf("update rule %q at revision %d: %w (it is at %d)",
			r.Name, ifRevision, store.ErrConflict, cur.Revision)
	}
	now := record.Timestamp(s.now())
	r = r.Clone()
	r.Revision, r.CreateTime, r.UpdateTime = cur.Revision+1, cur.CreateTime, now
	if err := s.commit(store.ActionUpdate, &cur, &r, actor, now); err != nil {
		return rules.Rule{}, fmt.Errorf("update rule %q: %w", r.Name, err)
	}
	return r.Clone(), nil
}

// DeleteRule removes the rule called name if it is at ifRevision, or at any
// revision if ifRevision is 0. The Default rule cannot be deleted.
func (s *Store) DeleteRule(_ context.Context, name string, ifRevision int64, actor string) error {
	if name == rules.DefaultName {
		return fmt.Errorf("delete rule %q: %w", name, rules.ErrDefaultRule)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	cur, ok := s.st.rules[name]
	if !ok {
		return fmt.Errorf("delete rule %q: %w", name, store.ErrNotFound)
	}
	if ifRevision != 0 && cur.Revision != ifRevision {
		return fmt.Errorf("delete rule %q at revision %d: %w (it is at %d)",
			name, ifRevision, store.ErrConflict, cur.Revision)
	}
	if err := s.commit(store.ActionDelete, &cur, nil, actor, record.Timestamp(s.now())); err != nil {
		return fmt.Errorf("delete rule %q: %w", name, err)
	}
	return nil
}

// commit applies one edit with its audit event: it builds the next state,
// writes it to disk if the store has a DataDir, and only then makes it
// current and tells the watchers. The caller holds s.mu; before and after
// are owned by the store from here on.
func (s *Store) commit(action store.Action, before, after *rules.Rule, actor string, now time.Time) error {
	return s.commitAll([]change{{action, before, after}}, actor, "", now)
}

// change is one rule's edit in a commit.
type change struct {
	action        store.Action
	before, after *rules.Rule
}

// commitAll applies edits of different rules as one: one rules version,
// one audit event per rule, one state written, one notification. The
// caller holds s.mu; the rules are owned by the store from here on.
func (s *Store) commitAll(changes []change, actor, message string, now time.Time) error {
	next := s.st
	next.rules = maps.Clone(s.st.rules)
	if next.version == 0 {
		next.version = store.FirstVersion(now)
	} else {
		next.version++
	}
	for _, c := range changes {
		var name string
		if c.after != nil {
			name = c.after.Name
			c.after.RulesVersion = next.version
			next.rules[name] = *c.after
		} else {
			name = c.before.Name
			delete(next.rules, name)
		}
		next.lastSeq++
		next.events = append(next.events, entry{seq: next.lastSeq, ev: store.Event{
			ID:           strconv.FormatInt(next.lastSeq, 10),
			RuleName:     name,
			Action:       c.action,
			Actor:        actor,
			Time:         now,
			Before:       c.before,
			After:        c.after,
			RulesVersion: next.version,
			Message:      message,
		}})
	}
	if n := len(next.events) - s.maxEvents; n > 0 {
		// Not cleared: the current state may still see them. The array is
		// replaced, and the dropped events freed, when append outgrows it.
		next.tails = s.keepTails(next.tails, next.events[:n], next.rules)
		next.events = next.events[n:]
	}
	for _, c := range changes {
		if c.after != nil {
			continue
		}
		if _, ok := next.tails[c.before.Name]; ok {
			// A deleted rule's history is what the log of all rules still
			// has.
			next.tails = maps.Clone(next.tails)
			delete(next.tails, c.before.Name)
		}
	}
	return s.apply(&next, store.TopicRules)
}

// ApplyRuleEdits makes every edit or none, under the lock that orders
// edits: checked against the current rules first, then committed as one
// state, on disk before it is visible.
func (s *Store) ApplyRuleEdits(_ context.Context, edits []store.RuleEdit, actor, message string) (store.BatchResult, error) {
	if err := store.CheckBatch(edits, message); err != nil {
		return store.BatchResult{}, fmt.Errorf("memstore: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.BatchResult{}, errClosed
	}
	now := record.Timestamp(s.now())
	changes := make([]change, len(edits))
	out := store.BatchResult{Rules: make([]rules.Rule, len(edits))}
	count := len(s.st.rules)
	for i := range edits {
		e := &edits[i]
		name := e.Rule.Name
		fail := func(err error) error {
			return &store.EditError{Index: i, Action: e.Action, Name: name, Err: err}
		}
		cur, ok := s.st.rules[name]
		switch e.Action {
		case store.ActionCreate:
			if ok {
				return store.BatchResult{}, fail(store.ErrAlreadyExists)
			}
			r := e.Rule.Clone()
			r.Revision, r.CreateTime, r.UpdateTime = 1, now, now
			changes[i] = change{store.ActionCreate, nil, &r}
			count++
		case store.ActionUpdate:
			if !ok {
				return store.BatchResult{}, fail(store.ErrNotFound)
			}
			if cur.Revision != e.IfRevision {
				return store.BatchResult{}, fail(fmt.Errorf("%w (at revision %d, not %d)", store.ErrConflict, cur.Revision, e.IfRevision))
			}
			r := e.Rule.Clone()
			r.Revision, r.CreateTime, r.UpdateTime = cur.Revision+1, cur.CreateTime, now
			before := cur
			changes[i] = change{store.ActionUpdate, &before, &r}
		case store.ActionDelete:
			if !ok {
				return store.BatchResult{}, fail(store.ErrNotFound)
			}
			if e.IfRevision != 0 && cur.Revision != e.IfRevision {
				return store.BatchResult{}, fail(fmt.Errorf("%w (at revision %d, not %d)", store.ErrConflict, cur.Revision, e.IfRevision))
			}
			before := cur
			changes[i] = change{store.ActionDelete, &before, nil}
			count--
		}
	}
	if count > s.maxRules && count > len(s.st.rules) {
		return store.BatchResult{}, fmt.Errorf("apply %d edits: %w (the batch would leave %d rules; at most %d, the Default rule included)",
			len(edits), store.ErrRuleLimit, count, s.maxRules)
	}
	if len(edits) == 0 {
		out.Version = s.st.version
		return out, nil
	}
	if err := s.commitAll(changes, actor, message, now); err != nil {
		return store.BatchResult{}, fmt.Errorf("apply %d edits: %w", len(edits), err)
	}
	for i, c := range changes {
		if c.after != nil {
			out.Rules[i] = c.after.Clone()
		}
	}
	out.Version = s.st.version
	return out, nil
}

// apply makes next the current state once it is on disk, and tells the
// watchers about topic. The caller holds s.mu.
func (s *Store) apply(next *state, topic store.Topic) error {
	if s.dataDir != "" {
		if err := save(s.dataDir, next); err != nil {
			return err
		}
	}
	s.st = *next
	s.broadcast(topic)
	return nil
}

// flushLoop writes live changes every interval until Close.
func (s *Store) flushLoop(every time.Duration) {
	defer close(s.flushDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.flushStop:
			return
		case <-t.C:
			_ = s.flush() // kept for Ping
		}
	}
}

// flush writes the usage file if usage or states changed since the last
// write. A failure is kept for Ping, and the write is tried again next time.
func (s *Store) flush() error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	lv, dirty := s.live.snapshot()
	if !dirty {
		return nil
	}
	err := saveLive(s.dataDir, &lv)
	s.live.written(err)
	return err
}

// RuleEvents lists the audit log newest first, optionally for one rule.
// pageSize 0 means 100; at most 1000 are returned.
func (s *Store) RuleEvents(_ context.Context, ruleName string, pageSize int, pageToken string) (store.EventPage, error) {
	size, err := record.PageSize(pageSize)
	if err != nil {
		return store.EventPage{}, fmt.Errorf("list rule events: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.EventPage{}, errClosed
	}
	// A rule's history is its tail, then its entries in the log of all
	// rules: one list in seq order.
	var lists [][]entry
	if ruleName != "" {
		lists = append(lists, s.st.tails[ruleName])
	}
	lists = append(lists, s.st.events)
	after := int64(math.MaxInt64)
	if pageToken != "" {
		if after, err = decodeToken(tokenPrefix, pageToken); err != nil {
			return store.EventPage{}, fmt.Errorf("list rule events: %w", err)
		}
	}
	var page store.EventPage
	var oldest *entry // the oldest entry of the listing, when the last page reaches it
scan:
	for l := len(lists) - 1; l >= 0; l-- {
		events := lists[l]
		end := sort.Search(len(events), func(i int) bool { return events[i].seq >= after })
		for i := end - 1; i >= 0; i-- {
			e := &events[i]
			if ruleName != "" && e.ev.RuleName != ruleName {
				continue
			}
			if len(page.Events) == size {
				// One more matching event exists: there is a next page.
				page.NextToken = encodeToken(tokenPrefix, page.Events[size-1].ID)
				break scan
			}
			page.Events = append(page.Events, cloneEvent(e.ev))
			oldest = e
		}
	}
	if page.NextToken == "" {
		page.Trimmed = s.st.trimmed(ruleName, oldest, pageToken != "")
	}
	return page, nil
}

// trimmed says whether entries of a listing older than its oldest one were
// dropped. The log of all rules was trimmed if it holds fewer entries than
// were ever written. A rule's history was if its oldest entry left is not
// its creation; a rule without any entry left cannot tell, and says whether
// the log of all rules was trimmed at all. oldest is the listing's oldest
// entry, nil if the last page listed none (listed: if earlier pages did).
func (st *state) trimmed(ruleName string, oldest *entry, listed bool) bool {
	logTrimmed := int64(len(st.events)) < st.lastSeq
	switch {
	case ruleName == "":
		return logTrimmed
	case oldest != nil:
		return oldest.ev.Action != store.ActionCreate
	case listed:
		// The previous page ended exactly at the oldest entry: look it up.
		for _, l := range [][]entry{st.tails[ruleName], st.events} {
			for i := range l {
				if l[i].ev.RuleName == ruleName {
					return l[i].ev.Action != store.ActionCreate
				}
			}
		}
	}
	return logTrimmed
}

// keepTails returns tails with the entries of dropped (oldest first, just
// dropped from the log of all rules) that belong to rules in live added to
// their rules' tails, each cut to its newest maxRule. It copies what it
// changes.
func (s *Store) keepTails(tails map[string][]entry, dropped []entry, live map[string]rules.Rule) map[string][]entry {
	var out map[string][]entry
	for _, e := range dropped {
		name := e.ev.RuleName
		if _, ok := live[name]; !ok {
			continue
		}
		if out == nil {
			out = maps.Clone(tails)
			if out == nil {
				out = map[string][]entry{}
			}
		}
		old := out[name]
		from := max(0, len(old)+1-s.maxRule)
		t := make([]entry, 0, len(old)-from+1)
		out[name] = append(append(t, old[from:]...), e)
	}
	if out == nil {
		return tails
	}
	return out
}

// RulesVersion returns the rules version.
func (s *Store) RulesVersion(context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errClosed
	}
	return s.st.version, nil
}

// topics is every topic, in the order a watcher hears of pending ones.
var topics = [...]store.Topic{store.TopicRules, store.TopicBudgets, store.TopicAlerts, store.TopicTokens}

// watcher is one WatchChanges call: the topics changed since it last looked
// (a bit per entry of topics, under s.wmu) and a one-slot wake-up channel.
type watcher struct {
	wake    chan struct{}
	pending uint8
}

// WatchChanges calls notify once for every topic at once, and then after
// every change, until ctx ends. Changes never wait for notify: changes of a
// topic that arrive while notify runs collapse into one notification, and
// no topic is lost behind another.
func (s *Store) WatchChanges(ctx context.Context, notify func(store.Topic)) error {
	w := &watcher{wake: make(chan struct{}, 1), pending: 1<<len(topics) - 1}
	w.wake <- struct{}{}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errClosed
	}
	s.wmu.Lock()
	s.watchers[w] = struct{}{}
	s.wmu.Unlock()
	defer func() {
		s.wmu.Lock()
		delete(s.watchers, w)
		s.wmu.Unlock()
	}()

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.wake:
		}
		s.wmu.Lock()
		pending := w.pending
		w.pending = 0
		s.wmu.Unlock()
		for i, topic := range topics {
			if pending&(1<<i) != 0 {
				notify(topic)
			}
		}
	}
}

// broadcast tells every watcher about topic without blocking.
func (s *Store) broadcast(topic store.Topic) {
	bit := uint8(1 << slices.Index(topics[:], topic))
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for w := range s.watchers {
		w.pending |= bit
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// Ping fails after Close, and while usage cannot be written to the usage
// file: spend would be lost with a restart.
func (s *Store) Ping(context.Context) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errClosed
	}
	if err := s.live.flushError(); err != nil {
		return fmt.Errorf("memstore: %w: write usage file: %w", store.ErrUnavailable, err)
	}
	return nil
}

// Close makes every later call fail with store.ErrUnavailable, writes the
// usage and states not yet written, and releases the DataDir for another
// store. Running WatchChanges calls end with their contexts. It is safe to
// call more than once; every call returns once the store is closed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Store) close() error {
	if s.flushStop != nil {
		close(s.flushStop)
		<-s.flushDone
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.live.close()
	var errs []error
	if s.dataDir != "" {
		if err := s.flush(); err != nil {
			errs = append(errs, fmt.Errorf("memstore: write usage on close: %w", err))
		}
	}
	if s.lock != nil {
		if err := s.lock.Close(); err != nil {
			errs = append(errs, fmt.Errorf("memstore: release data directory: %w", err))
		}
	}
	return errors.Join(errs...)
}

func cloneEvent(ev store.Event) store.Event {
	if ev.Before != nil {
		b := ev.Before.Clone()
		ev.Before = &b
	}
	if ev.After != nil {
		a := ev.After.Clone()
		ev.After = &a
	}
	return ev
}

// tokenPrefix marks memstore page tokens of the audit log, so a token from
// another listing API is rejected rather than misread.
const tokenPrefix = "mem1:"

// encodeToken returns the page token that lists entries older than the
// entry with ID id, in the listing whose tokens start with prefix.
func encodeToken(prefix, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(prefix + id))
}

// decodeToken returns the sequence number a token of encodeToken holds.
func decodeToken(prefix, token string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return 0, record.InvalidPageToken()
	}
	rest, ok := strings.CutPrefix(string(b), prefix)
	if !ok {
		return 0, record.InvalidPageToken()
	}
	seq, err := strconv.ParseInt(rest, 10, 64)
	if err != nil || seq < 1 {
		return 0, record.InvalidPageToken()
	}
	return seq, nil
}
