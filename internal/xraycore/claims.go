package xraycore

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracesampling/controlplane/internal/receipt"
)

// claims holds each X-Ray client's last claim per rule: X-Ray SDKs echo no
// receipts (they send a ClientID and counts), so the replica keeps what a
// receipt would have vouched for, and the next report of the same client
// and rule retracts it from the ledger. It is a receipt.Keeper that hands
// out no tokens.
//
// It is bounded: at most max entries; an entry lapses ttl after it was kept
// (a client that stops reporting is forgotten once its quota's bucket is out
// of the ledger anyway). When full, expired entries are swept (at most once
// per ttl); if none lapsed, a new client's claim is not kept (its next report
// counts as a new client's, which only makes quotas smaller until its old
// figure ages out of the ledger) and the metric says so. Safe for concurrent
// use.
type claims struct {
	mu      sync.Mutex
	m       map[claimKey]heldClaim
	max     int
	ttl     time.Duration
	swept   time.Time
	now     func() time.Time
	full    prometheus.Counter
	entries prometheus.Gauge
}

type claimKey struct{ client, rule string }

type heldClaim struct {
	c       receipt.Claim
	expires time.Time
}

func newClaims(max int, ttl time.Duration, now func() time.Time, reg prometheus.Registerer) *claims {
	c := &claims{
		m:   map[claimKey]heldClaim{},
		max: max,
		ttl: ttl,
		now: now,
		full: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_xray_claims_full_total",
			Help: "X-Ray clients' claims (their last rates and quota per rule, which the next report retracts) not kept because the replica holds --xray-max-clients of them: the next report of that client counts as a new client's.",
		}),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "controlplane_xray_claims",
			Help: "X-Ray clients' claims (per client and rule) this replica holds.",
		}),
	}
	reg.MustRegister(c.full, c.entries)
	return c
}

// Previous returns the client's claim for rule, if one is held and has not
// lapsed. The claim stays held until the next Keep replaces it: if the
// report's store call fails, the next report still retracts it.
func (c *claims) Previous(client, rule, _ string, now time.Time) (receipt.Claim, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.m[claimKey{client, rule}]
	if !ok || !now.Before(h.expires) {
		return receipt.Claim{}, false, nil
	}
	return h.c, true, nil
}

// Keep holds cl as the client's claim for rule; it returns no token.
func (c *claims) Keep(client, rule string, cl receipt.Claim) string {
	k := claimKey{client, rule}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		c.sweep(now)
		if len(c.m) >= c.max {
			c.full.Inc()
			return ""
		}
	}
	c.m[k] = heldClaim{c: cl, expires: now.Add(c.ttl)}
	c.entries.Set(float64(len(c.m)))
	return ""
}

// sweep drops lapsed entries, at most once per ttl: a full table of live
// clients is not scanned on every report.
func (c *claims) sweep(now time.Time) {
	if now.Sub(c.swept) < c.ttl {
		return
	}
	c.swept = now
	for k, h := range c.m {
		if !now.Before(h.expires) {
			delete(c.m, k)
		}
	}
	c.entries.Set(float64(len(c.m)))
}

func (c *claims) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
