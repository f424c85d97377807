package redisstore

import "context"

// Exported for tests.
var (
	ShardTags = shardTags
	KeySlot   = keySlot
)

// ShardTagOf is the hash tag of a rule's shard.
func (s *Store) ShardTagOf(rule string) string {
	l, err := s.shardLayout(context.Background())
	if err != nil {
		panic(err)
	}
	return l.tags[l.of(rule)]
}

// ShardTags are the store's shards' hash tags.
func (s *Store) ShardTagList() []string {
	l, err := s.shardLayout(context.Background())
	if err != nil {
		panic(err)
	}
	return l.tags
}

// Generation is the generation of the store's shard list.
func (s *Store) Generation() int64 {
	l, err := s.shardLayout(context.Background())
	if err != nil {
		panic(err)
	}
	return l.gen
}
