package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/internal/record"
)

// Laying the shards out again on a grown Cluster (docs/SHARDING.md,
// "Growing a Cluster"). The shard list has a generation; each shard has a
// fence, the lowest generation whose batches its script takes. A reshard,
// by one replica at a time (a lock beside the list, in its slot):
//
//  1. fences every shard of the current generation N at N+1: from then on
//     no batch laid out by N changes anything in them (a replica that sends
//     one is told, reads the list again and waits for N+1);
//  2. copies what the new layout must find where it now looks: the ledger
//     of every rule whose shard changes, and the seqs of every client whose
//     shard changes (the old shards are fenced, so nothing moves under the
//     copy, and no replica writes the new shards before step 3);
//  3. replaces the list by generation N+1, with N's tags kept as a past
//     generation, by a compare-and-set on the list as read, only while it
//     holds the lock.
//
// A month's usage is not copied: Usage adds the parts of every generation's
// shards until the month is past its retention. Numbered reports stay
// billed once (their seqs follow their client), the ledgers keep their
// rates and quotas outstanding. What is not exact: a batch in flight at the
// fence that lands in some old shards before it and is refused by others
// fails as a partial batch does (store.ErrUnavailable); sent again under
// its Key it is laid out by N+1, whose call keys are not N's, so its
// unnumbered usage and rates count again in the parts that had landed.

// reshardLockTTL is how long a reshard's lock lasts unless renewed: a
// replica that dies in the middle leaves the shards fenced, and the next
// reshard, after this, finishes the job.
const reshardLockTTL = 30 * time.Second

// fenceKeyIn is a shard's fence: the lowest generation of the shard list
// whose batches ledger.lua takes there.
func fenceKeyIn(tag string) string { return tag + ":fence" }

func (s *Store) reshardLockKey() string { return s.shardsKey() + ":lock" }

// raiseLua sets KEYS[1] to ARGV[1] unless it holds a larger number.
const raiseLua = `
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1`

// seqMergeLua merges seqs into the hash KEYS[1]: ARGV[1] the TTL in ms
// the hash keeps at least, then pairs of client and seq; each client's
// seq becomes the larger of the two.
const seqMergeLua = `
for i = 2, #ARGV, 2 do
  local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if cur < tonumber(ARGV[i + 1]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
local ttl = tonumber(ARGV[1])
if ttl > 0 and redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1`

// publishLua replaces the list (KEYS[1]) by ARGV[3] if it still is ARGV[1]
// and the lock (KEYS[2]) is still ARGV[2]'s, and drops the lock.
const publishLua = `
if redis.call('GET', KEYS[2]) ~= ARGV[2] or redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[2])
return 1`

// renewLua extends the lock KEYS[1] by ARGV[2] ms if it is ARGV[1]'s.
const renewLua = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`

// ErrReshardBusy says that another replica is laying the shards out.
var ErrReshardBusy = errors.New("another reshard is under way")

// Reshard is what a reshard did.
type Reshard struct {
	// From and To are the list's generations before and after; equal if
	// nothing was done (every master already held a shard).
	From, To int64
	// Tags are the new generation's, in order.
	Tags []string
	// Ledgers and Seqs are how many rule ledgers and client seqs were
	// copied to their new shards.
	Ledgers, Seqs int
	// Fenced is how long the report path was fenced: from the fence to
	// the new list.
	Fenced time.Duration
}

// Reshard lays the report path's shards out again over the Cluster's
// masters, one per master, if some master holds none or a reshard stopped
// half way (Coverage.Stuck), or if force,
// while replicas run (see above). Any replica may call it, as often as it
// likes: one at a time does the work, the others get ErrReshardBusy, and
// one that finds every master holding a shard does nothing. Not for a
// single node, Sentinel or a store of Options.Shards.
func (s *Store) Reshard(ctx context.Context, force bool) (Reshard, error) {
	if s.closed.Load() {
		return Reshard{}, errClosed
	}
	if _, ok := s.client.(*redis.ClusterClient); !ok {
		return Reshard{}, fmt.Errorf("reshard: %w: not a Redis Cluster: one shard", store.ErrNotApplied)
	}
	cov, err := s.ShardCoverage(ctx) // reads the list afresh
	if err != nil {
		return Reshard{}, fmt.Errorf("reshard: %w", err)
	}
	old := s.layout.Load()
	if old.raw == "" {
		return Reshard{}, fmt.Errorf("reshard: %w: the store's shards are fixed by Options.Shards", store.ErrNotApplied)
	}
	if len(cov.Unsharded) == 0 && !cov.Stuck && !force {
		return Reshard{From: old.gen, To: old.gen, Tags: old.tags}, nil
	}
	if err := s.slotsSettled(ctx); err != nil {
		return Reshard{}, fmt.Errorf("reshard: %w", err)
	}
	token := strconv.FormatUint(rand.Uint64(), 36)
	ok, err := s.client.SetNX(ctx, s.reshardLockKey(), token, reshardLockTTL).Result()
	if err != nil {
		return Reshard{}, unavailable("reshard: lock", err)
	}
	if !ok {
		return Reshard{}, fmt.Errorf("reshard: %w", ErrReshardBusy)
	}
	res, err := s.reshard(ctx, old, token)
	if err != nil {
		// Leave the lock to its TTL if the work stopped half way: the
		// shards stay fenced, and the next reshard finishes.
		return res, fmt.Errorf("reshard: %w", err)
	}
	return res, nil
}

func (s *Store) reshard(ctx context.Context, old *shardLayout, token string) (Reshard, error) {
	prefix := strings.Trim(s.tag, "{}")
	tags, err := clusterTags(ctx, s.client, prefix)
	if err != nil {
		return Reshard{}, err
	}
	if tags[servicesShard] != old.tags[servicesShard] {
		// The fleet's services pairs and their seqs stay in one hash.
		return Reshard{}, fmt.Errorf("%w: the first shard would move from %s to %s", store.ErrNotApplied, old.tags[servicesShard], tags[servicesShard])
	}
	now := time.Now()
	past := []pastShards{{Generation: old.gen, Tags: old.tags, Until: now.UnixMilli()}}
	for _, p := range old.past {
		if time.UnixMilli(p.Until).Add(record.UsageRetention).After(now) {
			past = append(past, p)
		}
	}
	if len(past) > MaxPastGenerations {
		return Reshard{}, fmt.Errorf("%w: %d generations still hold months of usage, at most %d", store.ErrNotApplied, len(past)-1, MaxPastGenerations)
	}
	next := shardList{Generation: old.gen + 1, Tags: tags, Past: past}
	raw, err := json.Marshal(next)
	if err != nil {
		return Reshard{}, err
	}
	nl := newLayout(tags)
	res := Reshard{From: old.gen, To: next.Generation, Tags: tags}

	// 1. Fence.
	fencedAt := time.Now()
	if err := s.eachTag(ctx, old.tags, func(p redis.Pipeliner, tag string) {
		p.Eval(ctx, raiseLua, []string{fenceKeyIn(tag)}, next.Generation)
	}); err != nil {
		return res, unavailable("fence the shards", err)
	}
	// Fence the new generation's tags at it too: a tag of a generation
	// before N fenced lower would otherwise take a stale replica's batch.
	if err := s.eachTag(ctx, tags, func(p redis.Pipeliner, tag string) {
		p.Eval(ctx, raiseLua, []string{fenceKeyIn(tag)}, next.Generation)
	}); err != nil {
		return res, unavailable("fence the shards", err)
	}

	// 2. Copy the ledgers and seqs whose shard changes.
	if err := s.renewLock(ctx, token); err != nil {
		return res, err
	}
	if res.Ledgers, err = s.moveLedgers(ctx, old, nl); err != nil {
		return res, err
	}
	if err := s.renewLock(ctx, token); err != nil {
		return res, err
	}
	if res.Seqs, err = s.moveSeqs(ctx, old, nl, now); err != nil {
		return res, err
	}

	// 3. Publish.
	done, err := redis.NewScript(publishLua).Run(ctx, s.client,
		[]string{s.shardsKey(), s.reshardLockKey()}, old.raw, token, raw).Int()
	if err != nil {
		return res, unavailable("replace the shard list", err)
	}
	if done != 1 {
		return res, fmt.Errorf("%w: the shard list or the lock changed meanwhile", ErrReshardBusy)
	}
	res.Fenced = time.Since(fencedAt)
	if _, err := s.reloadLayout(ctx, old); err != nil {
		return res, err
	}
	return res, nil
}

// fencedAbove reports whether a shard of lay is fenced above its
// generation (one GET per shard, in one pipeline).
func (s *Store) fencedAbove(ctx context.Context, lay *shardLayout) (bool, error) {
	if lay.raw == "" {
		return false, nil
	}
	cmds := make([]*redis.StringCmd, len(lay.tags))
	if _, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, tag := range lay.tags {
			cmds[i] = p.Get(ctx, fenceKeyIn(tag))
		}
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return false, unavailable("read the shards' fences", err)
	}
	for _, c := range cmds {
		if f, err := c.Int64(); err == nil && f > lay.gen {
			return true, nil
		}
	}
	return false, nil
}

// renewLock extends the reshard's lock, or says it was lost.
func (s *Store) renewLock(ctx context.Context, token string) error {
	ok, err := redis.NewScript(renewLua).Run(ctx, s.client, []string{s.reshardLockKey()}, token, reshardLockTTL.Milliseconds()).Int()
	if err != nil {
		return unavailable("renew the reshard lock", err)
	}
	if ok != 1 {
		return fmt.Errorf("%w: the lock expired", ErrReshardBusy)
	}
	return nil
}

// eachTag runs one pipeline of a command per tag.
func (s *Store) eachTag(ctx context.Context, tags []string, cmd func(p redis.Pipeliner, tag string)) error {
	cmds, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, t := range tags {
			cmd(p, t)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range cmds {
		if c.Err() != nil {
			return c.Err()
		}
	}
	return nil
}

// scanMasters returns the keys that match pattern on every master.
func (s *Store) scanMasters(ctx context.Context, pattern string) ([]string, error) {
	cc := s.client.(*redis.ClusterClient)
	var keys [][]string
	var mu sync.Mutex
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		var mine []string
		it := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for it.Next(ctx) {
			mine = append(mine, it.Val())
		}
		if err := it.Err(); err != nil {
			return err
		}
		mu.Lock()
		keys = append(keys, mine)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, unavailable("scan the masters", err)
	}
	return slices.Concat(keys...), nil
}

// slotsSettled says ErrReshardBusy while a master migrates or imports a
// slot (CLUSTER NODES marks it on its own line): a shard laid out on a
// slot that is moving would be on the wrong master once it moved. A
// reshard between two slots of a rebalance is safe, but may have to be
// done again when it ends.
func (s *Store) slotsSettled(ctx context.Context) error {
	cc := s.client.(*redis.ClusterClient)
	return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		nodes, err := c.ClusterNodes(ctx).Result()
		if err != nil {
			return unavailable("read the cluster's nodes", err)
		}
		for _, line := range strings.Split(nodes, "\n") {
			if strings.Contains(line, "myself") && (strings.Contains(line, "->-") || strings.Contains(line, "-<-")) {
				return fmt.Errorf("%w: slots are moving between masters (%s)", ErrReshardBusy, strings.Fields(line)[1])
			}
		}
		return nil
	})
}

// globEscape escapes the characters SCAN's MATCH gives a meaning.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// moveLedgers copies each rule's ledger from its shard in old to its shard
// in nl where they differ (DUMP and RESTORE, with its TTL). It counts only
// the keys of the shard the rule has in old: a copy left behind by an
// earlier reshard is stale.
func (s *Store) moveLedgers(ctx context.Context, old, nl *shardLayout) (int, error) {
	type move struct{ from, to string }
	var moves []move
	for i, tag := range old.tags {
		keys, err := s.scanMasters(ctx, globEscape(tag)+":ledger:*")
		if err != nil {
			return 0, err
		}
		for _, k := range keys {
			rule := strings.TrimPrefix(k, tag+":ledger:")
			if old.of(rule) != i {
				continue
			}
			if to := nl.tags[nl.of(rule)]; to != tag {
				moves = append(moves, move{k, to + ":ledger:" + rule})
			}
		}
	}
	const chunk = 500
	for c := range slices.Chunk(moves, chunk) {
		dumps := make([]*redis.StringCmd, len(c))
		ttls := make([]*redis.DurationCmd, len(c))
		if _, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, m := range c {
				dumps[i], ttls[i] = p.Dump(ctx, m.from), p.PTTL(ctx, m.from)
			}
			return nil
		}); err != nil && !errors.Is(err, redis.Nil) {
			return 0, unavailable("read the ledgers", err)
		}
		if _, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, m := range c {
				if dumps[i].Err() != nil {
					continue // gone meanwhile (expired)
				}
				ttl := ttls[i].Val()
				if ttl < 0 {
					ttl = 0
				}
				p.RestoreReplace(ctx, m.to, ttl, dumps[i].Val())
			}
			return nil
		}); err != nil {
			return 0, unavailable("copy the ledgers", err)
		}
	}
	return len(moves), nil
}

// moveSeqs merges each client's recorded seq from its shard in old into
// its shard in nl where they differ, span by span, for the spans a replica
// may read now (seqsKeyIn).
func (s *Store) moveSeqs(ctx context.Context, old, nl *shardLayout, now time.Time) (int, error) {
	w := now.UnixMilli() / seqSpan.Milliseconds()
	spans := []int64{w - 2, w - 1, w, w + 1}
	type src struct {
		shard int
		span  int64
		all   *redis.MapStringStringCmd
		ttl   *redis.DurationCmd
	}
	var srcs []*src
	if _, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, tag := range old.tags {
			for _, sp := range spans {
				k := seqsKeyIn(tag, sp)
				srcs = append(srcs, &src{shard: i, span: sp, all: p.HGetAll(ctx, k), ttl: p.PTTL(ctx, k)})
			}
		}
		return nil
	}); err != nil {
		return 0, unavailable("read the seqs", err)
	}
	// Per destination key: its pairs and the TTL it keeps at least.
	type dest struct {
		args []any
		ttl  time.Duration
	}
	dests := map[string]*dest{}
	n := 0
	for _, sr := range srcs {
		for client, seq := range sr.all.Val() {
			// The first shard also keeps the seqs of the services pairs
			// of every client: only a client's own shard's count.
			if old.of(client) != sr.shard {
				continue
			}
			to := nl.tags[nl.of(client)]
			if to == old.tags[sr.shard] {
				continue
			}
			k := seqsKeyIn(to, sr.span)
			d := dests[k]
			if d == nil {
				d = &dest{args: []any{0}}
				dests[k] = d
			}
			d.args = append(d.args, client, seq)
			d.ttl = max(d.ttl, sr.ttl.Val())
			n++
		}
	}
	// A script call per 1000 clients of a key, so that no call is large.
	const chunk = 2 * 1000
	if _, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for k, d := range dests {
			ttl := max(d.ttl, 0).Milliseconds()
			for pairs := range slices.Chunk(d.args[1:], chunk) {
				p.Eval(ctx, seqMergeLua, []string{k}, append([]any{ttl}, pairs...)...)
			}
		}
		return nil
	}); err != nil {
		return 0, unavailable("copy the seqs", err)
	}
	return n, nil
}

// landed is the part of a batch that the shard list's previous generation
// applied: the batch failed in part across a reshard (some old shards took
// their part before the fence, others refused theirs after it) and is sent
// again under its Key, laid out by the new list, whose call keys are not
// the old ones. The old shards are fenced, so what they hold is final.
// Numbered reports need none of this: their seqs moved with them.
type landed struct {
	prev  *shardLayout
	parts map[int]bool // shards of prev that applied the batch
}

// rule reports whether the previous generation applied the batch's part
// of a rule: its ledger update and unnumbered usage.
func (l landed) rule(name string) bool { return l.parts != nil && l.parts[l.prev.of(name)] }

// services reports whether it applied the batch's unnumbered services
// pairs.
func (l landed) services() bool { return l.parts[servicesShard] }

// landedBefore finds, for a batch with a Key sent within store.KeyWindow
// of a reshard, which shards of the previous generation applied it: one
// EXISTS per old shard, in one pipeline.
func (s *Store) landedBefore(ctx context.Context, lay *shardLayout, b store.ReportBatch, now time.Time) (landed, error) {
	if b.Key == "" || lay.gen == 0 || len(lay.past) == 0 || lay.past[0].Generation != lay.gen-1 ||
		now.Sub(time.UnixMilli(lay.past[0].Until)) > store.KeyWindow+seqSkew {
		return landed{}, nil
	}
	prev := newLayout(lay.past[0].Tags)
	prev.gen = lay.gen - 1
	cmds := make([]*redis.IntCmd, len(prev.tags))
	if _, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, tag := range prev.tags {
			cmds[i] = p.Exists(ctx, callKeyIn(tag, callName(prev, b.Key)))
		}
		return nil
	}); err != nil {
		return landed{}, fmt.Errorf("record reports: %w", unavailable("read the previous shards' call keys", err))
	}
	l := landed{prev: prev}
	for i, c := range cmds {
		if c.Val() > 0 {
			if l.parts == nil {
				l.parts = map[int]bool{}
			}
			l.parts[i] = true
		}
	}
	return l, nil
}

// callName is the name of a batch's call key under a layout: its Key, and
// from generation 1 on the generation too, since a batch sent again after
// a reshard is laid out anew (its parts in the shards that the two layouts
// share are not the same parts).
func callName(lay *shardLayout, key string) string {
	if key == "" || lay.gen == 0 {
		return key
	}
	return "g" + strconv.FormatInt(lay.gen, 10) + ":" + key
}
