package redisstore

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

var (
	//go:embed borrow.lua
	borrowLua    string
	borrowScript = redis.NewScript(borrowLua)
)

// borrowKeyIn is a rule's first-borrow bucket in its shard's tag, beside
// its ledger: a new instance's rule set, whatever rules it holds, is one
// script per shard, each in one slot.
func borrowKeyIn(tag, rule string) string { return tag + ":borrow:" + rule }

// TakeFirstBorrows implements store.BorrowStore: the takes grouped by their
// rule's shard, one borrow.lua per shard, all in one pipeline (one round
// trip; on a Cluster, to the masters in parallel). A shard that fails
// fails the call: the caller withholds what it could not take.
func (s *Store) TakeFirstBorrows(ctx context.Context, now time.Time, takes []store.BorrowTake) ([]int64, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	if len(takes) > store.MaxBorrowTakes {
		return nil, fmt.Errorf("redis: take first borrows: takes: at most %d, got %d", store.MaxBorrowTakes, len(takes))
	}
	out := make([]int64, len(takes))
	lay, err := s.shardLayout(ctx)
	if err != nil {
		return nil, err
	}
	type part struct {
		keys []string
		args []any
		idx  []int // the takes', in keys order
		cmd  *redis.Cmd
	}
	parts := make([]*part, len(lay.tags))
	var used []*part
	for i, t := range takes {
		if !reservoir.ValidGateRate(t.Rate) || t.Count < 1 {
			continue
		}
		sh := lay.of(t.Rule)
		p := parts[sh]
		if p == nil {
			p = &part{args: []any{now.UnixMilli(), reservoir.GateMaxTTL}}
			parts[sh] = p
			used = append(used, p)
		}
		p.keys = append(p.keys, borrowKeyIn(lay.tags[sh], t.Rule))
		p.args = append(p.args, strconv.FormatFloat(t.Rate, 'g', -1, 64), t.Count)
		p.idx = append(p.idx, i)
	}
	switch len(used) {
	case 0:
		return out, nil
	case 1:
		used[0].cmd = borrowScript.Run(ctx, s.client, used[0].keys, used[0].args...)
	default:
		run := func(eval bool) {
			_, _ = s.client.Pipelined(ctx, func(pl redis.Pipeliner) error {
				for _, p := range used {
					if !eval {
						p.cmd = borrowScript.EvalSha(ctx, pl, p.keys, p.args...)
					} else if redis.HasErrorPrefix(p.cmd.Err(), "NOSCRIPT") {
						p.cmd = borrowScript.Eval(ctx, pl, p.keys, p.args...)
					}
				}
				return nil
			})
		}
		run(false)
		for _, p := range used {
			if redis.HasErrorPrefix(p.cmd.Err(), "NOSCRIPT") {
				run(true) // a master that never ran it; it ran nothing
				break
			}
		}
	}
	for _, p := range used {
		res, err := p.cmd.Int64Slice()
		if err != nil {
			return nil, unavailable("take first borrows", err)
		}
		if len(res) != len(p.idx) {
			return nil, fmt.Errorf("redis: take first borrows: %d answers for %d takes", len(res), len(p.idx))
		}
		for j, i := range p.idx {
			out[i] = res[j]
		}
	}
	return out, nil
}

var _ store.BorrowStore = (*Store)(nil)
