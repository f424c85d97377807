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
	if len(b.Rates) == 0 && len(b.Usage) == 0 && len(b.Sequenced) == 0 {
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
	// Likewise one increment per budget month and field, for the usage
	// applied unconditionally (group 0) and for each numbered report (the
	// groups after it, applied only if new). Keys and field names are built
	// once per distinct one, not per increment.
	type month struct {
		budget string
		year   int
		month  time.Month
	}
	type field struct {
		key  int  // index into usage
		kind byte // 'r', 's': an hour's requests, sampled; 'R', 'S': a rule's
		hour int
		rule string
	}
	var (
		usageIndex = map[month]int{}
		usage      []time.Time // the months' starts, in key order
		budgets    []string
		group      = map[field]int64{} // one group's increments, netted
		groupArgs  []any
	)
	// addGroup nets a group's increments and appends them to groupArgs.
	addGroup := func(incs []store.UsageIncrement) {
		clear(group)
		for i := range incs {
			inc := &incs[i]
			if inc.Requests == 0 && inc.Sampled == 0 {
				continue
			}
			utc := inc.Month.UTC()
			m := month{inc.Budget, utc.Year(), utc.Month()}
			k, ok := usageIndex[m]
			if !ok {
				k = len(usage)
				usageIndex[m] = k
				usage = append(usage, budget.MonthStart(utc))
				budgets = append(budgets, inc.Budget)
			}
			if inc.Requests != 0 {
				group[field{key: k, kind: 'r', hour: inc.Hour}] += inc.Requests
			}
			if inc.Sampled != 0 {
				group[field{key: k, kind: 's', hour: inc.Hour}] += inc.Sampled
			}
			if inc.Rule != "" && inc.Requests != 0 {
				group[field{key: k, kind: 'R', rule: inc.Rule}] += inc.Requests
			}
			if inc.Rule != "" && inc.Sampled != 0 {
				group[field{key: k, kind: 'S', rule: inc.Rule}] += inc.Sampled
			}
		}
		groupArgs = append(groupArgs, len(group))
		for f, n := range group {
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
			}
			groupArgs = append(groupArgs, f.key+1, name, n)
		}
	}
	for i := range b.Usage {
		inc := &b.Usage[i]
		if err := record.CheckUsage(inc.Budget, inc.Month, inc.Hour, inc.Requests, inc.Sampled); err != nil {
			return nil, fmt.Errorf("record reports: %w", err)
		}
	}
	addGroup(b.Usage)
	seqKeys := make([]string, 0, len(b.Sequenced))
	for i := range b.Sequenced {
		sq := &b.Sequenced[i]
		if err := record.CheckSequenced(sq); err != nil {
			return nil, fmt.Errorf("record reports: %w", err)
		}
		seqKeys = append(seqKeys, s.seqKey(sq.Client))
		groupArgs = append(groupArgs, sq.Seq)
		addGroup(sq.Usage)
	}
	if len(ledgers) == 0 && len(usage) == 0 && len(b.Sequenced) == 0 {
		return nil, nil
	}

	keys := make([]string, 0, len(ledgers)+len(usage)+len(seqKeys)+1)
	args := make([]any, 8, 8+3*len(ledgers)+len(usage)+len(groupArgs))
	args[3], args[4], args[5], args[6], args[7] = len(ledgers), callTTL.Milliseconds(), len(usage), len(b.Sequenced), store.SeqWindow.Milliseconds()
	args[0], args[1], args[2] = 0, 0, 0
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
	for i, start := range usage {
		keys = append(keys, s.usageKey(budgets[i], start))
		args = append(args, max(record.UsageExpiry(start).Sub(now), minUsageTTL).Milliseconds())
	}
	keys = append(keys, seqKeys...)
	args = append(args, groupArgs...)
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

// seqKey holds the highest report seq recorded for a client.
func (s *Store) seqKey(client string) string { return s.tag + ":seq:" + client }

// usageKey is the hash of one budget's month.
func (s *Store) usageKey(budgetName string, month time.Time) string {
	return s.tag + ":usage:" + budgetName + ":" + budget.MonthKey(month)
}
