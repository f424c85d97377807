package redisstore

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/internal/record"
)

//go:embed ledger.lua
var ledgerLua string

// minUsageTTL is the shortest life a usage key is given, for increments of
// a month already past its retention (a client with a wrong clock), so that
// such a key still goes away.
const minUsageTTL = time.Hour

// RecordReports implements store.LedgerStore: the whole batch, ledgers and
// budget usage, is one script, one round trip. Each rule's ledger and each
// budget's month is one small hash under the store's hash tag, so every key
// of the script is in one Cluster slot. Usage increments are checked before
// anything is sent, so a batch is applied whole or not at all.
func (s *Store) RecordReports(ctx context.Context, b store.ReportBatch) ([]float64, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	if len(b.Rates) == 0 && len(b.Usage) == 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		// Over before anything was sent; go-redis would not say so.
		return nil, fmt.Errorf("redis: record reports: %w: %w: %w", store.ErrUnavailable, store.ErrNotApplied, err)
	}
	now := b.Now // for the usage keys' lives
	if now.IsZero() {
		now = s.now()
	}
	// Net every update into one delta per rule and bucket. Retractions
	// from buckets that are no longer live are dropped: those buckets are
	// gone, and their contributions with them.
	type ledgerDeltas struct {
		key    string
		deltas map[int64]float64
	}
	index := map[string]int{}
	var ledgers []*ledgerDeltas
	for _, u := range b.Rates {
		i, ok := index[u.Rule]
		if !ok {
			i = len(ledgers)
			index[u.Rule] = i
			ledgers = append(ledgers, &ledgerDeltas{key: s.ledgerKey(u.Rule), deltas: map[int64]float64{}})
		}
		l := ledgers[i]
		l.deltas[u.Add.Bucket] += u.Add.Rate
		if r := u.Retract; r != nil && b.Ledger.Live(r.Bucket, b.Now) {
			l.deltas[r.Bucket] -= r.Rate
		}
	}
	// Likewise one increment per budget month and field. Keys and field
	// names are built once per distinct one, not per increment.
	type month struct {
		budget   string
		year     int
		month    time.Month
		services int // the fleet's services keys: 1 requests, 2 sampled
	}
	type field struct {
		kind byte // 'r', 's': an hour's requests, sampled; 'R', 'S': a rule's; 'H', 'G': a rule's in an hour; 'P', 'Q': a rule's of a service
		hour int
		rule string
		svc  string
	}
	type usageIncrements struct {
		month  time.Time
		fields map[field]int64
	}
	usageIndex := map[month]int{}
	var usage []*usageIncrements
	for _, inc := range b.Usage {
		if err := record.CheckUsage(inc.Budget, inc.Month, inc.Hour, inc.Requests, inc.Sampled); err != nil {
			return nil, fmt.Errorf("record reports: %w", err)
		}
		if inc.Requests == 0 && inc.Sampled == 0 {
			continue
		}
		utc := inc.Month.UTC()
		at := func(m month) *usageIncrements {
			i, ok := usageIndex[m]
			if !ok {
				i = len(usage)
				usageIndex[m] = i
				usage = append(usage, &usageIncrements{month: budget.MonthStart(utc), fields: map[field]int64{}})
			}
			return usage[i]
		}
		u := at(month{inc.Budget, utc.Year(), utc.Month(), 0})
		if inc.Budget == store.FleetUsage && inc.Rule != "" {
			if inc.Sampled != 0 {
				u.fields[field{kind: 'G', hour: inc.Hour, rule: inc.Rule}] += inc.Sampled
			}
			if inc.Service != "" && inc.Requests != 0 {
				at(month{inc.Budget, utc.Year(), utc.Month(), 1}).fields[field{kind: 'P', rule: inc.Rule, svc: inc.Service}] += inc.Requests
			}
			if inc.Service != "" && inc.Sampled != 0 {
				at(month{inc.Budget, utc.Year(), utc.Month(), 2}).fields[field{kind: 'P', rule: inc.Rule, svc: inc.Service}] += inc.Sampled
			}
		}
		if inc.Requests != 0 {
			u.fields[field{kind: 'r', hour: inc.Hour}] += inc.Requests
		}
		if inc.Sampled != 0 {
			u.fields[field{kind: 's', hour: inc.Hour}] += inc.Sampled
		}
		if inc.Rule != "" && inc.Requests != 0 {
			u.fields[field{kind: 'R', rule: inc.Rule}] += inc.Requests
			u.fields[field{kind: 'H', hour: inc.Hour, rule: inc.Rule}] += inc.Requests
		}
		if inc.Rule != "" && inc.Sampled != 0 {
			u.fields[field{kind: 'S', rule: inc.Rule}] += inc.Sampled
		}
	}
	if len(ledgers) == 0 && len(usage) == 0 {
		return nil, nil
	}

	keys := make([]string, 0, len(ledgers)+len(usage)+1)
	args := []any{0, 0, 0, len(ledgers), callTTL.Milliseconds()}
	if len(ledgers) > 0 { // a batch of usage alone may have no ledger configuration
		args[0], args[1], args[2] = b.Ledger.Bucket(b.Now), b.Ledger.Retain, b.Ledger.TTL().Milliseconds()
	}
	for _, l := range ledgers {
		keys = append(keys, l.key)
		args = append(args, len(l.deltas))
		for bucket, d := range l.deltas {
			args = append(args, bucket, strconv.FormatFloat(d, 'g', -1, 64))
		}
	}
	for m, i := range usageIndex {
		u := usage[i]
		key, limit := s.usageKey(m.budget, u.month), 0
		if m.services > 0 {
			key, limit = s.servicesKey(u.month, m.services == 2), store.MaxFleetPairs
		}
		keys = append(keys, key)
		ttl := max(record.UsageExpiry(u.month).Sub(now), minUsageTTL)
		args = append(args, ttl.Milliseconds(), limit, len(u.fields))
		for f, n := range u.fields {
			var name string
			switch f.kind {
			case 'r':
				name = "r:" + strconv.Itoa(f.hour)
			case 's':
				name = "s:" + strconv.Itoa(f.hour)
			case 'R':
				name = "rr:" + f.rule
			case 'S':
				name = "rs:" + f.rule
			case 'H':
				name = "rh:" + strconv.Itoa(f.hour) + ":" + f.rule
			case 'G':
				name = "sh:" + strconv.Itoa(f.hour) + ":" + f.rule
			case 'P':
				name = f.rule + ":" + f.svc
			}
			args = append(args, name, n)
		}
	}
	keys = append(keys, s.callKey(b.Key))
	res, err := s.ledger.Run(ctx, s.client, keys, args...).StringSlice()
	if err != nil {
		return nil, unavailable("record reports", err)
	}
	if len(res) != len(ledgers) {
		return nil, fmt.Errorf("redis: record reports: %d sums for %d ledgers", len(res), len(ledgers))
	}
	sums := make([]float64, len(ledgers))
	for i, r := range res {
		if sums[i], err = strconv.ParseFloat(r, 64); err != nil {
			return nil, fmt.Errorf("redis: record reports: bad sum %q: %w", r, err)
		}
	}
	out := make([]float64, len(b.Rates))
	for i, u := range b.Rates {
		out[i] = sums[index[u.Rule]]
	}
	return out, nil
}

func (s *Store) ledgerKey(rule string) string { return s.tag + ":ledger:" + rule }

// usageKey is the hash of one budget's month.
func (s *Store) usageKey(budgetName string, month time.Time) string {
	return s.tag + ":usage:" + budgetName + ":" + budget.MonthKey(month)
}

// servicesKey is a hash of the fleet's month per rule and service, fields
// "<rule>:<service>": of requests, or of sampled traces; each holds at most
// store.MaxFleetPairs.
func (s *Store) servicesKey(month time.Time, sampled bool) string {
	k := s.tag + ":usage:" + store.FleetUsage + ":" + budget.MonthKey(month) + ":services"
	if sampled {
		k += "-sampled"
	}
	return k
}
