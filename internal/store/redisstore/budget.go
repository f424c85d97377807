package redisstore

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/internal/record"
)

//go:embed budget.lua
var budgetLua string

//go:embed alert.lua
var alertLua string

//go:embed states.lua
var statesLua string

// Page token prefixes of the budget listings, so that a token of one
// listing is rejected by another rather than misread.
const (
	budgetTokenPrefix = "redisb1:"
	alertTokenPrefix  = "redisa1:"
)

// The keys of budgets, states, alerts and ticks; see the package doc.
func (s *Store) budgetsKey() string                       { return s.tag + ":budgets" }
func (s *Store) statesKey() string                        { return s.tag + ":budgets:states" }
func (s *Store) stateOrderKey() string                    { return s.tag + ":budgets:states:order" }
func (s *Store) alertsKey() string                        { return s.tag + ":alerts" }
func (s *Store) budgetAlertsKey(budgetName string) string { return s.tag + ":alerts:" + budgetName }
func (s *Store) firedKey(dedupKey string) string          { return s.tag + ":fired:" + dedupKey }
func (s *Store) tickKey(tick int64) string                { return s.tag + ":tick:" + strconv.FormatInt(tick, 10) }
func (s *Store) historyKey(budgetName string, month time.Time) string {
	return s.tag + ":history:" + budgetName + ":" + budget.MonthKey(month)
}

// Budgets lists budgets by name. pageSize 0 means 100; at most 1000 are
// returned. Budgets are few, so a page is cut from all of them; a page token
// holds the last name listed, so budgets created or deleted meanwhile do not
// shift the pages.
func (s *Store) Budgets(ctx context.Context, pageSize int, pageToken string) (store.BudgetPage, error) {
	if s.closed.Load() {
		return store.BudgetPage{}, errClosed
	}
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
	all, err := s.client.HGetAll(ctx, s.budgetsKey()).Result()
	if err != nil {
		return store.BudgetPage{}, unavailable("list budgets", err)
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	slices.Sort(names)
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
		if page.Budgets[i], err = record.UnmarshalBudget([]byte(all[n])); err != nil {
			return store.BudgetPage{}, fmt.Errorf("list budgets: %w", err)
		}
	}
	return page, nil
}

// Budget returns the budget called name or an error wrapping
// store.ErrNotFound.
func (s *Store) Budget(ctx context.Context, name string) (budget.Budget, error) {
	if s.closed.Load() {
		return budget.Budget{}, errClosed
	}
	b, _, err := s.readBudget(ctx, name)
	if err != nil {
		return budget.Budget{}, fmt.Errorf("budget %q: %w", name, err)
	}
	return b, nil
}

// readBudget returns a budget and its stored JSON.
func (s *Store) readBudget(ctx context.Context, name string) (budget.Budget, string, error) {
	raw, err := s.client.HGet(ctx, s.budgetsKey(), name).Result()
	if errors.Is(err, redis.Nil) {
		return budget.Budget{}, "", store.ErrNotFound
	}
	if err != nil {
		return budget.Budget{}, "", unavailable("read budget", err)
	}
	b, err := record.UnmarshalBudget([]byte(raw))
	if err != nil {
		return budget.Budget{}, "", err
	}
	return b, raw, nil
}

// CreateBudget stores b at revision 1, with both times now.
func (s *Store) CreateBudget(ctx context.Context, b budget.Budget) (budget.Budget, error) {
	if s.closed.Load() {
		return budget.Budget{}, errClosed
	}
	now := record.Timestamp(s.now())
	b = record.CloneBudget(b)
	b.Revision, b.CreateTime, b.UpdateTime = 1, now, now
	raw, err := record.MarshalBudget(&b)
	if err != nil {
		return budget.Budget{}, err
	}
	status, err := s.runBudgetEdit(ctx, budgetEdit{op: store.ActionCreate, name: b.Name, budget: raw})
	if err != nil {
		return budget.Budget{}, fmt.Errorf("create budget %q: %w", b.Name, err)
	}
	switch status {
	case statusOK:
		return b, nil
	case statusExists:
		return budget.Budget{}, fmt.Errorf("create budget %q: %w", b.Name, store.ErrAlreadyExists)
	}
	return budget.Budget{}, fmt.Errorf("create budget %q: unexpected status %d", b.Name, status)
}

// UpdateBudget replaces the budget called b.Name if it is at ifRevision. It
// reads the budget first to keep its create time; the script then checks
// that the budget is still what was read.
func (s *Store) UpdateBudget(ctx context.Context, b budget.Budget, ifRevision int64) (budget.Budget, error) {
	if s.closed.Load() {
		return budget.Budget{}, errClosed
	}
	for range updateAttempts {
		cur, curJSON, err := s.readBudget(ctx, b.Name)
		if err != nil {
			return budget.Budget{}, fmt.Errorf("update budget %q: %w", b.Name, err)
		}
		if cur.Revision != ifRevision {
			return budget.Budget{}, fmt.Errorf("update budget %q at revision %d: %w (it is at %d)",
				b.Name, ifRevision, store.ErrConflict, cur.Revision)
		}
		next := record.CloneBudget(b)
		next.Revision, next.CreateTime, next.UpdateTime = cur.Revision+1, cur.CreateTime, record.Timestamp(s.now())
		raw, err := record.MarshalBudget(&next)
		if err != nil {
			return budget.Budget{}, err
		}
		status, err := s.runBudgetEdit(ctx, budgetEdit{
			op: store.ActionUpdate, name: b.Name, budget: raw, read: curJSON, ifRevision: ifRevision,
		})
		if err != nil {
			return budget.Budget{}, fmt.Errorf("update budget %q: %w", b.Name, err)
		}
		switch status {
		case statusOK:
			return next, nil
		case statusNotFound:
			return budget.Budget{}, fmt.Errorf("update budget %q: %w", b.Name, store.ErrNotFound)
		case statusConflict:
			return budget.Budget{}, fmt.Errorf("update budget %q at revision %d: %w", b.Name, ifRevision, store.ErrConflict)
		case statusChanged:
			continue
		default:
			return budget.Budget{}, fmt.Errorf("update budget %q: unexpected status %d", b.Name, status)
		}
	}
	return budget.Budget{}, fmt.Errorf("update budget %q at revision %d: %w (replaced while updating)",
		b.Name, ifRevision, store.ErrConflict)
}

// DeleteBudget removes the budget called name if it is at ifRevision, or at
// any revision if ifRevision is 0. Its usage, state and alerts stay until
// they expire.
func (s *Store) DeleteBudget(ctx context.Context, name string, ifRevision int64) error {
	if s.closed.Load() {
		return errClosed
	}
	status, err := s.runBudgetEdit(ctx, budgetEdit{op: store.ActionDelete, name: name, ifRevision: ifRevision})
	if err != nil {
		return fmt.Errorf("delete budget %q: %w", name, err)
	}
	switch status {
	case statusOK:
		return nil
	case statusNotFound:
		return fmt.Errorf("delete budget %q: %w", name, store.ErrNotFound)
	case statusConflict:
		return fmt.Errorf("delete budget %q at revision %d: %w", name, ifRevision, store.ErrConflict)
	}
	return fmt.Errorf("delete budget %q: unexpected status %d", name, status)
}

// budgetEdit are the arguments of budget.lua.
type budgetEdit struct {
	op         store.Action
	name       string
	budget     []byte // the new budget; create and update
	read       string // the stored budget as read; update
	ifRevision int64
}

func (s *Store) runBudgetEdit(ctx context.Context, a budgetEdit) (int64, error) {
	call := s.callKey("")
	status, err := s.budgetEdit.Run(ctx, s.client, []string{s.budgetsKey(), call},
		a.op.String(), a.name, a.budget, a.read, a.ifRevision, s.channel, callTTL.Milliseconds(),
	).Int64Slice()
	if err != nil {
		return 0, unavailable("run budget script", err)
	}
	if len(status) != 1 {
		return 0, fmt.Errorf("budget script returned %v", status)
	}
	if status[0] == statusOK {
		if err := s.replicated(ctx, call); err != nil {
			return 0, err
		}
	}
	return status[0], nil
}

// Usage returns a budget's month as RecordReports added it up: the sum of
// its parts in every shard, and of the one a store upgraded from one shard
// left under the store's own tag. A month without reports, or past its
// retention, is empty.
func (s *Store) Usage(ctx context.Context, budgetName string, month time.Time) (budget.Usage, error) {
	if s.closed.Load() {
		return budget.Usage{}, errClosed
	}
	lay, err := s.shardLayout(ctx)
	if err != nil {
		return budget.Usage{}, fmt.Errorf("read usage: %w", err)
	}
	start := budget.MonthStart(month)
	for range 2 {
		u, newer, err := s.usageIn(ctx, lay, budgetName, start)
		if err != nil || !newer {
			return u, err
		}
		// The list changed since this store read it: a reshard added
		// shards whose parts the read missed. Read again in the new one.
		if lay, err = s.reloadLayout(ctx, lay); err != nil {
			return budget.Usage{}, fmt.Errorf("read usage: %w", err)
		}
	}
	return budget.Usage{}, fmt.Errorf("read usage: %w: the shard list changed twice while reading", store.ErrUnavailable)
}

// usageIn reads a budget's month in the shards of lay, of its every
// generation, and, with them, the shard list, to say whether a newer one
// was laid out (then the sum may miss the new shards' parts).
func (s *Store) usageIn(ctx context.Context, lay *shardLayout, budgetName string, start time.Time) (budget.Usage, bool, error) {
	u := budget.NewUsage(start)
	tags := lay.usageTags()
	servicesTags := lay.servicesTags()
	legacy, upgraded := lay.legacy(s.tag)
	if upgraded {
		tags = append(tags, legacy)
		servicesTags = append(servicesTags, legacy)
	}
	services := 0
	if budgetName == store.FleetUsage {
		services = 2
	}
	cmds := make([]*redis.MapStringStringCmd, 0, len(tags)+2*len(servicesTags))
	var list *redis.StringCmd
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, tag := range tags {
			cmds = append(cmds, p.HGetAll(ctx, usageKeyIn(tag, budgetName, start)))
		}
		if services > 0 {
			for _, tag := range servicesTags {
				cmds = append(cmds, p.HGetAll(ctx, servicesKeyIn(tag, start, false)), p.HGetAll(ctx, servicesKeyIn(tag, start, true)))
			}
		}
		if lay.raw != "" {
			list = p.Get(ctx, s.shardsKey())
		}
		return nil
	})
	if err != nil {
		return budget.Usage{}, false, unavailable("read usage", err)
	}
	if list != nil && list.Val() != lay.raw {
		return budget.Usage{}, true, nil
	}
	if services > 0 {
		fleetServices(&u, cmds[len(tags):])
	}
	for _, cmd := range cmds[:len(tags)] {
		if err := addUsage(&u, budgetName, cmd.Val()); err != nil {
			return budget.Usage{}, false, err
		}
	}
	return u, false, nil
}

// addUsage adds the fields of a usage key to u.
func addUsage(u *budget.Usage, budgetName string, fields map[string]string) error {
	for f, v := range fields {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("usage of budget %q: field %q: %w", budgetName, f, err)
		}
		kind, arg, _ := strings.Cut(f, ":")
		switch kind {
		case "r", "s":
			h, err := strconv.Atoi(arg)
			if err != nil || h < 0 || h >= len(u.Requests) {
				continue // not written by RecordReports
			}
			if kind == "r" {
				u.Requests[h] += float64(n)
			} else {
				u.Sampled[h] += float64(n)
			}
		case "rh", "sh":
			hs, rule, ok := strings.Cut(arg, ":")
			h, err := strconv.Atoi(hs)
			if !ok || err != nil || h < 0 || h >= len(u.Requests) {
				continue // not written by RecordReports
			}
			series := u.RuleRequests
			if kind == "sh" {
				if u.RuleSampled == nil {
					u.RuleSampled = map[string][]float64{}
				}
				series = u.RuleSampled
			}
			hours := series[rule]
			if hours == nil {
				hours = make([]float64, len(u.Requests))
				series[rule] = hours
			}
			hours[h] += float64(n)
		case "rr", "rs":
			ru := u.Rules[arg]
			if kind == "rr" {
				ru.Requests += n
			} else {
				ru.Sampled += n
			}
			u.Rules[arg] = ru
		}
	}
	return nil
}

// fleetServices adds the fleet's month per rule and service, read from its
// keys (requests, sampled, in pairs), into u.Services.
func fleetServices(u *budget.Usage, cmds []*redis.MapStringStringCmd) {
	u.Services = map[string]map[string]budget.RuleUsage{}
	for i, cmd := range cmds {
		sampled := i%2 == 1
		for f, v := range cmd.Val() {
			n, err := strconv.ParseInt(v, 10, 64)
			rule, svc, ok := strings.Cut(f, ":")
			if err != nil || !ok {
				continue // not written by RecordReports
			}
			m := u.Services[rule]
			if m == nil {
				m = map[string]budget.RuleUsage{}
				u.Services[rule] = m
			}
			c := m[svc]
			if sampled {
				c.Sampled += n
			} else {
				c.Requests += n
			}
			m[svc] = c
		}
	}
}

// ClaimTick sets the tick's key if it is absent (SET NX), with a random
// value and a life of ttl: exactly one caller across replicas gets true.
func (s *Store) ClaimTick(ctx context.Context, tick int64, ttl time.Duration) (bool, error) {
	if s.closed.Load() {
		return false, errClosed
	}
	if ttl <= 0 {
		return false, fmt.Errorf("claim tick %d: ttl %v must be positive", tick, ttl)
	}
	ok, err := s.client.SetNX(ctx, s.tickKey(tick), strconv.FormatUint(rand.Uint64(), 36), ttl).Result()
	if err != nil {
		return false, unavailable("claim tick", err)
	}
	return ok, nil
}

// PutStates stores the decisions of a controller interval, per budget the
// newer of the stored and the given one, removes those of budgets absent
// from states computed no later than the latest of states, and publishes
// TopicBudgets, in one script (see store.Store.PutStates). Each decision
// that stays is also its hour's point of the budget's history (the last one
// of the hour stays).
func (s *Store) PutStates(ctx context.Context, states []budget.State) error {
	return s.putStates(ctx, "put budget states", states, true)
}

// PutState stores one budget's decision if it is newer than the stored one
// (see store.Store.PutState).
func (s *Store) PutState(ctx context.Context, st budget.State) error {
	return s.putStates(ctx, "put budget state", []budget.State{st}, false)
}

// putStates runs states.lua; it removes absent budgets' decisions only if
// prune. op names the call in errors.
func (s *Store) putStates(ctx context.Context, op string, states []budget.State, prune bool) error {
	if s.closed.Load() {
		return errClosed
	}
	keys := make([]string, 2, 2+len(states))
	keys[0], keys[1] = s.statesKey(), s.stateOrderKey()
	var latest time.Time
	for i := range states {
		if states[i].Computed.After(latest) {
			latest = states[i].Computed
		}
	}
	pruneArg := "0"
	if prune {
		pruneArg = "1"
	}
	args := make([]any, 0, 4+6*len(states))
	args = append(args, pruneArg, record.StateOrder(&budget.State{Computed: latest})[40:], s.channel, len(states))
	for i := range states {
		st := &states[i]
		raw, err := record.MarshalState(st)
		if err != nil {
			return err
		}
		key, hour, praw, ttl := s.stateOrderKey(), "", []byte(nil), int64(0)
		if p := st.Point(); !st.MonthStart.IsZero() && p.Hour >= 0 && p.Hour < budget.HoursIn(st.MonthStart) {
			if praw, err = record.MarshalPoint(&p); err != nil {
				return err
			}
			key, hour = s.historyKey(st.Budget, st.MonthStart), strconv.Itoa(p.Hour)
			ttl = max(record.UsageExpiry(st.MonthStart).Sub(st.Computed), minUsageTTL).Milliseconds()
		}
		keys = append(keys, key)
		args = append(args, st.Budget, record.StateOrder(st), raw, hour, praw, ttl)
	}
	if err := s.states.Run(ctx, s.client, keys, args...).Err(); err != nil {
		return unavailable(op, err)
	}
	return nil
}

// History returns a budget's month of hourly decisions, by hour.
func (s *Store) History(ctx context.Context, budgetName string, month time.Time) ([]budget.HistoryPoint, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	all, err := s.client.HGetAll(ctx, s.historyKey(budgetName, month)).Result()
	if err != nil {
		return nil, unavailable("read budget history", err)
	}
	out := make([]budget.HistoryPoint, 0, len(all))
	for f, raw := range all {
		p, err := record.UnmarshalPoint([]byte(raw))
		if err != nil {
			return nil, fmt.Errorf("history of budget %q: hour %s: %w", budgetName, f, err)
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b budget.HistoryPoint) int { return a.Hour - b.Hour })
	return out, nil
}

// States returns the last decisions, by budget name.
func (s *Store) States(ctx context.Context) (map[string]budget.State, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	all, err := s.client.HGetAll(ctx, s.statesKey()).Result()
	if err != nil {
		return nil, unavailable("read budget states", err)
	}
	out := make(map[string]budget.State, len(all))
	for name, raw := range all {
		st, err := record.UnmarshalState([]byte(raw))
		if err != nil {
			return nil, fmt.Errorf("budget states: %q: %w", name, err)
		}
		out[name] = st
	}
	return out, nil
}

// FireAlert records a unless an alert with its DedupKey fired in the last 70
// days; the ID is the alert's stream entry ID. One script checks and sets
// the mark, so an alert fires once however many replicas fire it at once.
func (s *Store) FireAlert(ctx context.Context, a budget.Alert) (budget.Alert, bool, error) {
	if s.closed.Load() {
		return budget.Alert{}, false, errClosed
	}
	a = record.NormalizeAlert(a)
	a.ID = ""
	raw, err := record.MarshalAlert(&a)
	if err != nil {
		return budget.Alert{}, false, err
	}
	key := a.DedupKey()
	keys := []string{s.firedKey(key), s.alertsKey(), s.budgetAlertsKey(a.Budget), s.callKey("")}
	id, err := s.alert.Run(ctx, s.client, keys,
		raw, record.UsageRetention.Milliseconds(), s.maxAlerts, s.channel, callTTL.Milliseconds()).Text()
	if errors.Is(err, redis.Nil) {
		return budget.Alert{}, false, nil
	}
	if err != nil {
		return budget.Alert{}, false, unavailable(fmt.Sprintf("fire alert %s", key), err)
	}
	a.ID = id
	return a, true, nil
}

// Alerts lists alerts newest first, optionally of one budget. pageSize 0
// means 100; at most 1000 are returned. Page tokens hold the ID of the last
// alert returned, so alerts that fire meanwhile are not listed twice.
func (s *Store) Alerts(ctx context.Context, budgetName string, pageSize int, pageToken string) (store.AlertPage, error) {
	if s.closed.Load() {
		return store.AlertPage{}, errClosed
	}
	size, err := record.PageSize(pageSize)
	if err != nil {
		return store.AlertPage{}, fmt.Errorf("list alerts: %w", err)
	}
	newest := "+"
	if pageToken != "" {
		id, err := decodeToken(alertTokenPrefix, pageToken)
		if err != nil {
			return store.AlertPage{}, fmt.Errorf("list alerts: %w", err)
		}
		newest = "(" + id
	}
	key := s.alertsKey()
	if budgetName != "" {
		key = s.budgetAlertsKey(budgetName)
	}
	msgs, err := s.client.XRevRangeN(ctx, key, newest, "-", int64(size)+1).Result()
	if err != nil {
		return store.AlertPage{}, unavailable("list alerts", err)
	}
	var page store.AlertPage
	if len(msgs) > size {
		msgs = msgs[:size]
		page.NextToken = encodeToken(alertTokenPrefix, msgs[size-1].ID)
	}
	page.Alerts = make([]budget.Alert, len(msgs))
	for i, m := range msgs {
		raw, _ := m.Values["alert"].(string)
		if page.Alerts[i], err = record.UnmarshalAlert([]byte(raw), m.ID); err != nil {
			return store.AlertPage{}, fmt.Errorf("list alerts: entry %s: %w", m.ID, err)
		}
	}
	return page, nil
}
