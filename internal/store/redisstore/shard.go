package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/store"
)

// Sharding (docs/SHARDING.md). Rules, budgets, alerts, tokens and the
// controller's keys are few and edited rarely: they stay in one slot, under
// the hash tag "{Prefix}", so that an edit is one script. The keys of the
// report path — each rule's ledger, the budgets' months of usage, the seqs of
// numbered reports and the report batches' call keys — are spread over
// shards, a hash tag each (one per master of a Cluster): a rule's ledger and
// its unnumbered usage in the tag of its shard, a numbered report's usage
// with its client's seq in the client's (a budget's month has one part per
// shard, summed on reading). A report batch runs one script per shard it
// touches, all in one pipeline, which a Cluster client sends to the masters
// in parallel; each script is atomic in its slot.

// Shard limits.
const (
	// MaxShards bounds Options.Shards and the shards of a Cluster: each
	// shard's tag is found by trying names until one hashes into the
	// slots wanted.
	MaxShards = 256
)

// clusterSlots is how many hash slots Redis Cluster has.
const clusterSlots = 16384

// shardLayout is the report path's hash tags, and what the store knows of
// the clock of the Redis behind each. Immutable but for the clocks.
type shardLayout struct {
	tags   []string
	clocks []redisClock // masters on different hosts differ
	// failing marks the shards whose last script did not answer (their
	// master down, failing over, or out of reach): a batch that touches
	// one sends its part there first, and the rest only once it answered
	// (Store.runGroups).
	failing []atomic.Bool
	// gen is the list's generation (reshard.go): each shard's script
	// refuses a batch of an older one once the shard is fenced. raw is the
	// list as read from Redis ("" for a layout of Options.Shards or one
	// node), to tell a newer one. past are the earlier generations' tags
	// whose months of usage Usage still adds up.
	gen  int64
	raw  string
	past []pastShards
}

func newLayout(tags []string) *shardLayout {
	return &shardLayout{tags: tags, clocks: make([]redisClock, len(tags)), failing: make([]atomic.Bool, len(tags))}
}

// usageTags are the tags whose parts of a month Usage adds up: the
// current generation's, then each earlier one's not already listed (a tag
// kept by a reshard holds one part, read once).
func (l *shardLayout) usageTags() []string {
	out := slices.Clone(l.tags)
	for _, p := range l.past {
		for _, t := range p.Tags {
			if !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	return out
}

// servicesTags are the tags of the fleet's services pairs, of every
// generation, each once.
func (l *shardLayout) servicesTags() []string {
	out := []string{l.tags[servicesShard]}
	for _, p := range l.past {
		if t := p.Tags[servicesShard]; !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// of is the shard of a rule's or a client's keys (FNV-1a of its name).
// Every replica computes the same.
func (l *shardLayout) of(name string) int {
	if len(l.tags) == 1 {
		return 0
	}
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	return int(h % uint32(len(l.tags)))
}

// servicesShard is the shard of the fleet's pairs of rule and service: one
// slot, so that their bound (store.MaxFleetPairs) is checked in one place.
// It is the first, which is the store's own tag where that is a shard's.
const servicesShard = 0

// legacy returns tag, the store's own, if it is not the first shard's:
// the releases before sharding kept the report path's keys there, and
// Usage reads it too, so that a store upgraded over their data keeps the
// budgets' months.
func (l *shardLayout) legacy(tag string) (string, bool) {
	return tag, l.tags[0] != tag
}

// shardLayout returns the store's layout. On a Cluster without
// Options.Shards it is read from Redis, where the first replica to start
// on the Cluster put it (clusterTags), and read again when a shard says it
// was laid out anew (reshard.go); until Redis answers, the report path
// fails with store.ErrUnavailable.
func (s *Store) shardLayout(ctx context.Context) (*shardLayout, error) {
	if l := s.layout.Load(); l != nil {
		return l, nil
	}
	return s.reloadLayout(ctx, nil)
}

// reloadLayout reads the shard list again if the store's layout is still
// stale (nil: none yet), and keeps the newer generation. A layout of
// Options.Shards or of one node is never read again.
func (s *Store) reloadLayout(ctx context.Context, stale *shardLayout) (*shardLayout, error) {
	s.layoutMu.Lock()
	defer s.layoutMu.Unlock()
	cur := s.layout.Load()
	if cur != nil && (cur != stale || cur.raw == "") {
		return cur, nil
	}
	list, raw, err := s.loadShardList(ctx)
	if err != nil {
		return nil, err
	}
	if cur != nil && (list.Generation < cur.gen || raw == cur.raw) {
		return cur, nil
	}
	l := newLayout(list.Tags)
	l.gen, l.raw, l.past = list.Generation, raw, list.Past
	s.layout.Store(l)
	return l, nil
}

// shardList is {prefix}:shards: the report path's tags and generation, and
// the earlier generations whose months of usage are still read. The first
// releases stored the tags alone, a JSON array: generation 0.
type shardList struct {
	Generation int64        `json:"generation"`
	Tags       []string     `json:"tags"`
	Past       []pastShards `json:"past,omitempty"`
}

// pastShards is an earlier generation of the list, kept until the months
// its shards counted are past their retention (Until + UsageRetention).
type pastShards struct {
	Generation int64    `json:"generation"`
	Tags       []string `json:"tags"`
	Until      int64    `json:"until"` // unix ms it was replaced
}

// MaxPastGenerations bounds the earlier generations a list keeps: each
// adds its shards' reads to Usage until its months expire, so a reshard
// beyond it is refused until the oldest ages out.
const MaxPastGenerations = 8

func (s *Store) shardsKey() string { return s.tag + ":shards" }

// parseShardList reads a list as stored, and checks that every tag is one
// of this store's: a list that is not is a store that cannot be used until
// someone mends it (nothing is sent, nothing is dropped).
func (s *Store) parseShardList(raw string) (shardList, error) {
	var list shardList
	var err error
	if strings.HasPrefix(strings.TrimSpace(raw), "[") {
		err = json.Unmarshal([]byte(raw), &list.Tags)
	} else {
		err = json.Unmarshal([]byte(raw), &list)
	}
	key := s.shardsKey()
	if err != nil || len(list.Tags) == 0 || len(list.Tags) > MaxShards || list.Generation < 0 || len(list.Past) > MaxPastGenerations {
		return shardList{}, fmt.Errorf("redis: %w: %w: %s holds %q, not a list of 1 to %d hash tags", store.ErrUnavailable, store.ErrNotApplied, key, raw, MaxShards)
	}
	all := slices.Clone(list.Tags)
	for _, p := range list.Past {
		if len(p.Tags) == 0 || len(p.Tags) > MaxShards {
			return shardList{}, fmt.Errorf("redis: %w: %w: %s holds %q, a generation of %d tags", store.ErrUnavailable, store.ErrNotApplied, key, raw, len(p.Tags))
		}
		all = append(all, p.Tags...)
	}
	for _, t := range all {
		if !strings.HasPrefix(t, "{"+strings.Trim(s.tag, "{}")) || !strings.HasSuffix(t, "}") {
			return shardList{}, fmt.Errorf("redis: %w: %w: %s holds the tag %q, not one of this store's", store.ErrUnavailable, store.ErrNotApplied, key, t)
		}
	}
	return list, nil
}

// loadShardList reads {prefix}:shards, or makes the list from the
// Cluster's masters and stores it if no replica did yet (SET NX: every
// replica ends with the first one's).
func (s *Store) loadShardList(ctx context.Context) (shardList, string, error) {
	key := s.shardsKey()
	raw, err := s.client.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		var tags []string
		if tags, err = clusterTags(ctx, s.client, strings.Trim(s.tag, "{}")); err != nil {
			return shardList{}, "", err
		}
		b, _ := json.Marshal(shardList{Tags: tags})
		if err = s.client.SetNX(ctx, key, b, 0).Err(); err == nil {
			raw, err = s.client.Get(ctx, key).Result()
		}
	}
	if err != nil {
		return shardList{}, "", unavailable("read the shards", err)
	}
	list, err := s.parseShardList(raw)
	return list, raw, err
}

// clusterTags makes one tag per master of the Cluster behind client (at
// most MaxShards), each in a slot the master serves: the store's own tag
// for the master that serves it, first, so that a store upgraded over the
// layout before sharding keeps that master's part of it; then, in the
// order of their first slots, the first of "{prefix:i.0}", "{prefix:i.1}",
// … in a slot of master i. The shards stay put if masters are added later
// (and move with their slots if slots are moved).
func clusterTags(ctx context.Context, client redis.UniversalClient, prefix string) ([]string, error) {
	slots, err := client.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, unavailable("read the cluster's slots", err)
	}
	type master struct {
		first  int
		ranges [][2]int
	}
	byID := map[string]*master{}
	var masters []*master
	for _, r := range slots {
		if len(r.Nodes) == 0 {
			continue
		}
		id := r.Nodes[0].ID + "@" + r.Nodes[0].Addr
		m := byID[id]
		if m == nil {
			m = &master{first: int(r.Start)}
			byID[id] = m
			masters = append(masters, m)
		}
		m.first = min(m.first, int(r.Start))
		m.ranges = append(m.ranges, [2]int{int(r.Start), int(r.End)})
	}
	if len(masters) == 0 {
		return nil, fmt.Errorf("redis: the cluster serves no slots")
	}
	serves := func(m *master, slot int) bool {
		for _, r := range m.ranges {
			if slot >= r[0] && slot <= r[1] {
				return true
			}
		}
		return false
	}
	own := keySlot(prefix)
	sort.Slice(masters, func(i, j int) bool {
		if oi, oj := serves(masters[i], own), serves(masters[j], own); oi != oj {
			return oi
		}
		return masters[i].first < masters[j].first
	})
	masters = masters[:min(len(masters), MaxShards)]
	tags := make([]string, len(masters))
	for i, m := range masters {
		if serves(m, own) {
			tags[i] = "{" + prefix + "}"
			continue
		}
		for j := 0; ; j++ {
			name := prefix + ":" + strconv.Itoa(i) + "." + strconv.Itoa(j)
			if serves(m, keySlot(name)) {
				tags[i] = "{" + name + "}"
				break
			}
		}
	}
	return tags, nil
}

// shardTags returns the hash tags of n shards (Options.Shards). One shard
// is the store's own tag, the layout before sharding. With more, shard i's
// tag is the first of "{prefix:i.0}", "{prefix:i.1}", … whose slot lies in
// the i-th n-th of the slots, so that they spread evenly over a Cluster
// whose masters serve equal runs of slots.
func shardTags(prefix string, n int) ([]string, error) {
	if n < 1 || n > MaxShards {
		return nil, fmt.Errorf("redisstore: %d shards, want 1 to %d", n, MaxShards)
	}
	if n == 1 {
		return []string{"{" + prefix + "}"}, nil
	}
	tags := make([]string, n)
	for i := range n {
		lo, hi := i*clusterSlots/n, (i+1)*clusterSlots/n
		for j := 0; ; j++ {
			name := prefix + ":" + strconv.Itoa(i) + "." + strconv.Itoa(j)
			if slot := keySlot(name); slot >= lo && slot < hi {
				tags[i] = "{" + name + "}"
				break
			}
		}
	}
	return tags, nil
}

// keySlot is Redis Cluster's slot of a hash tag's content: CRC16 (XMODEM)
// modulo 16384.
func keySlot(tag string) int {
	var crc uint16
	for i := 0; i < len(tag); i++ {
		crc ^= uint16(tag[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % clusterSlots
}

// Coverage is how the report path's shards lie over a Cluster's masters.
// The first replica to start on a Cluster lays the shard list out
// (docs/SHARDING.md): a master added later serves slots but holds no
// shard, so it takes no part of the report path's load until the shards
// are laid out again (Store.Reshard).
type Coverage struct {
	// Cluster is false for a single node or Sentinel: one shard, nothing
	// to cover.
	Cluster bool
	// Masters are the addresses of the masters that serve slots, sorted.
	Masters []string
	// Shards is, per shard in the layout's order, its tag and the address
	// of the master that serves it.
	Shards [][2]string
	// Unsharded are the masters that serve slots but no shard, sorted.
	Unsharded []string
	// Slots tells one map of slots to masters from another: equal on two
	// reads, no slot moved between them (a rebalance is not under way, or
	// paused).
	Slots string
	// Stuck says that some shard is fenced above the list's generation: a
	// reshard stopped between its fence and its new list (its replica
	// died), and every batch fails until a reshard finishes the job.
	Stuck bool
}

// ShardCoverage reads the Cluster's masters and where the store's shards
// lie over them: a master in Unsharded was added after the shard list was
// made (or took slots from the others by a reshard), and gets no share of
// the report path until Store.Reshard.
func (s *Store) ShardCoverage(ctx context.Context) (Coverage, error) {
	if _, ok := s.client.(*redis.ClusterClient); !ok {
		return Coverage{}, nil
	}
	// Read the list again: a replica that reads the coverage periodically
	// (controlplane serve, every minute) thus adopts a new generation
	// within that period even if it sends no report.
	lay, err := s.reloadLayout(ctx, s.layout.Load())
	if err != nil {
		return Coverage{}, err
	}
	slots, err := s.client.ClusterSlots(ctx).Result()
	if err != nil {
		return Coverage{}, unavailable("read the cluster's slots", err)
	}
	c := Coverage{Cluster: true, Shards: make([][2]string, len(lay.tags))}
	if c.Stuck, err = s.fencedAbove(ctx, lay); err != nil {
		return Coverage{}, err
	}
	sharded := map[string]bool{}
	for i, tag := range lay.tags {
		slot := keySlot(strings.Trim(tag, "{}"))
		c.Shards[i][0] = tag
		for _, r := range slots {
			if len(r.Nodes) > 0 && int(r.Start) <= slot && slot <= int(r.End) {
				c.Shards[i][1] = r.Nodes[0].Addr
				sharded[r.Nodes[0].Addr] = true
			}
		}
	}
	seen := map[string]bool{}
	for _, r := range slots {
		if len(r.Nodes) == 0 || seen[r.Nodes[0].Addr] {
			continue
		}
		a := r.Nodes[0].Addr
		seen[a] = true
		c.Masters = append(c.Masters, a)
		if !sharded[a] {
			c.Unsharded = append(c.Unsharded, a)
		}
	}
	sort.Strings(c.Masters)
	sort.Strings(c.Unsharded)
	ranges := make([]string, 0, len(slots))
	for _, r := range slots {
		if len(r.Nodes) > 0 {
			ranges = append(ranges, fmt.Sprintf("%d-%d@%s", r.Start, r.End, r.Nodes[0].Addr))
		}
	}
	sort.Strings(ranges)
	h := fnv.New64a()
	_, _ = io.WriteString(h, strings.Join(ranges, ","))
	c.Slots = strconv.FormatUint(h.Sum64(), 16)
	return c, nil
}
