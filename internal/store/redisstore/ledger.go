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
	index := map[string]int{}
	var ledgers []*ledgerArgs
	for _, u := range b.Rates {
		i, ok := index[u.Rule]
		if !ok {
			i = len(ledgers)
			index[u.Rule] = i
			ledgers = append(ledgers, &ledgerArgs{key: s.ledgerKey(u.Rule), rates: map[int64]float64{}, quotas: map[int64]float64{}, drains: map[int64]float64{},
				sampled: map[int64]float64{}, clients: map[int64]int64{}, applied: map[[2]int64]int64{}})
		}
		l := ledgers[i]
		l.version = max(l.version, u.RuleVersion)
		if u.Client && u.Applied {
			l.applied[[2]int64{u.Add.Bucket, u.RuleVersion}]++
		}
		if u.Add.Rate != 0 {
			l.rates[u.Add.Bucket] += u.Add.Rate
		}
		if u.Add.Sampled != 0 {
			l.sampled[u.Add.Bucket] += u.Add.Sampled
		}
		if u.Client {
			l.clients[u.Add.Bucket]++
			l.nclients++
		}
		if r := u.Retract; r != nil {
			if b.Ledger.Live(r.Bucket, b.Now) {
				l.rates[r.Bucket] -= r.Rate
				l.quotas[r.Bucket] += r.Quota
				if r.Sampled != 0 {
					l.sampled[r.Bucket] -= r.Sampled
				}
				if u.Client {
					l.clients[r.Bucket]--
					if r.Applied != 0 {
						l.applied[[2]int64{r.Bucket, r.Applied}]--
					}
				}
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
	if err := checkUsage(b); err != nil {
		return nil, err
	}
	// The reports of a client in one batch count in order: one whose seq is
	// not above an earlier one's is a repeat, whatever the store holds.
	// The others are new unless the store has recorded their client's seq
	// already: the script checks, and if some are not new it changes
	// nothing and names them, so that the batch goes again without them.
	// A repeat is rare (an acknowledgement lost), so the usage of the
	// numbered reports is netted with the rest and sent once, not report by
	// report.
	n := numbered{client: make([]int, len(b.Sequenced)), kept: make([]bool, len(b.Sequenced))}
	clientIndex := make(map[string]int, len(b.Sequenced))
	var last []uint64 // per client, its last seq kept
	for i := range b.Sequenced {
		sq := &b.Sequenced[i]
		c, ok := clientIndex[sq.Client]
		if !ok {
			c = len(n.clients)
			clientIndex[sq.Client] = c
			n.clients = append(n.clients, sq.Client)
			last = append(last, 0)
		}
		n.client[i] = c
		if sq.Seq > last[c] {
			n.kept[i], last[c] = true, sq.Seq
		}
	}
	for range len(b.Sequenced) + 1 {
		res, err := s.runLedger(ctx, b, now, ledgers, &n)
		if err != nil {
			return nil, err
		}
		if len(res) < 2 {
			return nil, fmt.Errorf("redis: record reports: %d results", len(res))
		}
		if res[1] == "repeat" {
			if err := dropRepeats(b.Sequenced, n.kept, res[2:]); err != nil {
				return nil, err
			}
			continue
		}
		return rateResults(b, index, ledgers, res)
	}
	return nil, fmt.Errorf("redis: record reports: repeated reports never settled")
}

// ledgerArgs is one rule's part of a batch.
type ledgerArgs struct {
	key     string
	rates   map[int64]float64
	quotas  map[int64]float64 // live buckets
	drains  map[int64]float64 // buckets no longer live
	sampled map[int64]float64
	clients map[int64]int64
	// applied nets the clients that run the rule, by bucket and rule
	// version; version is the batch's newest rule version.
	applied   map[[2]int64]int64
	version   int64
	reservoir float64   // the largest of the reports'
	reports   []float64 // the reports' rates, in order
	sum, top  float64   // of the reports' rates
	nclients  int       // client reports
}

// numbered is the numbered reports of a batch: the clients, each report's
// (an index into clients), and whether it is kept (not known to be a
// repeat).
type numbered struct {
	clients []string
	client  []int
	kept    []bool
}

// checkUsage checks every usage increment of a batch, numbered or not, so
// that a batch is refused before anything is sent.
func checkUsage(b store.ReportBatch) error {
	for i := range b.Usage {
		inc := &b.Usage[i]
		if err := record.CheckUsage(inc.Budget, inc.Month, inc.Hour, inc.Requests, inc.Sampled); err != nil {
			return fmt.Errorf("record reports: %w", err)
		}
	}
	for i := range b.Sequenced {
		if err := record.CheckSequenced(&b.Sequenced[i]); err != nil {
			return fmt.Errorf("record reports: %w", err)
		}
	}
	return nil
}

// dropRepeats takes out of kept the numbered reports that the script named
// as recorded already: pairs of client and the highest seq recorded for it.
func dropRepeats(seqs []store.SequencedUsage, kept []bool, named []string) error {
	if len(named) == 0 || len(named)%2 != 0 {
		return fmt.Errorf("redis: record reports: %d values naming repeated reports", len(named))
	}
	marks := make(map[string]uint64, len(named)/2)
	for i := 0; i < len(named); i += 2 {
		m, err := strconv.ParseUint(named[i+1], 10, 64)
		if err != nil {
			return fmt.Errorf("redis: record reports: bad seq %q: %w", named[i+1], err)
		}
		marks[named[i]] = m
	}
	dropped := false
	for i := range seqs {
		if m, ok := marks[seqs[i].Client]; ok && kept[i] && seqs[i].Seq <= m {
			kept[i], dropped = false, true
		}
	}
	if !dropped {
		return fmt.Errorf("redis: record reports: the reports named as repeats are not in the batch")
	}
	return nil
}

// runLedger runs the ledger script once, with the usage of the numbered
// reports kept, and returns its answer.
func (s *Store) runLedger(ctx context.Context, b store.ReportBatch, now time.Time, ledgers []*ledgerArgs, n *numbered) ([]string, error) {
	// One increment per budget month and field, over the unnumbered usage
	// and that of the numbered reports kept. Keys and field names are built
	// once per distinct one, not per increment.
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
	add := func(inc *store.UsageIncrement) {
		if inc.Requests == 0 && inc.Sampled == 0 {
			return
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
	for i := range b.Usage {
		add(&b.Usage[i])
	}
	// Per client of a numbered report kept: the lowest and highest seq of
	// its reports kept (the script checks the one, records the other); 0:
	// none kept.
	low, high := make([]uint64, len(n.clients)), make([]uint64, len(n.clients))
	nclients := 0
	for i := range b.Sequenced {
		if !n.kept[i] {
			continue
		}
		sq := &b.Sequenced[i]
		for j := range sq.Usage {
			add(&sq.Usage[j])
		}
		c := n.client[i]
		if low[c] == 0 {
			low[c] = sq.Seq
			nclients++
		}
		high[c] = sq.Seq // kept seqs of a client increase
	}

	keys := make([]string, 0, len(ledgers)+len(usage)+5)
	args := make([]any, 11, 11+3*nclients+14*len(ledgers)+32*len(usage))
	args[0], args[1], args[2], args[3], args[4] = 0, 0, 0, len(ledgers), callTTL.Milliseconds()
	args[5], args[6], args[7], args[8], args[9], args[10] = s.clock.deadline(ctx), "", len(usage), nclients, 0, 0
	if len(ledgers) > 0 { // a batch of usage alone may have no ledger configuration
		args[0], args[1], args[2] = b.Ledger.Bucket(b.Now), b.Ledger.Retain, b.Ledger.TTL().Milliseconds()
		if !b.DownSince.IsZero() {
			args[6] = b.Ledger.Bucket(b.DownSince)
		}
	}
	several := false // a client with several reports kept
	for c, name := range n.clients {
		if low[c] != 0 {
			args = append(args, name)
			several = several || low[c] != high[c]
		}
	}
	for c := range n.clients {
		if low[c] != 0 {
			args = append(args, high[c])
		}
	}
	if several {
		args[10] = 1
		for c := range n.clients {
			if low[c] != 0 {
				args = append(args, low[c])
			}
		}
	}
	for _, l := range ledgers {
		keys = append(keys, l.key)
		for _, m := range []map[int64]float64{l.rates, l.quotas, l.drains, l.sampled} {
			args = append(args, len(m))
			for bucket, d := range m {
				args = append(args, bucket, ftoa(d))
			}
		}
		args = append(args, len(l.clients))
		for bucket, d := range l.clients {
			args = append(args, bucket, d)
		}
		args = append(args, ftoa(l.reservoir), ftoa(l.sum), ftoa(l.top), l.nclients, l.version, len(l.applied))
		for bv, d := range l.applied {
			args = append(args, bv[0], bv[1], d)
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
	if nclients > 0 {
		w := now.UnixMilli() / seqSpan.Milliseconds()
		keys = append(keys, s.seqsKey(w-2), s.seqsKey(w-1), s.seqsKey(w), s.seqsKey(w+1))
		args[9] = time.UnixMilli((w + 2) * seqSpan.Milliseconds()).Add(seqSkew).Sub(now).Milliseconds()
	}
	if len(ledgers) == 0 && len(usage) == 0 && nclients == 0 {
		return []string{"", "1"}, nil
	}
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
	if len(res) > 0 {
		s.clock.observe(res[0], sent, time.Now())
	}
	return res, nil
}

// rateResults turns the script's answer into each rate update's fleet rate
// and quota.
func rateResults(b store.ReportBatch, index map[string]int, ledgers []*ledgerArgs, res []string) ([]store.RateResult, error) {
	if len(res) != 2+ledgerResults*len(ledgers) {
		return nil, fmt.Errorf("redis: record reports: %d results for %d ledgers", len(res), len(ledgers))
	}
	applied := res[1] == "1" // else a batch sent again: it grants nothing
	// Per ledger, the fleet rate and the quotas outstanding before the
	// batch's grants, from which the grants follow as the script made them,
	// and the sampled rate and clients.
	grants := make([][]float64, len(ledgers))
	totals := make([]store.RateResult, len(ledgers))
	for i, l := range ledgers {
		r := res[2+ledgerResults*i : 2+ledgerResults*(i+1)]
		fleet, err1 := strconv.ParseFloat(r[0], 64)
		outstanding, err2 := strconv.ParseFloat(r[1], 64)
		sampled, err3 := strconv.ParseFloat(r[2], 64)
		clients, err4 := strconv.ParseInt(r[3], 10, 64)
		running, err5 := strconv.ParseInt(r[4], 10, 64)
		if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
			return nil, fmt.Errorf("redis: record reports: bad sums %q: %w", r, err)
		}
		totals[i] = store.RateResult{Fleet: fleet, Sampled: sampled, Instances: clients, Granted: outstanding, Applied: running}
		if applied {
			grants[i] = reservoir.Grants(l.reservoir, fleet, outstanding, l.reports)
		} else {
			grants[i] = make([]float64, len(l.reports))
		}
		for _, g := range grants[i] {
			totals[i].Granted += g
		}
	}
	out := make([]store.RateResult, len(b.Rates))
	next := make([]int, len(ledgers))
	for i, u := range b.Rates {
		l := index[u.Rule]
		out[i] = totals[l]
		out[i].Quota = grants[l][next[l]]
		next[l]++
	}
	return out, nil
}

// ledgerResults is how many figures the script returns per ledger: the
// fleet rate, the quotas outstanding, the sampled rate, the clients and
// those that run the rule as it is.
const ledgerResults = 5

func ftoa(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

func (s *Store) ledgerKey(rule string) string { return s.tag + ":ledger:" + rule }

// Numbered reports' seqs are kept in one hash per span of time (field:
// client, value: its highest seq recorded), written in the span of the
// batch's clock and read in that span and the ones on either side, so that
// replicas whose clocks differ by less than seqSkew agree. A seq is thus
// remembered for at least seqSpan - seqSkew = store.SeqWindow after it was
// recorded. A hash goes as a whole: unlinked by the first batch two spans
// after its own (which is still that long after any seq in it was written,
// by the writer's clock, less the skew), or else at most 2 seqSpan +
// seqSkew after its span began, when its TTL runs out. One command per
// batch reads or writes the seqs of all its clients, where a key per client
// cost two commands per report.
const (
	seqSkew = 10 * time.Minute
	seqSpan = store.SeqWindow + seqSkew
)

// seqsKey is the hash of the seqs recorded in span w (unix time / seqSpan).
func (s *Store) seqsKey(w int64) string { return s.tag + ":seqs:" + strconv.FormatInt(w, 10) }

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
