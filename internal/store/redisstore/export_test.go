package redisstore

// Exported for tests.
var (
	ShardTags = shardTags
	KeySlot   = keySlot
)
