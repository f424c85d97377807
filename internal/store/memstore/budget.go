package memstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/internal/record"
)

// Page token prefixes of the budget listings, so that a token of one
// listing is rejected by another rather than misread.
const (
	budgetTokenPrefix = "memb1:"
	alertTokenPrefix  = "mema1:"
)

// Budgets lists budgets by name. pageSize 0 means 100; at most 1000 are
// returned. A page token holds the last name listed, so budgets created or
// deleted meanwhile do not shift the pages.
func (s *Store) Budgets(_ context.Context, pageSize int, pageToken string) (store.BudgetPage, error) {
	size, err := record.PageSize(pageSize)
	if err != nil {
		return store.BudgetPage{}, fmt.Errorf("list budgets: %w", err)
	}
	after, hasAfter := "", false
	if pageToken != "" {
		if after, err = record.DecodeNameToken(budgetTokenPrefix, pageToken); err != nil {
			return store.BudgetPage{}, fmt.Errorf("list budgets: %w", err)
		}
		hasAfter = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.BudgetPage{}, errClosed
	}
	names := slices.Sorted(maps.Keys(s.st.budgets))
	if hasAfter {
		names = names[sort.SearchStrings(names, after):]
		if len(names) > 0 && names[0] == after {
			names = names[1:]
		}
	}
	var page store.BudgetPage
	if len(names) > size {
		names = names[:size]
		page.NextToken = record.EncodeNameToken(budgetTokenPrefix, names[size-1])
	}
	page.Budgets = make([]budget.Budget, len(names))
	for i, n := range names {
		page.Budgets[i] = record.CloneBudget(s.st.budgets[n])
	}
	return page, nil
}

// Budget returns the budget called name or an error wrapping
// store.ErrNotFound.
func (s *Store) Budget(_ context.Context, name string) (budget.Budget, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return budget.Budget{}, errClosed
	}
	b, ok := s.st.budgets[name]
	if !ok {
		return budget.Budget{}, fmt.Errorf("budget %q: %w", name, store.ErrNotFound)
	}
	return record.CloneBudget(b), nil
}

// CreateBudget stores b at revision 1, with both times now.
func (s *Store) CreateBudget(_ context.Context, b budget.Budget) (budget.Budget, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return budget.Budget{}, errClosed
	}
	if _, ok := s.st.budgets[b.Name]; ok {
		return budget.Budget{}, fmt.Errorf("create budget %q: %w", b.Name, store.ErrAlreadyExists)
	}
	now := record.Timestamp(s.now())
	b = record.CloneBudget(b)
	b.Revision, b.CreateTime, b.UpdateTime = 1, now, now
	if err := s.putBudget(b.Name, &b); err != nil {
		return budget.Budget{}, fmt.Errorf("create budget %q: %w", b.Name, err)
	}
	return record.CloneBudget(b), nil
}

// UpdateBudget replaces the budget called b.Name if it is at ifRevision,
// keeping its create time.
func (s *Store) UpdateBudget(_ context.Context, b budget.Budget, ifRevision int64) (budget.Budget, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return budget.Budget{}, errClosed
	}
	cur, ok := s.st.budgets[b.Name]
	if !ok {
		return budget.Budget{}, fmt.Errorf("update budget %q: %w", b.Name, store.ErrNotFound)
	}
	if cur.Revision != ifRevision {
		return budget.Budget{}, fmt.Errorf("update budget %q at revision %d: %w (it is at %d)",
			b.Name, ifRevision, store.ErrConflict, cur.Revision)
	}
	b = record.CloneBudget(b)
	b.Revision, b.CreateTime, b.UpdateTime = cur.Revision+1, cur.CreateTime, record.Timestamp(s.now())
	if err := s.putBudget(b.Name, &b); err != nil {
		return budget.Budget{}, fmt.Errorf("update budget %q: %w", b.Name, err)
	}
	return record.CloneBudget(b), nil
}

// DeleteBudget removes the budget called name if it is at ifRevision, or at
// any revision if ifRevision is 0.
func (s *Store) DeleteBudget(_ context.Context, name string, ifRevision int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	cur, ok := s.st.budgets[name]
	if !ok {
		return fmt.Errorf("delete budget %q: %w", name, store.ErrNotFound)
	}
	if ifRevision != 0 && cur.Revision != ifRevision {
		return fmt.Errorf("delete budget %q at revision %d: %w (it is at %d)",
			name, ifRevision, store.ErrConflict, cur.Revision)
	}
	if err := s.putBudget(name, nil); err != nil {
		return fmt.Errorf("delete budget %q: %w", name, err)
	}
	return nil
}

// putBudget stores b under name, or deletes name if b is nil. The caller
// holds s.mu; b is the store's from here on.
func (s *Store) putBudget(name string, b *budget.Budget) error {
	next := s.st
	next.budgets = maps.Clone(s.st.budgets)
	if b != nil {
		next.budgets[name] = *b
	} else {
		delete(next.budgets, name)
	}
	return s.apply(&next, store.TopicBudgets)
}

// ClaimTick returns true for the first claim of tick, and again only after
// that claim lapsed, ttl later by the store's clock.
func (s *Store) ClaimTick(ctx context.Context, tick int64, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if ttl <= 0 {
		return false, fmt.Errorf("claim tick %d: ttl %v must be positive", tick, ttl)
	}
	now := s.now()
	l := &s.live
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false, errClosed
	}
	maps.DeleteFunc(l.ticks, func(_ int64, lapse time.Time) bool { return !now.Before(lapse) })
	if _, ok := l.ticks[tick]; ok {
		return false, nil
	}
	l.ticks[tick] = now.Add(ttl)
	return true, nil
}

// PutStates stores the decisions of a controller interval: per budget the
// newer of the stored and the given one, removing those of budgets absent
// from states computed no later than the latest of states (see
// store.Store.PutStates). They are written to the usage file by the next
// flush, not at once: the controller puts new ones every tick.
func (s *Store) PutStates(ctx context.Context, states []budget.State) error {
	return s.putStates(ctx, states, true)
}

// PutState stores one budget's decision if it is newer than the stored one
// (see store.Store.PutState).
func (s *Store) PutState(ctx context.Context, st budget.State) error {
	return s.putStates(ctx, []budget.State{st}, false)
}

// putStates puts states as PutStates does, removing the absent budgets'
// only if prune.
func (s *Store) putStates(ctx context.Context, states []budget.State, prune bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	given := make(map[string]budget.State, len(states))
	var latest time.Time
	for _, st := range states {
		// A round trip through the stored form copies the rules map and
		// puts the times in UTC, as a store that keeps JSON returns them.
		rec := record.FromState(&st)
		given[st.Budget] = rec.ToState()
		if st.Computed.After(latest) {
			latest = st.Computed
		}
	}
	l := &s.live
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return errClosed
	}
	m := make(map[string]budget.State, max(len(l.states), len(given)))
	for name, old := range l.states {
		if _, ok := given[name]; ok || !prune || len(states) > 0 && old.Computed.After(latest) {
			m[name] = old
		}
	}
	now := s.now()
	for name, st := range given {
		if old, ok := m[name]; ok && budget.CompareStates(&old, &st) > 0 {
			continue // a newer decision is stored
		}
		m[name] = st
		if st.MonthStart.IsZero() {
			continue
		}
		k := usageKey{st.Budget, budget.MonthKey(st.MonthStart)}
		points := l.history[k]
		if points == nil {
			maps.DeleteFunc(l.history, func(k usageKey, _ map[int]budget.HistoryPoint) bool {
				start, err := time.Parse("200601", k.month)
				return err != nil || !now.Before(record.UsageExpiry(start))
			})
			points = map[int]budget.HistoryPoint{}
			l.history[k] = points
		}
		if p := st.Point(); p.Hour >= 0 && p.Hour < budget.HoursIn(st.MonthStart) {
			points[p.Hour] = p
		}
	}
	l.states = m
	l.dirty = true
	l.mu.Unlock()
	s.broadcast(store.TopicBudgets)
	return nil
}

// History returns a budget's month of hourly decisions, by hour.
func (s *Store) History(ctx context.Context, budgetName string, month time.Time) ([]budget.HistoryPoint, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l := &s.live
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errClosed
	}
	points := l.history[usageKey{budgetName, budget.MonthKey(month)}]
	out := make([]budget.HistoryPoint, 0, len(points))
	for _, p := range points {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b budget.HistoryPoint) int { return a.Hour - b.Hour })
	return out, nil
}

// States returns the last decisions, by budget name.
func (s *Store) States(ctx context.Context) (map[string]budget.State, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l := &s.live
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errClosed
	}
	out := make(map[string]budget.State, len(l.states))
	for name, st := range l.states {
		st.Rules = maps.Clone(st.Rules)
		out[name] = st
	}
	return out, nil
}

// FireAlert records a, with the next sequence number as its ID, unless an
// alert with its DedupKey fired in the last 70 days. A fired alert is on
// disk before FireAlert returns, so it fires once across restarts too.
func (s *Store) FireAlert(_ context.Context, a budget.Alert) (budget.Alert, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return budget.Alert{}, false, errClosed
	}
	now := s.now()
	key := a.DedupKey()
	if until, ok := s.st.fired[key]; ok && now.Before(until) {
		return budget.Alert{}, false, nil
	}
	next := s.st
	next.fired = make(map[string]time.Time, len(s.st.fired)+1)
	for k, until := range s.st.fired {
		if now.Before(until) {
			next.fired[k] = until
		}
	}
	next.fired[key] = now.Add(record.UsageRetention)
	next.alertSeq++
	a = record.NormalizeAlert(a)
	a.ID = strconv.FormatInt(next.alertSeq, 10)
	next.alerts = append(next.alerts, alertEntry{seq: next.alertSeq, alert: a})
	if n := len(next.alerts) - s.maxAlerts; n > 0 {
		next.alerts = next.alerts[n:] // as events in commit
	}
	if err := s.apply(&next, store.TopicAlerts); err != nil {
		return budget.Alert{}, false, fmt.Errorf("fire alert %s: %w", key, err)
	}
	return a, true, nil
}

// Alerts lists alerts newest first, optionally of one budget. pageSize 0
// means 100; at most 1000 are returned.
func (s *Store) Alerts(_ context.Context, budgetName string, pageSize int, pageToken string) (store.AlertPage, error) {
	size, err := record.PageSize(pageSize)
	if err != nil {
		return store.AlertPage{}, fmt.Errorf("list alerts: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.AlertPage{}, errClosed
	}
	alerts := s.st.alerts
	end := len(alerts) // alerts[end:] were listed already
	if pageToken != "" {
		after, err := decodeToken(alertTokenPrefix, pageToken)
		if err != nil {
			return store.AlertPage{}, fmt.Errorf("list alerts: %w", err)
		}
		end = sort.Search(len(alerts), func(i int) bool { return alerts[i].seq >= after })
	}
	var page store.AlertPage
	for i := end - 1; i >= 0; i-- {
		e := &alerts[i]
		if budgetName != "" && e.alert.Budget != budgetName {
			continue
		}
		if len(page.Alerts) == size {
			page.NextToken = encodeToken(alertTokenPrefix, page.Alerts[size-1].ID)
			break
		}
		page.Alerts = append(page.Alerts, e.alert)
	}
	return page, nil
}
