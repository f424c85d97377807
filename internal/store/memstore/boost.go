package memstore

import (
	"context"
	"time"

	"github.com/tracesampling/controlplane/internal/boost"
)

// RecordBoostCounts implements boost.Store with boost.Memory, the reference
// the Redis twin is tested against.
func (s *Store) RecordBoostCounts(ctx context.Context, now time.Time, o boost.Options, adds []boost.Add) ([]boost.State, error) {
	if s.isClosed() {
		return nil, errClosed
	}
	return s.boosts.RecordBoostCounts(ctx, now, o, adds)
}

// StartBoost implements boost.Store: a compare-and-set on the start of the
// rule's last boost.
func (s *Store) StartBoost(ctx context.Context, rule string, prev time.Time, b boost.Boost) (boost.Boost, bool, error) {
	if s.isClosed() {
		return boost.Boost{}, false, errClosed
	}
	return s.boosts.StartBoost(ctx, rule, prev, b)
}

func (s *Store) isClosed() bool {
	s.live.mu.Lock()
	defer s.live.mu.Unlock()
	return s.live.closed
}

var _ boost.Store = (*Store)(nil)
