package redisstore

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/internal/record"
	"github.com/tracesampling/controlplane/pkg/rules"
)

//go:embed batch.lua
var batchLua string

// ApplyRuleEdits makes every edit or none, in one run of batch.lua. It
// reads the rules it updates first (one HMGET), to keep their create times;
// the script then checks that each is still what was read. A rule deleted
// and created again at the same revision in between makes it read again,
// as UpdateRule does.
func (s *Store) ApplyRuleEdits(ctx context.Context, edits []store.RuleEdit, actor, message string) (store.BatchResult, error) {
	if err := store.CheckBatch(edits, message); err != nil {
		return store.BatchResult{}, fmt.Errorf("redisstore: %w", err)
	}
	if s.closed.Load() {
		return store.BatchResult{}, errClosed
	}
	if len(edits) == 0 {
		v, err := s.RulesVersion(ctx)
		return store.BatchResult{Version: v}, err
	}
	for range updateAttempts {
		res, retry, err := s.applyEdits(ctx, edits, actor, message)
		if err != nil || !retry {
			return res, err
		}
	}
	return store.BatchResult{}, fmt.Errorf("apply %d edits: %w (a rule was replaced while updating)", len(edits), store.ErrConflict)
}

// applyEdits runs the batch once; retry says that a rule was replaced
// between the read and the script.
func (s *Store) applyEdits(ctx context.Context, edits []store.RuleEdit, actor, message string) (res store.BatchResult, retry bool, err error) {
	var updated []string
	for i := range edits {
		if edits[i].Action == store.ActionUpdate {
			updated = append(updated, edits[i].Rule.Name)
		}
	}
	read := map[string]string{}
	if len(updated) > 0 {
		vals, err := s.client.HMGet(ctx, s.rulesKey, updated...).Result()
		if err != nil {
			return res, false, unavailable("read rules", err)
		}
		for i, v := range vals {
			if str, ok := v.(string); ok {
				read[updated[i]] = str
			}
		}
	}
	now := record.Timestamp(s.now())
	call := s.callKey("")
	keys := make([]string, 0, 4+len(edits))
	keys = append(keys, s.rulesKey, s.versionKey, s.eventsKey, call)
	args := make([]any, 0, 9+5*len(edits))
	args = append(args, actor, now.Format(time.RFC3339Nano), s.maxEvents, s.channel, callTTL.Milliseconds(),
		s.maxRules, store.FirstVersion(now), message, len(edits))
	res.Rules = make([]rules.Rule, len(edits))
	for i := range edits {
		e := &edits[i]
		name := e.Rule.Name
		keys = append(keys, s.ruleEventsKey(name))
		var rule []byte
		var curJSON string
		switch e.Action {
		case store.ActionCreate:
			r := e.Rule.Clone()
			r.Revision, r.CreateTime, r.UpdateTime = 1, now, now
			res.Rules[i] = r
		case store.ActionUpdate:
			str, ok := read[name]
			if !ok {
				return store.BatchResult{}, false, &store.EditError{Index: i, Action: e.Action, Name: name, Err: store.ErrNotFound}
			}
			cur, err := record.UnmarshalRule([]byte(str))
			if err != nil {
				return store.BatchResult{}, false, fmt.Errorf("rule %q: %w", name, err)
			}
			if cur.Revision != e.IfRevision {
				return store.BatchResult{}, false, &store.EditError{Index: i, Action: e.Action, Name: name,
					Err: fmt.Errorf("%w (at revision %d, not %d)", store.ErrConflict, cur.Revision, e.IfRevision)}
			}
			r := e.Rule.Clone()
			r.Revision, r.CreateTime, r.UpdateTime = cur.Revision+1, cur.CreateTime, now
			res.Rules[i], curJSON = r, str
		}
		if e.Action != store.ActionDelete {
			if rule, err = record.MarshalRuleForScript(&res.Rules[i]); err != nil {
				return store.BatchResult{}, false, err
			}
		}
		args = append(args, e.Action.String(), name, rule, curJSON, e.IfRevision)
	}
	v, err := s.batch.Run(ctx, s.client, keys, args...).Slice()
	if err != nil {
		return store.BatchResult{}, false, unavailable("run batch script", err)
	}
	status, ok := int64At(v, 0)
	if !ok {
		return store.BatchResult{}, false, fmt.Errorf("batch script returned %v", v)
	}
	if status == statusLimit {
		return store.BatchResult{}, false, fmt.Errorf("apply %d edits: %w (at most %d rules, the Default rule included)", len(edits), store.ErrRuleLimit, s.maxRules)
	}
	if status != statusOK {
		i, ok := int64At(v, 1)
		if !ok || i < 1 || int(i) > len(edits) {
			return store.BatchResult{}, false, fmt.Errorf("batch script returned %v", v)
		}
		e := &edits[i-1]
		fail := func(err error) error {
			return &store.EditError{Index: int(i - 1), Action: e.Action, Name: e.Rule.Name, Err: err}
		}
		switch status {
		case statusNotFound:
			return store.BatchResult{}, false, fail(store.ErrNotFound)
		case statusExists:
			return store.BatchResult{}, false, fail(store.ErrAlreadyExists)
		case statusConflict:
			return store.BatchResult{}, false, fail(fmt.Errorf("%w (not at revision %d)", store.ErrConflict, e.IfRevision))
		case statusChanged:
			return store.BatchResult{}, true, nil
		}
		return store.BatchResult{}, false, fmt.Errorf("batch script returned %v", v)
	}
	if len(v) != 2+len(edits) {
		return store.BatchResult{}, false, fmt.Errorf("batch script returned %d values for %d edits", len(v), len(edits))
	}
	res.Version, _ = int64At(v, 1)
	for i := range res.Rules {
		if edits[i].Action != store.ActionDelete {
			res.Rules[i].RulesVersion = res.Version
		}
	}
	if err := s.replicated(ctx, call); err != nil {
		return store.BatchResult{}, false, err
	}
	return res, false, nil
}

// int64At returns v[i] if it is an integer.
func int64At(v []any, i int) (int64, bool) {
	if i >= len(v) {
		return 0, false
	}
	n, ok := v[i].(int64)
	return n, ok
}
