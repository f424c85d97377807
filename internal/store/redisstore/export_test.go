package redisstore

// Exported for tests.
var (
	ShardTags = shardTags
	KeySlot   = keySlot
)

// ShardTagOf is the hash tag of a rule's shard.
func (s *Store) ShardTagOf(rule string) string { return s.shards[s.shardOf(rule)] }
