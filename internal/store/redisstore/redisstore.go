// Package redisstore keeps rules, budgets and their usage and alerts in
// Redis, so that every replica of the control plane serves the same rules
// and version, and any replica can take an edit. It works on a single node,
// Sentinel or Redis Cluster: each script touches the keys of one hash tag,
// so one slot. Rules, budgets, alerts and tokens share the tag "{tsc}"; the
// report path's keys (marked ⁺ below) are spread over shards, a tag each,
// by rule or reporting client (shard.go): on a Cluster one per master,
// "{tsc}" for the master of its slot and "{tsc:<i>.<n>}" for the others, so
// that the fleet's reports spread over the masters; elsewhere one, "{tsc}",
// the layout before sharding.
//
// Layout, for the default prefix "tsc" and one shard:
//
//	{tsc}:rules                  hash: rule name -> rule JSON
//	{tsc}:rules:version          counter, bumped by every edit; the first
//	                             edit sets it from the clock (see
//	                             store.FirstVersion)
//	{tsc}:rules:events           stream: audit log, all rules
//	{tsc}:rules:events:<name>    stream: audit log of one rule
//	{tsc}:ledger:<rule>⁺         hash: fleet ledger: "<bucket>" sum of
//	                             rates, "q:<bucket>" sum of quotas granted,
//	                             "last", and the reserve after an outage
//	                             ("res", "resb", "resf"); 15 minutes
//	{tsc}:borrow:<rule>⁺         hash: the rule's first-borrow gate
//	                             bucket, "t" tokens and "at" (unix ms),
//	                             in the rule's shard; kept until full
//	                             again (borrow.go), at most an hour
//	{tsc}:receiptkeys            string: the keys receipts are signed with
//	                             (receipt.KeySet JSON); created once
//	{tsc}:budgets                hash: budget name -> budget JSON
//	{tsc}:budgets:states         hash: budget name -> controller state JSON
//	{tsc}:budgets:states:order   hash: budget name -> its state's order (states.lua)
//	{tsc}:usage:<budget>:<YYYYMM>⁺ hash: a budget's month: "r:<hour>" and
//	                             "s:<hour>" requests and sampled in an hour
//	                             of the month, "rr:<rule>" and "rs:<rule>" a
//	                             rule's totals; expires 70 days after the
//	                             month ends. With shards, one per shard
//	                             (of its rules' unnumbered counts and its
//	                             clients' numbered ones); Usage sums them
//	                             (and the "{tsc}" one of a store upgraded
//	                             from one shard)
//	{tsc}:usage:*:<YYYYMM>:services[-sampled]⁺ hash: the fleet's month per
//	                             rule and service, in the first shard
//	{tsc}:seqs:<span>⁺           hash: client -> highest seq of its
//	                             numbered reports recorded (ledger.go);
//	                             with shards, in the client's shard and
//	                             in that of the services hashes
//	{tsc}:alerts                 stream: every alert; entry ID = alert ID
//	{tsc}:alerts:<budget>        stream: one budget's alerts, same IDs
//	{tsc}:fired:<dedup key>      string: an alert fired (its ID); 70 days
//	{tsc}:tick:<tick>            string: the controller tick is claimed
//	{tsc}:call:<id>⁺             string: a script call was applied (so
//	                             that the call sent again changes nothing
//	                             and answers as the first run); id is
//	                             random, or a report batch's Key, then one
//	                             in each shard the batch touches (from the
//	                             shard list's generation 1, "g<gen>:<Key>");
//	                             5 minutes
//	{tsc}:fence⁺                 string: the lowest generation of the shard
//	                             list whose batches the shard takes
//	                             (reshard.go); absent: any
//	{tsc}:tokens...              tokens and their indexes (see token.go)
//	{tsc}:shards                 string: the shards' tags on a Cluster, their
//	                             generation and the past generations' tags
//	                             (JSON), set by the first replica and
//	                             replaced by each reshard
//	{tsc}:shards:lock            string: a reshard under way; 30 s
//	{tsc}:changes                pub/sub channel; each message names the
//	                             topic that changed: "rules", "budgets",
//	                             "alerts", "tokens"
package redisstore

import (
	"context"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/internal/record"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// Options configure a Store.
type Options struct {
	// Prefix names the keys, inside a hash tag: "{Prefix}:rules". Stores
	// with the same prefix share rules. Default: "tsc".
	Prefix string
	// Now is the clock that stamps rules and audit events; taking time from
	// the replica rather than Redis keeps tests exact. Default: time.Now.
	Now func() time.Time
	// MaxEvents is how many audit entries are kept in the log of all rules
	// and in each rule's log, trimmed approximately (Redis may keep up to
	// about a hundred more). Default: 100000.
	MaxEvents int64
	// MaxAlerts is how many alerts are kept in the list of all alerts and
	// in each budget's, trimmed approximately like MaxEvents. Default:
	// 10000.
	MaxAlerts int64
	// MaxRules is the most rules the store holds, the Default rule
	// included; CreateRule refuses more with store.ErrRuleLimit. Every
	// replica must have the same. Default, and the most allowed:
	// rules.MaxRules.
	MaxRules int
	// MaxTokens is how many tokens are kept; CreateToken refuses more with
	// store.ErrLimit. Default: store.MaxTokens.
	MaxTokens int
	// ReplicaWait is how long a rule or budget edit waits for every replica
	// the master has online to confirm it (Redis WAIT) before it is
	// acknowledged, so that a failover cannot lose an acknowledged edit.
	// An edit not confirmed in time fails with store.ErrNotReplicated
	// (it is applied). A lone node has no replicas and does not wait.
	// Default: DefaultReplicaWait. Negative: edits never wait.
	ReplicaWait time.Duration
	// Shards is how many hash tags, so Cluster slots, the report path's
	// keys (ledgers, budgets' usage, seqs, report call keys) are spread
	// over, by rule or client; a report batch runs one script per shard
	// it touches, so more shards than masters only cost. Every replica
	// must have the same. 1: one slot, the layout before sharding. 0 (the
	// default): on a Cluster, one per master as the first replica found
	// them (kept in Redis, so that every replica has the same); else 1.
	// At most MaxShards.
	Shards int
}

// Defaults of Options.
const (
	DefaultPrefix    = "tsc"
	DefaultMaxEvents = 100000
	DefaultMaxAlerts = 10000
)

// Watch timing. A quiet subscription is pinged every watchPingInterval; one
// that answers nothing for another interval is replaced. Failed
// subscriptions are retried with jittered exponential backoff.
const (
	watchPingInterval = 10 * time.Second
	watchMinBackoff   = 50 * time.Millisecond
	watchMaxBackoff   = 2 * time.Second
)

// systemActor is the actor of edits the store makes by itself.
const systemActor = "system"

// updateAttempts bounds the retries of an update whose rule was deleted and
// created again at the same revision between the read and the write.
const updateAttempts = 3

//go:embed edit.lua
var editLua string

// Statuses returned by edit.lua.
const (
	statusOK = iota
	statusNotFound
	statusExists
	statusConflict
	statusChanged
	statusLimit
)

// errClosed is returned by every call after Close.
var errClosed = fmt.Errorf("redisstore: %w: %w: store closed", store.ErrUnavailable, store.ErrNotApplied)

// Store is a store.Store on Redis. It is safe for concurrent use; all
// coordination between callers and replicas happens in Redis.
type Store struct {
	client      redis.UniversalClient
	now         func() time.Time
	maxEvents   int64
	maxAlerts   int64
	maxRules    int
	maxTokens   int
	wait        time.Duration // Options.ReplicaWait; negative: none
	edit        *redis.Script
	batch       *redis.Script
	ledger      *redis.Script
	keysCAS     *redis.Script
	layout      atomic.Pointer[shardLayout] // the report path's (shard.go); nil until read
	layoutMu    sync.Mutex                  // held to read it
	budgetEdit  *redis.Script
	alert       *redis.Script
	states      *redis.Script
	tokenScript *redis.Script
	closed      atomic.Bool
	tag         string

	rulesKey   string
	versionKey string
	eventsKey  string
	channel    string
}

// New returns a store on client and makes sure the Default rule exists: many
// replicas may start at once, and exactly one of them seeds it. If Redis
// cannot be reached, New still returns the store, so that a replica can start
// before its Redis: the first Snapshot that reaches Redis seeds the rule
// (Snapshot puts it back wherever it is missing). The caller keeps ownership
// of client and closes it after Close.
func New(ctx context.Context, client redis.UniversalClient, opts Options) (*Store, error) {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(opts.Prefix, "{}") {
		return nil, fmt.Errorf("redisstore: prefix %q must not contain braces", opts.Prefix)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxEvents <= 0 {
		opts.MaxEvents = DefaultMaxEvents
	}
	if opts.MaxAlerts <= 0 {
		opts.MaxAlerts = DefaultMaxAlerts
	}
	if opts.MaxRules > rules.MaxRules {
		return nil, fmt.Errorf("redisstore: MaxRules %d is over the limit of %d", opts.MaxRules, rules.MaxRules)
	}
	if opts.MaxRules <= 0 {
		opts.MaxRules = rules.MaxRules
	}
	if opts.ReplicaWait == 0 {
		opts.ReplicaWait = DefaultReplicaWait
	}
	if opts.MaxTokens <= 0 {
		opts.MaxTokens = store.MaxTokens
	}
	var layout *shardLayout
	if _, cluster := client.(*redis.ClusterClient); opts.Shards != 0 || !cluster {
		tags, err := shardTags(opts.Prefix, max(opts.Shards, 1))
		if err != nil {
			return nil, err
		}
		layout = newLayout(tags)
	}
	tag := "{" + opts.Prefix + "}"
	s := &Store{
		client:      client,
		now:         opts.Now,
		maxEvents:   opts.MaxEvents,
		maxAlerts:   opts.MaxAlerts,
		maxRules:    opts.MaxRules,
		maxTokens:   opts.MaxTokens,
		wait:        opts.ReplicaWait,
		edit:        redis.NewScript(editLua),
		batch:       redis.NewScript(batchLua),
		ledger:      redis.NewScript(ledgerLua),
		keysCAS:     redis.NewScript(keysCASLua),
		budgetEdit:  redis.NewScript(budgetLua),
		alert:       redis.NewScript(alertLua),
		states:      redis.NewScript(statesLua),
		tokenScript: redis.NewScript(tokenLua),
		tag:         tag,
		rulesKey:    tag + ":rules",
		versionKey:  tag + ":rules:version",
		eventsKey:   tag + ":rules:events",
		channel:     tag + ":changes",
	}
	s.layout.Store(layout)
	if err := s.seed(ctx); err != nil && !errors.Is(err, store.ErrUnavailable) {
		return nil, err
	}
	return s, nil
}

// callTTL is how long a call's key says the call was applied: longer than
// go-redis's retries of one call, and the window in which a caller may send
// a report batch again under its Key.
const callTTL = store.KeyWindow

// callKey names one call of a script that changes something, so that the
// same call sent twice applies once: by id, or by 128 random bits, which no
// two calls share.
func (s *Store) callKey(id string) string { return callKeyIn(s.tag, id) }

// callKeyIn is callKey under another hash tag.
func callKeyIn(tag, id string) string {
	if id == "" {
		id = fmt.Sprintf("%016x%016x", rand.Uint64(), rand.Uint64())
	}
	return tag + ":call:" + id
}

// ruleEventsKey is the audit stream of one rule.
func (s *Store) ruleEventsKey(name string) string { return s.eventsKey + ":" + name }

// seed creates the Default rule if it is absent.
func (s *Store) seed(ctx context.Context) error {
	d := rules.Default()
	now := record.Timestamp(s.now())
	d.Revision, d.CreateTime, d.UpdateTime = 1, now, now
	b, err := record.MarshalRuleForScript(&d)
	if err != nil {
		return err
	}
	// Not waited for: a lost seed is seeded again by the next Snapshot,
	// and a replica slow to confirm must not stop a replica starting.
	res, err := s.runEdit(ctx, editArgs{op: store.ActionCreate, name: d.Name, rule: b, actor: systemActor, time: now, noWait: true})
	if err != nil {
		return fmt.Errorf("seed the Default rule: %w", err)
	}
	if res.status != statusOK && res.status != statusExists {
		return fmt.Errorf("seed the Default rule: unexpected status %d", res.status)
	}
	return nil
}

// Snapshot returns every rule in matching order with the version they were
// read at, both read in one transaction.
func (s *Store) Snapshot(ctx context.Context) (store.Snapshot, error) {
	if s.closed.Load() {
		return store.Snapshot{}, errClosed
	}
	snap, err := s.snapshot(ctx)
	if err != nil {
		return store.Snapshot{}, err
	}
	if !hasDefault(snap.Rules) {
		// Redis lost its data (a restart without persistence, a failover to
		// an empty replica): put the Default rule back rather than serve a
		// rule set that does not match every request.
		if err := s.seed(ctx); err != nil {
			return store.Snapshot{}, fmt.Errorf("snapshot: %w", err)
		}
		return s.snapshot(ctx)
	}
	return snap, nil
}

func (s *Store) snapshot(ctx context.Context) (store.Snapshot, error) {
	var all *redis.MapStringStringCmd
	var ver *redis.StringCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		all = p.HGetAll(ctx, s.rulesKey)
		ver = p.Get(ctx, s.versionKey)
		return nil
	})
	if err != nil && !(errors.Is(err, redis.Nil) && all.Err() == nil) {
		return store.Snapshot{}, unavailable("snapshot", err)
	}
	version, err := parseVersion(ver)
	if err != nil {
		return store.Snapshot{}, fmt.Errorf("snapshot: %w", err)
	}
	snap := store.Snapshot{Rules: make([]rules.Rule, 0, len(all.Val())), Version: version}
	for name, b := range all.Val() {
		r, err := record.UnmarshalRule([]byte(b))
		if err != nil {
			return store.Snapshot{}, fmt.Errorf("snapshot: rule %q: %w", name, err)
		}
		snap.Rules = append(snap.Rules, r)
	}
	rules.Sort(snap.Rules)
	return snap, nil
}

func hasDefault(rs []rules.Rule) bool {
	for i := range rs {
		if rs[i].IsDefault() {
			return true
		}
	}
	return false
}

// Rule returns the rule called name or an error wrapping store.ErrNotFound.
func (s *Store) Rule(ctx context.Context, name string) (rules.Rule, error) {
	if s.closed.Load() {
		return rules.Rule{}, errClosed
	}
	r, _, err := s.read(ctx, name)
	if err != nil {
		return rules.Rule{}, fmt.Errorf("rule %q: %w", name, err)
	}
	return r, nil
}

// read returns a rule and its stored JSON.
func (s *Store) read(ctx context.Context, name string) (rules.Rule, string, error) {
	b, err := s.client.HGet(ctx, s.rulesKey, name).Result()
	if errors.Is(err, redis.Nil) {
		return rules.Rule{}, "", store.ErrNotFound
	}
	if err != nil {
		return rules.Rule{}, "", unavailable("read", err)
	}
	r, err := record.UnmarshalRule([]byte(b))
	if err != nil {
		return rules.Rule{}, "", err
	}
	return r, b, nil
}

// CreateRule stores r at revision 1.
func (s *Store) CreateRule(ctx context.Context, r rules.Rule, actor string) (rules.Rule, error) {
	if s.closed.Load() {
		return rules.Rule{}, errClosed
	}
	now := record.Timestamp(s.now())
	r = r.Clone()
	r.Revision, r.CreateTime, r.UpdateTime = 1, now, now
	b, err := record.MarshalRuleForScript(&r)
	if err != nil {
		return rules.Rule{}, err
	}
	res, err := s.runEdit(ctx, editArgs{op: store.ActionCreate, name: r.Name, rule: b, actor: actor, time: now, maxRules: s.maxRules})
	if err != nil {
		return rules.Rule{}, fmt.Errorf("create rule %q: %w", r.Name, err)
	}
	switch res.status {
	case statusOK:
		r.RulesVersion = res.version
		return r, nil
	case statusExists:
		return rules.Rule{}, fmt.Errorf("create rule %q: %w", r.Name, store.ErrAlreadyExists)
	case statusLimit:
		return rules.Rule{}, fmt.Errorf("create rule %q: %w (at most %d rules, the Default rule included)", r.Name, store.ErrRuleLimit, s.maxRules)
	}
	return rules.Rule{}, fmt.Errorf("create rule %q: unexpected status %d", r.Name, res.status)
}

// UpdateRule replaces the rule called r.Name if it is at ifRevision. It reads
// the rule first to keep its create time; the script then checks that the
// rule is still what was read.
func (s *Store) UpdateRule(ctx context.Context, r rules.Rule, ifRevision int64, actor string) (rules.Rule, error) {
	if s.closed.Load() {
		return rules.Rule{}, errClosed
	}
	for range updateAttempts {
		cur, curJSON, err := s.read(ctx, r.Name)
		if err != nil {
			return rules.Rule{}, fmt.Errorf("update rule %q: %w", r.Name, err)
		}
		if cur.Revision != ifRevision {
			return rules.Rule{}, conflict("update", r.Name, ifRevision, cur.Revision)
		}
		now := record.Timestamp(s.now())
		next := r.Clone()
		next.Revision, next.CreateTime, next.UpdateTime = cur.Revision+1, cur.CreateTime, now
		b, err := record.MarshalRuleForScript(&next)
		if err != nil {
			return rules.Rule{}, err
		}
		res, err := s.runEdit(ctx, editArgs{
			op: store.ActionUpdate, name: r.Name, rule: b, read: curJSON,
			ifRevision: ifRevision, actor: actor, time: now,
		})
		if err != nil {
			return rules.Rule{}, fmt.Errorf("update rule %q: %w", r.Name, err)
		}
		switch res.status {
		case statusOK:
			next.RulesVersion = res.version
			return next, nil
		case statusNotFound:
			return rules.Rule{}, fmt.Errorf("update rule %q: %w", r.Name, store.ErrNotFound)
		case statusConflict:
			return rules.Rule{}, fmt.Errorf("update rule %q at revision %d: %w", r.Name, ifRevision, store.ErrConflict)
		case statusChanged:
			continue
		default:
			return rules.Rule{}, fmt.Errorf("update rule %q: unexpected status %d", r.Name, res.status)
		}
	}
	return rules.Rule{}, fmt.Errorf("update rule %q at revision %d: %w (replaced while updating)",
		r.Name, ifRevision, store.ErrConflict)
}

// DeleteRule removes the rule called name if it is at ifRevision, or at any
// revision if ifRevision is 0. The Default rule cannot be deleted.
func (s *Store) DeleteRule(ctx context.Context, name string, ifRevision int64, actor string) error {
	if name == rules.DefaultName {
		return fmt.Errorf("delete rule %q: %w", name, rules.ErrDefaultRule)
	}
	if s.closed.Load() {
		return errClosed
	}
	res, err := s.runEdit(ctx, editArgs{
		op: store.ActionDelete, name: name, ifRevision: ifRevision, actor: actor, time: record.Timestamp(s.now()),
	})
	if err != nil {
		return fmt.Errorf("delete rule %q: %w", name, err)
	}
	switch res.status {
	case statusOK:
		return nil
	case statusNotFound:
		return fmt.Errorf("delete rule %q: %w", name, store.ErrNotFound)
	case statusConflict:
		return fmt.Errorf("delete rule %q at revision %d: %w", name, ifRevision, store.ErrConflict)
	}
	return fmt.Errorf("delete rule %q: unexpected status %d", name, res.status)
}

func conflict(op, name string, ifRevision, revision int64) error {
	return fmt.Errorf("%s rule %q at revision %d: %w (it is at %d)", op, name, ifRevision, store.ErrConflict, revision)
}

// editArgs are the arguments of edit.lua.
type editArgs struct {
	op         store.Action
	name       string
	rule       []byte // the new rule; create and update
	read       string // the stored rule as read; update
	ifRevision int64
	actor      string
	time       time.Time
	maxRules   int  // create: the limit; 0 for none (the Default rule's seed)
	noWait     bool // acknowledged without waiting for replicas
}

type editResult struct {
	status  int64
	version int64
	id      string
}

func (s *Store) runEdit(ctx context.Context, a editArgs) (editResult, error) {
	call := s.callKey("")
	keys := []string{s.rulesKey, s.versionKey, s.eventsKey, s.ruleEventsKey(a.name), call}
	v, err := s.edit.Run(ctx, s.client, keys,
		a.op.String(), a.name, a.rule, a.read, a.ifRevision, a.actor,
		a.time.Format(time.RFC3339Nano), s.maxEvents, s.channel, callTTL.Milliseconds(), a.maxRules,
		store.FirstVersion(a.time),
	).Slice()
	if err != nil {
		return editResult{}, unavailable("run edit script", err)
	}
	var res editResult
	var ok bool
	if len(v) < 1 {
		return editResult{}, fmt.Errorf("edit script returned %v", v)
	}
	if res.status, ok = v[0].(int64); !ok {
		return editResult{}, fmt.Errorf("edit script returned %v", v)
	}
	if res.status == statusOK {
		if len(v) != 3 {
			return editResult{}, fmt.Errorf("edit script returned %v", v)
		}
		res.version, _ = v[1].(int64)
		res.id, _ = v[2].(string)
		if !a.noWait {
			if err := s.replicated(ctx, call); err != nil {
				return editResult{}, err
			}
		}
	}
	return res, nil
}

// RuleEvents lists the audit log newest first, optionally for one rule.
// pageSize 0 means 100; at most 1000 are returned. Page tokens hold the ID
// of the last entry returned, so entries added meanwhile are not listed twice.
func (s *Store) RuleEvents(ctx context.Context, ruleName string, pageSize int, pageToken string) (store.EventPage, error) {
	if s.closed.Load() {
		return store.EventPage{}, errClosed
	}
	size, err := record.PageSize(pageSize)
	if err != nil {
		return store.EventPage{}, fmt.Errorf("list rule events: %w", err)
	}
	newest := "+"
	if pageToken != "" {
		id, err := decodeToken(tokenPrefix, pageToken)
		if err != nil {
			return store.EventPage{}, fmt.Errorf("list rule events: %w", err)
		}
		newest = "(" + id
	}
	key := s.eventsKey
	if ruleName != "" {
		key = s.ruleEventsKey(ruleName)
	}
	msgs, err := s.client.XRevRangeN(ctx, key, newest, "-", int64(size)+1).Result()
	if err != nil {
		return store.EventPage{}, unavailable("list rule events", err)
	}
	var page store.EventPage
	if len(msgs) > size {
		msgs = msgs[:size]
		page.NextToken = encodeToken(tokenPrefix, msgs[size-1].ID)
	}
	page.Events = make([]store.Event, len(msgs))
	for i, m := range msgs {
		if page.Events[i], err = decodeEvent(m); err != nil {
			return store.EventPage{}, fmt.Errorf("list rule events: entry %s: %w", m.ID, err)
		}
	}
	if page.NextToken == "" {
		if page.Trimmed, err = s.trimmed(ctx, key); err != nil {
			return store.EventPage{}, err
		}
	}
	return page, nil
}

// trimmed says whether the audit stream key lost entries to its MAXLEN:
// whether Redis counts more entries added to it than it holds (XINFO
// STREAM, Redis 7). Nothing else deletes audit entries. Before Redis 7,
// which does not count them, it says false.
func (s *Store) trimmed(ctx context.Context, key string) (bool, error) {
	info, err := s.client.XInfoStream(ctx, key).Result()
	switch {
	case err != nil && strings.Contains(err.Error(), "no such key"):
		return false, nil // never written
	case err != nil:
		return false, unavailable("list rule events", err)
	}
	return info.EntriesAdded > info.Length, nil
}

func decodeEvent(m redis.XMessage) (store.Event, error) {
	field := func(name string) string {
		v, _ := m.Values[name].(string)
		return v
	}
	ev := store.Event{ID: m.ID, RuleName: field("rule"), Actor: field("actor"), Message: field("message")}
	var err error
	if ev.Action, err = record.ParseAction(field("action")); err != nil {
		return store.Event{}, err
	}
	if ev.Time, err = time.Parse(time.RFC3339Nano, field("time")); err != nil {
		return store.Event{}, fmt.Errorf("time: %w", err)
	}
	if ev.RulesVersion, err = strconv.ParseInt(field("version"), 10, 64); err != nil {
		return store.Event{}, fmt.Errorf("version: %w", err)
	}
	for _, f := range []struct {
		name string
		dst  **rules.Rule
	}{{"before", &ev.Before}, {"after", &ev.After}} {
		b := field(f.name)
		if b == "" {
			continue
		}
		r, err := record.UnmarshalRule([]byte(b))
		if err != nil {
			return store.Event{}, fmt.Errorf("%s: %w", f.name, err)
		}
		*f.dst = &r
	}
	return ev, nil
}

// tokenPrefix marks redisstore page tokens of the audit log, so that a token
// of another listing is rejected rather than misread.
const tokenPrefix = "redis1:"

// encodeToken returns the page token, in the listing whose tokens start with
// prefix, that lists the stream entries older than id.
func encodeToken(prefix, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(prefix + id))
}

// decodeToken returns the stream entry ID a page token holds, checked to be
// one, since it goes into a Redis command.
func decodeToken(prefix, token string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return "", record.InvalidPageToken()
	}
	id, ok := strings.CutPrefix(string(b), prefix)
	if !ok {
		return "", record.InvalidPageToken()
	}
	ms, seq, ok := strings.Cut(id, "-")
	if !ok {
		return "", record.InvalidPageToken()
	}
	if _, err := strconv.ParseUint(ms, 10, 64); err != nil {
		return "", record.InvalidPageToken()
	}
	if _, err := strconv.ParseUint(seq, 10, 64); err != nil {
		return "", record.InvalidPageToken()
	}
	return id, nil
}

// RulesVersion returns the rules version.
func (s *Store) RulesVersion(ctx context.Context) (int64, error) {
	if s.closed.Load() {
		return 0, errClosed
	}
	v, err := parseVersion(s.client.Get(ctx, s.versionKey))
	if err != nil {
		return 0, fmt.Errorf("rules version: %w", err)
	}
	return v, nil
}

// parseVersion reads a GET of the version key; a missing key is version 0.
func parseVersion(cmd *redis.StringCmd) (int64, error) {
	v, err := cmd.Int64()
	switch {
	case errors.Is(err, redis.Nil):
		return 0, nil
	case err != nil && cmd.Err() != nil:
		return 0, unavailable("read version", err)
	case err != nil:
		return 0, fmt.Errorf("malformed version %q: %w", cmd.Val(), err)
	}
	return v, nil
}

// WatchChanges subscribes to the change channel and calls notify for every
// topic once per (re)subscription and once per message, until ctx ends. Redis going away
// does not end it: it subscribes again with backoff, and the new
// subscription's notify covers any messages missed meanwhile.
func (s *Store) WatchChanges(ctx context.Context, notify func(store.Topic)) error {
	if s.closed.Load() {
		return errClosed
	}
	backoff := watchMinBackoff
	for {
		subscribed := s.watch(ctx, notify)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if subscribed {
			backoff = watchMinBackoff
		}
		// Jitter spreads the replicas' reconnects after a Redis restart.
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, watchMaxBackoff)
	}
}

// watch runs one subscription until it fails or ctx ends, and reports
// whether it got as far as subscribing. A Receive timeout is how a quiet
// subscription notices a dead connection: it is pinged, and replaced if the
// ping goes unanswered too.
func (s *Store) watch(ctx context.Context, notify func(store.Topic)) (subscribed bool) {
	ps := s.client.Subscribe(ctx, s.channel)
	defer ps.Close()
	// Receive does not watch ctx without a deadline; closing the PubSub
	// unblocks it.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()

	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, watchPingInterval)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() || pinged || ctx.Err() != nil {
				return subscribed
			}
			if err := ps.Ping(ctx); err != nil {
				return subscribed
			}
			pinged = true
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				subscribed = true
				// Anything may have changed while unsubscribed.
				for _, topic := range topics {
					notify(topic)
				}
			}
		case *redis.Message:
			notify(store.Topic(m.Payload))
		}
	}
}

// topics is every topic, in the order WatchChanges announces them on
// subscribing.
var topics = [...]store.Topic{store.TopicRules, store.TopicBudgets, store.TopicAlerts, store.TopicTokens}

// Ping sends PING.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return errClosed
	}
	if err := s.client.Ping(ctx).Err(); err != nil {
		return unavailable("ping", err)
	}
	return nil
}

// Close makes every later call fail with store.ErrUnavailable. It does not
// close the client, which the caller owns and may share. It is safe to call
// more than once.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}

// unavailable wraps an error from Redis: callers match store.ErrUnavailable,
// logs keep Redis's own message, and context errors stay visible. An error
// from before anything was sent also matches store.ErrNotApplied.
func unavailable(op string, err error) error {
	if notSent(err) {
		return fmt.Errorf("redis: %s: %w: %w: %w", op, store.ErrUnavailable, store.ErrNotApplied, err)
	}
	return fmt.Errorf("redis: %s: %w: %w", op, store.ErrUnavailable, err)
}

// notSent reports whether err says that the command never reached Redis:
// no connection could be made, or none was free in the pool. After a read
// timeout or a dropped connection it may have run.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial" || errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed)
}

// Persistence is what the Redis behind a store keeps on disk, as far as it
// could be read. Rules, budgets, spend and alerts live only in Redis: one
// that persists nothing loses them all when it restarts.
type Persistence struct {
	// Known is false when Redis refused CONFIG GET (managed services often
	// disable it) and INFO did not show the append-only file on: nothing
	// more can be said.
	Known bool
	// AppendOnly: the append-only file is on (appendonly yes).
	AppendOnly bool
	// Save is the RDB snapshot schedule ("3600 1 300 100"), empty for none.
	Save string
}

// None reports whether Redis is known to persist nothing.
func (p Persistence) None() bool { return p.Known && !p.AppendOnly && p.Save == "" }

// Persistence reads Redis's persistence settings with CONFIG GET, or, where
// CONFIG is refused, whether the append-only file is on from INFO
// persistence. The error wraps store.ErrUnavailable if Redis cannot be
// reached.
func (s *Store) Persistence(ctx context.Context) (Persistence, error) {
	if s.closed.Load() {
		return Persistence{}, errClosed
	}
	cfg, err := s.client.ConfigGet(ctx, "appendonly").Result()
	if err == nil {
		var save map[string]string
		if save, err = s.client.ConfigGet(ctx, "save").Result(); err == nil {
			return Persistence{Known: true, AppendOnly: cfg["appendonly"] == "yes", Save: save["save"]}, nil
		}
	}
	var refused redis.Error
	if !errors.As(err, &refused) {
		return Persistence{}, unavailable("config get", err)
	}
	info, err := s.client.Info(ctx, "persistence").Result()
	if errors.As(err, &refused) {
		return Persistence{}, nil
	}
	if err != nil {
		return Persistence{}, unavailable("info persistence", err)
	}
	if strings.Contains(info, "aof_enabled:1") {
		return Persistence{Known: true, AppendOnly: true}, nil
	}
	return Persistence{}, nil
}
