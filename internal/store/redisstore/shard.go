package redisstore

import (
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/store"
)

// Sharding (docs/SHARDING.md). Rules, budgets, alerts, tokens and the
// controller's keys are few and edited rarely: they stay in one slot, under
// the hash tag "{Prefix}", so that an edit is one script. The keys of the
// report path — each rule's ledger, the budgets' months of usage, the seqs of
// numbered reports and the report batches' call keys — are spread over
// Options.Shards hash tags: a rule's ledger and its unnumbered usage in the
// tag of its shard, a numbered report's usage with its client's seq in the
// client's (a budget's month has one part per shard, summed on reading). A report batch
// runs one script per shard it touches, all in one pipeline, which a Cluster
// client sends to the masters in parallel; each script is atomic in its slot.

// Shard limits.
const (
	// DefaultShards is Options.Shards on a Cluster client.
	DefaultShards = 16
	// MaxShards bounds Options.Shards: each shard's tag is found by trying
	// names until one hashes into its share of the 16384 slots.
	MaxShards = 256
)

// clusterSlots is how many hash slots Redis Cluster has.
const clusterSlots = 16384

// defaultShards is the shard count for client when Options.Shards is 0: on
// a single node or Sentinel one slot is as fast as any and keeps the layout
// of the releases before sharding.
func defaultShards(client redis.UniversalClient) int {
	if _, ok := client.(*redis.ClusterClient); ok {
		return DefaultShards
	}
	return 1
}

// shardTags returns the hash tag of each of n shards. One shard is the
// store's own tag, the layout before sharding. With more, shard i's tag is
// the first of "{prefix:i.0}", "{prefix:i.1}", … whose slot lies in the i-th
// n-th of the slots: a Cluster made with redis-cli --cluster create gives its
// masters equal runs of slots, so the shards spread evenly over them.
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

// shardOf is the shard of a rule's or a client's keys (FNV-1a of its name).
// Every replica computes the same.
func (s *Store) shardOf(name string) int {
	if len(s.shards) == 1 {
		return 0
	}
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	return int(h % uint32(len(s.shards)))
}

// servicesShard is the shard of the fleet's pairs of rule and service: one
// slot, so that their bound (store.MaxFleetPairs) is checked in one place.
func (s *Store) servicesShard() int { return s.shardOf(store.FleetUsage) }

// legacyTag is the tag under which the releases before sharding kept the
// report path's keys, when it is not a shard's: Usage reads it too, so that
// a store upgraded over their data keeps the budgets' months.
func (s *Store) legacyTag() (string, bool) {
	return s.tag, len(s.shards) > 1
}
