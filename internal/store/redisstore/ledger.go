package redisstore

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/reservoir"
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
func (s *Store) RecordReports(ctx context.Context, b store.ReportBatch) ([]store.RateResult, error) {
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
	// Net the rates and retractions of every report into one delta per rule
	// and bucket: the work in Redis then grows with the number of buckets,
	// not of reports, but for a few operations on numbers per report.
	// Retractions from buckets that are no longer live take nothing from
	// the rates (those buckets are gone, and their contributions with them)
	// and may drain the rule's reserve.
	type ledgerArgs struct {
		key       string
		rates     map[int64]float64
		quotas    map[int64]float64 // live buckets
		drains    map[int64]float64 // buckets no longer live
		reservoir float64           // the largest of the reports'
		reports   []float64         // the reports' rates, in order
		sum, top  float64           // of the reports' rates
	}
	index := map[string]int{}
	var ledgers []*ledgerArgs
	for _, u := range b.Rates {
		i, ok := index[u.Rule]
		if !ok {
			i = len(ledgers)
			index[u.Rule] = i
			ledgers = append(ledgers, &ledgerArgs{key: s.ledgerKey(u.Rule), rates: map[int64]float64{}, quotas: map[int64]float64{}, drains: map[int64]float64{}})
		}
		l := ledgers[i]
		if u.Add.Rate != 0 {
			l.rates[u.Add.Bucket] += u.Add.Rate
		}
		if r := u.Retract; r != nil {
			if b.Ledger.Live(r.Bucket, b.Now) {
				l.rates[r.Bucket] -= r.Rate
				l.quotas[r.Bucket] += r.Quota
			} else {
				l.drains[r.Bucket] += r.Quota
			}
		}
		l.reservoir = max(l.reservoir, u.Reservoir)
		l.reports = append(l.reports, u.Add.Rate)
		if u.Add.Rate > 0 && !math.IsInf(u.Add.Rate, 0) {
			l.sum += u.Add.Rate
			l.top = max(l.top, u.Add.Rate)
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
	args := make([]any, 10, 10+12*len(ledgers)+len(usage)+len(groupArgs))
	args[0], args[1], args[2], args[3], args[4] = 0, 0, 0, len(ledgers), callTTL.Milliseconds()
	args[5], args[6] = s.clock.deadline(ctx), ""
	args[7], args[8], args[9] = len(usage), len(b.Sequenced), store.SeqWindow.Milliseconds()
	if len(ledgers) > 0 { // a batch of usage alone may have no ledger configuration
		args[0], args[1], args[2] = b.Ledger.Bucket(b.Now), b.Ledger.Retain, b.Ledger.TTL().Milliseconds()
		if !b.DownSince.IsZero() {
			args[6] = b.Ledger.Bucket(b.DownSince)
		}
	}
	for _, l := range ledgers {
		keys = append(keys, l.key)
		for _, m := range []map[int64]float64{l.rates, l.quotas, l.drains} {
			args = append(args, len(m))
			for bucket, d := range m {
				args = append(args, bucket, ftoa(d))
			}
		}
		args = append(args, ftoa(l.reservoir), ftoa(l.sum), ftoa(l.top))
	}
	for i, start := range usage {
		keys = append(keys, s.usageKey(budgets[i], start))
		args = append(args, max(record.UsageExpiry(start).Sub(now), minUsageTTL).Milliseconds())
	}
	keys = append(keys, seqKeys...)
	args = append(args, groupArgs...)
	keys = append(keys, s.callKey(b.Key))
	sent := time.Now()
	res, err := s.ledger.Run(ctx, s.client, keys, args...).StringSlice()
	if err != nil {
		if strings.HasPrefix(err.Error(), "STALE") {
			s.clock.forget()
			return nil, fmt.Errorf("redis: record reports: %w: %w: %w", store.ErrUnavailable, store.ErrNotApplied, err)
		}
		return nil, unavailable("record reports", err)
	}
	if len(res) != 2+2*len(ledgers) {
		return nil, fmt.Errorf("redis: record reports: %d results for %d ledgers", len(res), len(ledgers))
	}
	s.clock.observe(res[0], sent, time.Now())
	applied := res[1] == "1" // else a batch sent again: it grants nothing
	// Per ledger, the fleet rate and the quotas outstanding before the
	// batch's grants, from which the grants follow as the script made them.
	grants := make([][]float64, len(ledgers))
	fleets := make([]float64, len(ledgers))
	for i, l := range ledgers {
		fleet, err1 := strconv.ParseFloat(res[2+2*i], 64)
		outstanding, err2 := strconv.ParseFloat(res[3+2*i], 64)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("redis: record reports: bad sums %q, %q: %w", res[2+2*i], res[3+2*i], err)
		}
		fleets[i] = fleet
		if applied {
			grants[i] = reservoir.Grants(l.reservoir, fleet, outstanding, l.reports)
		} else {
			grants[i] = make([]float64, len(l.reports))
		}
	}
	out := make([]store.RateResult, len(b.Rates))
	next := make([]int, len(ledgers))
	for i, u := range b.Rates {
		l := index[u.Rule]
		out[i] = store.RateResult{Fleet: fleets[l], Quota: grants[l][next[l]]}
		next[l]++
	}
	return out, nil
}

func ftoa(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

func (s *Store) ledgerKey(rule string) string { return s.tag + ":ledger:" + rule }

// seqKey holds the highest report seq recorded for a client.
func (s *Store) seqKey(client string) string { return s.tag + ":seq:" + client }

// usageKey is the hash of one budget's month.
func (s *Store) usageKey(budgetName string, month time.Time) string {
	return s.tag + ":usage:" + budgetName + ":" + budget.MonthKey(month)
}
