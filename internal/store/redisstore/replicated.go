package redisstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/store"
)

// DefaultReplicaWait is Options.ReplicaWait's default: far above the
// milliseconds a replica takes to confirm, well below a client's patience.
const DefaultReplicaWait = time.Second

// replicated waits until every replica the master has online confirms the
// edit whose call key is call, and fails with store.ErrNotReplicated if one
// does not within s.wait. It is called after an edit script
// answered that the edit is applied.
//
// Redis replicates asynchronously: a master that dies just after it
// answered can take the edit with it, and the replica promoted in its place
// never had it. WAIT closes that gap, but it counts only what its own
// connection wrote, and the script may have run on another of the pool's
// connections (or, after a lost answer, been replayed from its call key
// without writing). So this writes on the connection it waits on:
// refreshing the call key's expiry is a write that Redis replicates in
// order after the edit, and finding the key missing says the edit is not
// on this master any more.
//
// A replica that is not online (down, or still in its first sync) is not
// waited for; Redis's min-replicas-to-write makes the master refuse edits
// while too few are online.
func (s *Store) replicated(ctx context.Context, call string) error {
	if s.wait < 0 {
		return nil
	}
	conn, err := s.masterConn(ctx, call)
	if err != nil {
		return notReplicated("find the master: %w", err)
	}
	if conn == nil {
		return nil // a client with no one master for our keys: not waited for
	}
	defer conn.Close()
	info, err := conn.Info(ctx, "replication").Result()
	if err != nil {
		return notReplicated("read the master's replicas: %w", err)
	}
	role, online := replicationState(info)
	if role != "master" {
		return notReplicated("the node the edit was confirmed on is a %s, not the master", role)
	}
	if online == 0 {
		return nil
	}
	kept, err := conn.PExpire(ctx, call, callTTL).Result()
	if err != nil {
		return notReplicated("mark the edit: %w", err)
	}
	if !kept {
		return notReplicated("the edit is no longer on the master: a failover lost it before a replica confirmed it")
	}
	acked, err := conn.Wait(ctx, online, s.wait).Result()
	if err != nil {
		return notReplicated("WAIT: %w", err)
	}
	if acked < int64(online) {
		return notReplicated("%d of the %d replicas online confirmed it within %v", acked, online, s.wait)
	}
	return nil
}

// masterConn returns one connection to the master that holds key, or nil
// if the client is of a kind that has none (a go-redis Ring).
func (s *Store) masterConn(ctx context.Context, key string) (*redis.Conn, error) {
	switch c := s.client.(type) {
	case *redis.Client: // one node, or the master Sentinel names
		return c.Conn(), nil
	case *redis.ClusterClient:
		m, err := c.MasterForKey(ctx, key)
		if err != nil {
			return nil, err
		}
		return m.Conn(), nil
	}
	return nil, nil
}

// replicationState reads an INFO replication reply: the node's role and how
// many replicas it has online.
func replicationState(info string) (role string, online int) {
	for line := range strings.Lines(info) {
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "role:"); ok {
			role = v
		}
		// slave0:ip=127.0.0.1,port=6380,state=online,offset=42,lag=0
		if k, v, ok := strings.Cut(line, ":"); ok && strings.HasPrefix(k, "slave") && strings.Contains(","+v+",", ",state=online,") {
			online++
		}
	}
	return role, online
}

// notReplicated is the error of an edit that was applied and not confirmed
// by the replicas.
func notReplicated(format string, args ...any) error {
	return fmt.Errorf("redis: edit applied but not confirmed by the replicas: %w: %w: %w",
		store.ErrUnavailable, store.ErrNotReplicated, fmt.Errorf(format, args...))
}
