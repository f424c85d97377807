package redisstore

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/internal/record"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

//go:embed ledger.lua
var ledgerLua string

// minUsageTTL is the shortest life a usage key is given, for increments of
// a month already past its retention (a client with a wrong clock), so that
// such a key still goes away.
const minUsageTTL = time.Hour

// RecordReports implements store.LedgerStore. Each rule's ledger is one
// small hash in the slot of the rule's shard (shard.go), and so is its part
// of each budget's month, but for numbered reports: their usage is counted
// in their client's shard, with the client's seq, so that it is billed whole
// and once (the fleet's services pairs, in one shard of their own, record
// the seq there too). The batch runs one script per shard it touches, all in
// one pipeline (one round trip per master), each atomic in its slot. With
// one shard that is one script, and the batch is applied whole or not at
// all. With several, a batch that fails may have been applied in some
// shards and not in others: it says so (no store.ErrNotApplied), and sent
// again under its Key it is applied in the others only, since each shard
// keeps the Key's call key. Usage increments are checked before anything is
// sent.
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
	lay, err := s.shardLayout(ctx)
	if err != nil {
		if errors.Is(err, store.ErrUnavailable) && !errors.Is(err, store.ErrNotApplied) {
			// Nothing of the batch was sent.
			err = fmt.Errorf("%w: %w", store.ErrNotApplied, err)
		}
		return nil, fmt.Errorf("record reports: %w", err)
	}
	for attempt := 0; ; attempt++ {
		res, fenced, err := s.recordIn(ctx, b, now, lay)
		if !fenced {
			return res, err
		}
		// A shard was laid out anew (reshard.go) and refused the batch,
		// and no shard took any of it: lay it out by the new list. The
		// fence goes up before the list is replaced; until it is, wait.
		next, lerr := s.reloadLayout(ctx, lay)
		if lerr != nil {
			if !errors.Is(lerr, store.ErrNotApplied) {
				lerr = fmt.Errorf("%w: %w", store.ErrNotApplied, lerr)
			}
			return nil, fmt.Errorf("record reports: %w", lerr)
		}
		if next.gen <= lay.gen {
			if attempt >= fencedWaits {
				return nil, fmt.Errorf("record reports: %w", err)
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("record reports: %w", err)
			case <-time.After(fencedWait):
			}
		}
		lay = next
	}
}

// While a reshard has fenced the shards but not yet replaced the list, a
// batch waits for the new list fencedWaits times fencedWait at most, then
// fails with store.ErrNotApplied (it changed nothing).
const (
	fencedWait  = 50 * time.Millisecond
	fencedWaits = 60
)

// errFenced says that a shard refused a batch laid out by an older
// generation of the shard list (reshard.go).
var errFenced = errors.New("shard laid out anew")

// recordIn applies a batch laid out by lay. fenced says that some shard
// refused it for an older generation and none took any of it: the caller
// lays it out again by the newer list.
func (s *Store) recordIn(ctx context.Context, b store.ReportBatch, now time.Time, lay *shardLayout) (_ []store.RateResult, fenced bool, _ error) {
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
			shard := lay.of(u.Rule)
			ledgers = append(ledgers, &ledgerArgs{shard: shard, key: lay.tags[shard] + ":ledger:" + u.Rule})
		}
		l := ledgers[i]
		l.version = max(l.version, u.RuleVersion)
		if u.Client && u.Applied {
			l.addApplied(u.Add.Bucket, u.RuleVersion, 1)
		}
		if u.Add.Rate != 0 || u.Add.Sampled != 0 || u.Client {
			bs := l.at(u.Add.Bucket)
			if u.Add.Rate != 0 {
				bs.has |= hasRate
				bs.rate += u.Add.Rate
			}
			if u.Add.Sampled != 0 {
				bs.has |= hasSampled
				bs.sampled += u.Add.Sampled
			}
			if u.Client {
				bs.has |= hasClients
				bs.clients++
				l.nclients++
			}
		}
		if r := u.Retract; r != nil {
			bs := l.at(r.Bucket)
			if b.Ledger.Live(r.Bucket, b.Now) {
				bs.has |= hasRate | hasQuota
				bs.rate -= r.Rate
				bs.quota += r.Quota
				if r.Sampled != 0 {
					bs.has |= hasSampled
					bs.sampled -= r.Sampled
				}
				if u.Client {
					bs.has |= hasClients
					bs.clients--
					if r.Applied != 0 {
						l.addApplied(r.Bucket, r.Applied, -1)
					}
				}
			} else {
				bs.has |= hasDrain
				bs.drain += r.Quota
			}
		}
		l.reservoir = max(l.reservoir, u.Reservoir)
		// A report without a previous claim gets a first quota
		// (reservoir.FirstQuota): the script sums those reports' rates
		// apart.
		first := u.Retract == nil
		l.reports = append(l.reports, u.Add.Rate)
		l.first = append(l.first, first)
		if u.Add.Rate > 0 && !math.IsInf(u.Add.Rate, 0) {
			if first {
				l.firstSum += u.Add.Rate
			} else {
				l.sum += u.Add.Rate
			}
			l.top = max(l.top, u.Add.Rate)
		}
	}
	if err := checkUsage(b); err != nil {
		return nil, false, err
	}
	// The reports of a client in one batch count in order: one whose seq is
	// not above an earlier one's is a repeat, whatever the store holds.
	// The others are new unless the shard has recorded their client's seq
	// already: its script checks, and if some are not new it changes
	// nothing and names them, so that the shard's part goes again without
	// them. A repeat is rare (an acknowledgement lost), so the usage of the
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
	parts, err := s.landedBefore(ctx, lay, b, now)
	if err != nil {
		return nil, false, err
	}
	n.landed = parts
	for _, l := range ledgers {
		if n.landed.rule(strings.TrimPrefix(l.key, lay.tags[l.shard]+":ledger:")) {
			// Applied by the previous generation: read it, add nothing.
			l.landed = true
			l.buckets, l.byBucket, l.applied = nil, nil, nil
			l.reservoir, l.sum, l.firstSum, l.top, l.nclients = 0, 0, 0, 0, 0
		}
	}
	groups := make([]*group, len(lay.tags))
	for _, l := range ledgers {
		g := groupOf(groups, l.shard, &n)
		l.pos = len(g.ledgers)
		g.ledgers = append(g.ledgers, l)
	}
	buildUsage(lay, b, &n, groups, true)
	var todo []*group
	for _, g := range groups {
		if g != nil {
			todo = append(todo, g)
		}
	}
	applied := false // in some shard, by some round
	for range len(b.Sequenced) + 1 {
		for _, g := range todo {
			scriptArgs(ctx, lay, b, now, g, &n)
		}
		s.runGroups(ctx, lay, todo)
		var again []*group
		var failed error
		notApplied, refused := true, false
		for _, g := range todo {
			switch {
			case g.err != nil:
				failed = cmp.Or(failed, g.err)
				notApplied = notApplied && errors.Is(g.err, store.ErrNotApplied)
				refused = refused || errors.Is(g.err, errFenced)
			case len(g.res) < 2:
				failed = cmp.Or(failed, fmt.Errorf("redis: record reports: %d results", len(g.res)))
				notApplied = false
			case g.res[1] == "repeat":
				if err := dropRepeats(b.Sequenced, g.kept, g.res[2:]); err != nil {
					failed, notApplied = cmp.Or(failed, err), false
					continue
				}
				again = append(again, g)
			default:
				applied = true
			}
		}
		if failed != nil {
			if applied || !notApplied {
				// Some shard took its part: the batch goes again under
				// its Key, or not at all.
				return nil, false, fmt.Errorf("redis: record reports: %w: not every shard answered: %v", store.ErrUnavailable, failed)
			}
			return nil, refused, failed
		}
		if len(again) == 0 {
			seen(b, lay, &n, groups)
			res, err := rateResults(b, index, ledgers, groups)
			return res, false, err
		}
		sel := make([]*group, len(lay.tags))
		for _, g := range again {
			sel[g.shard] = g
		}
		buildUsage(lay, b, &n, sel, false)
		todo = again
	}
	return nil, false, fmt.Errorf("redis: record reports: repeated reports never settled")
}

// ledgerArgs is one rule's part of a batch.
type ledgerArgs struct {
	shard int
	pos   int // in its group's ledgers
	key   string
	// buckets nets the batch's figures by bucket: a batch touches a few
	// (the live ones, and those of old receipts), so they are found by a
	// scan, and past scanBuckets by byBucket. They were six maps a rule
	// and batch, made and hashed into for every report (issue 17).
	buckets  []bucketSums
	byBucket map[int64]int // index in buckets, once there are many
	landed   bool          // applied by the shard list's previous generation
	// applied nets the clients that run the rule, by bucket and rule
	// version; version is the batch's newest rule version.
	applied   []appliedSums
	version   int64
	reservoir float64   // the largest of the reports'
	reports   []float64 // the reports' rates, in order
	first     []bool    // per report: a first report (no Retract)
	// sum and firstSum are the sums of the rates of the reports that have
	// a previous claim and of those that do not, top the largest rate.
	sum, firstSum, top float64
	nclients           int // client reports
}

// bucketSums is one bucket's figures in a rule's part of a batch: the
// rate, the quotas retracted from it while it is live, the quotas
// retracted once it is not (drained from the reserve), the sampled rate
// and the clients. has says which of them the batch touched: the script
// gets those, a pair each, however they net.
type bucketSums struct {
	bucket                      int64
	has                         uint8
	rate, quota, drain, sampled float64
	clients                     int64
}

// The figures of bucketSums.has.
const (
	hasRate uint8 = 1 << iota
	hasQuota
	hasDrain
	hasSampled
	hasClients
)

// scanBuckets is how many buckets a rule's part of a batch finds by a
// scan; past it, by a map.
const scanBuckets = 8

// at returns the sums of bucket, added if the batch had none.
func (l *ledgerArgs) at(bucket int64) *bucketSums {
	if l.byBucket != nil {
		if i, ok := l.byBucket[bucket]; ok {
			return &l.buckets[i]
		}
	} else {
		for i := range l.buckets {
			if l.buckets[i].bucket == bucket {
				return &l.buckets[i]
			}
		}
	}
	l.buckets = append(l.buckets, bucketSums{bucket: bucket})
	switch n := len(l.buckets); {
	case l.byBucket != nil:
		l.byBucket[bucket] = n - 1
	case n > scanBuckets:
		l.byBucket = make(map[int64]int, 2*n)
		for i := range l.buckets {
			l.byBucket[l.buckets[i].bucket] = i
		}
	}
	return &l.buckets[len(l.buckets)-1]
}

// appliedSums is the net of the clients that run a rule version, counted
// in a bucket.
type appliedSums struct{ bucket, version, n int64 }

// addApplied adds n clients that run version in bucket. A batch touches
// one or two versions of a rule in a few buckets.
func (l *ledgerArgs) addApplied(bucket, version, n int64) {
	for i := range l.applied {
		if a := &l.applied[i]; a.bucket == bucket && a.version == version {
			a.n += n
			return
		}
	}
	l.applied = append(l.applied, appliedSums{bucket, version, n})
}

// numbered is the numbered reports of a batch: the clients, each report's
// (an index into clients), and whether it is kept (not known to be a
// repeat).
type numbered struct {
	clients []string
	client  []int
	kept    []bool
	landed  landed // the parts a previous generation applied
}

// group is a batch's part in one shard: one script.
type group struct {
	shard   int
	ledgers []*ledgerArgs
	kept    []bool // per numbered report: not known to be a repeat here
	// The usage increments, one per budget month and field, over the
	// unnumbered usage and that of the numbered reports kept, and per
	// client the lowest and highest seq of its reports kept with usage
	// here (the script checks the one, records the other); 0: none.
	usage     map[usageMonth]*usageIncrements
	low, high []uint64
	keys      []string
	args      []any
	res       []string // the script's answer
	err       error
}

// usageMonth names a usage key: a budget's month, or the fleet's services
// keys (services 1: requests, 2: sampled).
type usageMonth struct {
	budget   string
	year     int
	month    time.Month
	services int
}

// usageField is a field of a usage key. kind 'r', 's': an hour's requests,
// sampled; 'R', 'S': a rule's; 'H', 'G': a rule's in an hour; 'P': a
// rule's of a service.
type usageField struct {
	kind byte
	hour int
	rule string
	svc  string
}

type usageIncrements struct {
	month  time.Time
	fields map[usageField]int64
}

// groupOf returns the group of a shard, made if there is none.
func groupOf(groups []*group, shard int, n *numbered) *group {
	if g := groups[shard]; g != nil {
		return g
	}
	g := &group{shard: shard, kept: slices.Clone(n.kept)}
	groups[shard] = g
	return g
}

// buildUsage nets the batch's usage into the increments of each group's
// shard: the unnumbered usage, by rule, and that of each group's numbered
// reports kept, by client (and the fleet's services pairs in theirs). It
// starts the groups of sel afresh and skips the shards that have none,
// unless add: then it makes them.
func buildUsage(lay *shardLayout, b store.ReportBatch, n *numbered, sel []*group, add bool) {
	for _, g := range sel {
		if g != nil {
			g.usage = map[usageMonth]*usageIncrements{}
			g.low, g.high = make([]uint64, len(n.clients)), make([]uint64, len(n.clients))
		}
	}
	shardOf := map[string]int{} // by rule or client, for this batch
	at := func(shard int) *group {
		g := sel[shard]
		if g == nil && add {
			g = groupOf(sel, shard, n)
			g.usage = map[usageMonth]*usageIncrements{}
			g.low, g.high = make([]uint64, len(n.clients)), make([]uint64, len(n.clients))
		}
		return g
	}
	// addInc adds one increment, of numbered report seq (-1: unnumbered),
	// to the groups of its shards.
	addInc := func(inc *store.UsageIncrement, seq int) {
		if inc.Requests == 0 && inc.Sampled == 0 {
			return
		}
		by := inc.Rule
		if seq >= 0 {
			by = b.Sequenced[seq].Client
		}
		shard, ok := shardOf[by]
		if !ok {
			shard = lay.of(by)
			shardOf[by] = shard
		}
		utc := inc.Month.UTC()
		fields := func(g *group, services int) map[usageField]int64 {
			if seq >= 0 {
				if !g.kept[seq] {
					return nil
				}
				c := n.client[seq]
				if g.low[c] == 0 {
					g.low[c] = b.Sequenced[seq].Seq
				}
				g.high[c] = b.Sequenced[seq].Seq // kept seqs of a client increase
			}
			m := usageMonth{inc.Budget, utc.Year(), utc.Month(), services}
			u := g.usage[m]
			if u == nil {
				u = &usageIncrements{month: budget.MonthStart(utc), fields: map[usageField]int64{}}
				g.usage[m] = u
			}
			return u.fields
		}
		if inc.Budget == store.FleetUsage && inc.Rule != "" && inc.Service != "" && (seq >= 0 || !n.landed.services()) {
			if g := at(servicesShard); g != nil {
				if inc.Requests != 0 {
					if f := fields(g, 1); f != nil {
						f[usageField{kind: 'P', rule: inc.Rule, svc: inc.Service}] += inc.Requests
					}
				}
				if inc.Sampled != 0 {
					if f := fields(g, 2); f != nil {
						f[usageField{kind: 'P', rule: inc.Rule, svc: inc.Service}] += inc.Sampled
					}
				}
			}
		}
		if seq < 0 && n.landed.rule(inc.Rule) {
			return
		}
		g := at(shard)
		if g == nil {
			return
		}
		f := fields(g, 0)
		if f == nil {
			return
		}
		if inc.Budget == store.FleetUsage && inc.Rule != "" && inc.Sampled != 0 {
			f[usageField{kind: 'G', hour: inc.Hour, rule: inc.Rule}] += inc.Sampled
		}
		if inc.Requests != 0 {
			f[usageField{kind: 'r', hour: inc.Hour}] += inc.Requests
		}
		if inc.Sampled != 0 {
			f[usageField{kind: 's', hour: inc.Hour}] += inc.Sampled
		}
		if inc.Rule != "" && inc.Requests != 0 {
			f[usageField{kind: 'R', rule: inc.Rule}] += inc.Requests
			f[usageField{kind: 'H', hour: inc.Hour, rule: inc.Rule}] += inc.Requests
		}
		if inc.Rule != "" && inc.Sampled != 0 {
			f[usageField{kind: 'S', rule: inc.Rule}] += inc.Sampled
		}
	}
	unnumbered := netted(b.Usage)
	for i := range unnumbered {
		addInc(&unnumbered[i], -1)
	}
	for i := range b.Sequenced {
		if !n.kept[i] {
			continue
		}
		for j := range b.Sequenced[i].Usage {
			addInc(&b.Sequenced[i].Usage[j], i)
		}
	}
}

// checkUsage checks every usage increment of a batch, numbered or not, so
// that a batch is refused before anything is sent.
// netted returns usage with the increments of the same budget, month,
// hour, rule and service added up, each where the first of them was: a
// batch's reports mostly repeat them, and buildUsage makes several map
// updates of each increment (issue 17). What buildUsage does is linear in
// the counts, which are not negative, so the fields and sums are the
// same. A few distinct increments are found by a scan, more by a map.
func netted(usage []store.UsageIncrement) []store.UsageIncrement {
	if len(usage) < 2 {
		return usage
	}
	type key struct {
		budget, service, rule string
		year                  int
		month                 time.Month
		hour                  int
	}
	// The year and month of the last increment's month, kept while the
	// next ones fall in it: a batch's are mostly of one month, and finding
	// a time's date costs more than the rest of the key (issue 17).
	var (
		year     int
		month    time.Month
		from, to int64 // the month's bounds, in Unix seconds; none yet
	)
	keyOf := func(u *store.UsageIncrement) key {
		if sec := u.Month.Unix(); sec < from || sec >= to {
			start := budget.MonthStart(u.Month)
			year, month = start.Year(), start.Month()
			from, to = start.Unix(), start.AddDate(0, 1, 0).Unix()
		}
		return key{u.Budget, u.Service, u.Rule, year, month, u.Hour}
	}
	const scanned = 8 // distinct increments found by a scan
	out := make([]store.UsageIncrement, 0, min(len(usage), scanned))
	keys := make([]key, 0, scanned)
	var index map[key]int
	for i := range usage {
		u := &usage[i]
		k := keyOf(u)
		j := -1
		if index != nil {
			if at, ok := index[k]; ok {
				j = at
			}
		} else {
			j = slices.Index(keys, k)
		}
		if j >= 0 {
			out[j].Requests += u.Requests
			out[j].Sampled += u.Sampled
			continue
		}
		out = append(out, *u)
		switch {
		case index != nil:
			index[k] = len(out) - 1
		case len(keys) < scanned:
			keys = append(keys, k)
		default:
			index = make(map[key]int, 2*scanned)
			for n, k := range keys {
				index[k] = n
			}
			index[k] = len(out) - 1
		}
	}
	return out
}

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
	if err := record.CheckSeen(&b); err != nil {
		return fmt.Errorf("record reports: %w", err)
	}
	return nil
}

// seen sets b.Seen, if asked for, once the batch is applied: a numbered
// report is billed in its client's shard, and was seen before if that
// shard's script named it as a repeat (or it repeats an earlier report of
// the batch). One whose usage had nothing to add there left no seq, and
// billed nothing either way: it counts as new.
func seen(b store.ReportBatch, lay *shardLayout, n *numbered, groups []*group) {
	if b.Seen == nil {
		return
	}
	for i := range b.Sequenced {
		g := groups[lay.of(b.Sequenced[i].Client)]
		b.Seen[i] = !n.kept[i] || g != nil && !g.kept[i]
	}
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

// scriptArgs sets the keys and arguments of a group's script (ledger.lua);
// none if the group has nothing left to do.
func scriptArgs(ctx context.Context, lay *shardLayout, b store.ReportBatch, now time.Time, g *group, n *numbered) {
	g.keys, g.args, g.res, g.err = nil, nil, nil, nil
	tag := lay.tags[g.shard]
	nclients := 0
	for _, l := range g.low {
		if l != 0 {
			nclients++
		}
	}
	if len(g.ledgers) == 0 && len(g.usage) == 0 && nclients == 0 {
		return
	}
	keys := make([]string, 0, len(g.ledgers)+len(g.usage)+5)
	args := make([]any, 11, 11+3*nclients+16*len(g.ledgers)+32*len(g.usage))
	args[0], args[1], args[2], args[3], args[4] = 0, 0, 0, len(g.ledgers), callTTL.Milliseconds()
	args[5], args[6], args[7], args[8], args[9], args[10] = lay.clocks[g.shard].deadline(ctx), "", len(g.usage), nclients, 0, 0
	if len(g.ledgers) > 0 { // a batch of usage alone may have no ledger configuration
		args[0], args[1], args[2] = b.Ledger.Bucket(b.Now), b.Ledger.Retain, b.Ledger.TTL().Milliseconds()
		if !b.DownSince.IsZero() {
			args[6] = b.Ledger.Bucket(b.DownSince)
		}
	}
	several := false // a client with several reports kept
	for c, name := range n.clients {
		if g.low[c] != 0 {
			args = append(args, name)
			several = several || g.low[c] != g.high[c]
		}
	}
	for c := range n.clients {
		if g.low[c] != 0 {
			args = append(args, g.high[c])
		}
	}
	if several {
		args[10] = 1
		for c := range n.clients {
			if g.low[c] != 0 {
				args = append(args, g.low[c])
			}
		}
	}
	for _, l := range g.ledgers {
		keys = append(keys, l.key)
		// Each figure: how many buckets the batch touched, then each
		// bucket and its figure.
		count := func(has uint8) int {
			n := 0
			for i := range l.buckets {
				if l.buckets[i].has&has != 0 {
					n++
				}
			}
			return n
		}
		for _, f := range [...]struct {
			has uint8
			of  func(*bucketSums) float64
		}{
			{hasRate, func(s *bucketSums) float64 { return s.rate }},
			{hasQuota, func(s *bucketSums) float64 { return s.quota }},
			{hasDrain, func(s *bucketSums) float64 { return s.drain }},
			{hasSampled, func(s *bucketSums) float64 { return s.sampled }},
		} {
			args = append(args, count(f.has))
			for i := range l.buckets {
				if bs := &l.buckets[i]; bs.has&f.has != 0 {
					args = append(args, bs.bucket, ftoa(f.of(bs)))
				}
			}
		}
		args = append(args, count(hasClients))
		for i := range l.buckets {
			if bs := &l.buckets[i]; bs.has&hasClients != 0 {
				args = append(args, bs.bucket, bs.clients)
			}
		}
		args = append(args, ftoa(l.reservoir), ftoa(l.sum), ftoa(l.top), ftoa(l.firstSum), ftoa(reservoir.FirstQuotaHeadroom), l.nclients, l.version, len(l.applied))
		for _, a := range l.applied {
			args = append(args, a.bucket, a.version, a.n)
		}
	}
	for m, u := range g.usage {
		key, limit := usageKeyIn(tag, m.budget, u.month), 0
		if m.services > 0 {
			key, limit = servicesKeyIn(tag, u.month, m.services == 2), store.MaxFleetPairs
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
		keys = append(keys, seqsKeyIn(tag, w-2), seqsKeyIn(tag, w-1), seqsKeyIn(tag, w), seqsKeyIn(tag, w+1))
		args[9] = time.UnixMilli((w + 2) * seqSpan.Milliseconds()).Add(seqSkew).Sub(now).Milliseconds()
	}
	g.keys, g.args = append(keys, fenceKeyIn(tag), callKeyIn(tag, callName(lay, b.Key))), append(args, lay.gen)
}

// runGroups runs the script of each group that has one and sets its answer
// or error: one group as a script call, several in one pipeline, which a
// Cluster client splits by master and sends to them in parallel.
//
// A batch's parts in different shards are separate steps: a part that
// applies where another fails adds its rates and grants its quotas, which
// no client receives (the batch failed) and none retracts, so they hold the
// rules of that shard under R until their buckets age out. While a master
// is down or failing over, every batch touching its shard would leave such
// a part in the others. So a shard whose last script did not answer is
// tried alone first, and the other parts go only once it answered: until
// then they are not sent, and fail with store.ErrNotApplied. Only a master
// that is gone marks its shard (nodeFailed), not one that is slow.
func (s *Store) runGroups(ctx context.Context, lay *shardLayout, gs []*group) {
	var first, rest []*group
	for _, g := range gs {
		if g.keys != nil && lay.failing[g.shard].Load() {
			first = append(first, g)
		} else {
			rest = append(rest, g)
		}
	}
	if len(first) == 0 || len(rest) == 0 {
		s.runParts(ctx, lay, gs)
		return
	}
	s.runParts(ctx, lay, first)
	for _, g := range first {
		if g.err != nil {
			for _, r := range rest {
				r.keys, r.res = nil, nil
				r.err = fmt.Errorf("redis: record reports: %w: %w: not sent, shard %s failing: %w", store.ErrUnavailable, store.ErrNotApplied, lay.tags[g.shard], g.err)
			}
			return
		}
	}
	s.runParts(ctx, lay, rest)
}

// runParts runs the groups' scripts together and notes which shards
// answered.
func (s *Store) runParts(ctx context.Context, lay *shardLayout, gs []*group) {
	cmds := make([]*redis.Cmd, len(gs))
	sent := time.Now()
	run := func(eval bool) {
		_, _ = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, g := range gs {
				switch {
				case g.keys == nil:
				case !eval:
					cmds[i] = s.ledger.EvalSha(ctx, p, g.keys, g.args...)
				case redis.HasErrorPrefix(cmds[i].Err(), "NOSCRIPT"):
					cmds[i] = s.ledger.Eval(ctx, p, g.keys, g.args...)
				}
			}
			return nil
		})
	}
	switch {
	case len(gs) == 1 && gs[0].keys != nil:
		cmds[0] = s.ledger.Run(ctx, s.client, gs[0].keys, gs[0].args...)
	default:
		run(false)
		for _, c := range cmds {
			if c != nil && redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
				run(true) // a master that never ran it; nothing ran
				break
			}
		}
	}
	recv := time.Now()
	for i, g := range gs {
		if g.keys == nil {
			g.res = []string{"", "1"} // nothing left to do here
			continue
		}
		res, err := cmds[i].StringSlice()
		switch {
		case err == nil && len(res) > 2 && res[1] == "fenced":
			g.err = fmt.Errorf("redis: record reports: %w: %w: %w: shard %s takes generation %s, the batch is of %d", store.ErrUnavailable, store.ErrNotApplied, errFenced, lay.tags[g.shard], res[2], lay.gen)
		case err != nil && strings.HasPrefix(err.Error(), "STALE"):
			lay.clocks[g.shard].forget()
			g.err = fmt.Errorf("redis: record reports: %w: %w: %w", store.ErrUnavailable, store.ErrNotApplied, err)
		case err != nil:
			g.err = unavailable("record reports", err)
			if nodeFailed(err) {
				lay.failing[g.shard].Store(true)
			}
		default:
			lay.failing[g.shard].Store(false)
			if len(res) > 0 {
				lay.clocks[g.shard].observe(res[0], sent, recv)
			}
			g.res = res
		}
	}
}

// nodeFailed reports whether err says that the shard's master is gone
// (no connection to it could be made, even in time; one that broke) or that the Cluster does not serve
// the slot, rather than slow: a master that answers late (a fork for a
// replica's full sync on a loaded machine) must not hold the other shards'
// parts back, and go-redis gives a pipeline's every command the context's
// error when one master is late, though the others answered.
func nodeFailed(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true // even timed out: no connection could be made
	}
	var timeout interface{ Timeout() bool }
	if errors.As(err, &timeout) && timeout.Timeout() {
		return false
	}
	return errors.As(err, &op) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		redis.HasErrorPrefix(err, "CLUSTERDOWN") || redis.HasErrorPrefix(err, "TRYAGAIN")
}

// rateResults turns the scripts' answers into each rate update's fleet rate
// and quota.
func rateResults(b store.ReportBatch, index map[string]int, ledgers []*ledgerArgs, groups []*group) ([]store.RateResult, error) {
	for _, g := range groups {
		if g != nil && len(g.res) != 2+ledgerResults*len(g.ledgers) {
			return nil, fmt.Errorf("redis: record reports: %d results for %d ledgers", len(g.res), len(g.ledgers))
		}
	}
	// Per ledger, the fleet rate and the quotas outstanding before the
	// batch's grants, from which the grants follow as the script made them,
	// and the sampled rate and clients.
	grants := make([][]float64, len(ledgers))
	totals := make([]store.RateResult, len(ledgers))
	for i, l := range ledgers {
		res := groups[l.shard].res
		applied := res[1] == "1" // else a batch sent again: it grants nothing
		r := res[2+ledgerResults*l.pos : 2+ledgerResults*(l.pos+1)]
		fleet, err1 := strconv.ParseFloat(r[0], 64)
		outstanding, err2 := strconv.ParseFloat(r[1], 64)
		sampled, err3 := strconv.ParseFloat(r[2], 64)
		clients, err4 := strconv.ParseInt(r[3], 10, 64)
		running, err5 := strconv.ParseInt(r[4], 10, 64)
		if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
			return nil, fmt.Errorf("redis: record reports: bad sums %q: %w", r, err)
		}
		totals[i] = store.RateResult{Fleet: fleet, Sampled: sampled, Instances: clients, Granted: outstanding, Applied: running}
		if applied && !l.landed {
			grants[i] = reservoir.Grants(l.reservoir, fleet, outstanding, l.reports, l.first)
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

// seqsKeyIn is the hash of the seqs recorded in span w (unix time /
// seqSpan) in a shard's slot.
func seqsKeyIn(tag string, w int64) string { return tag + ":seqs:" + strconv.FormatInt(w, 10) }

// usageKeyIn is the hash of one budget's month, or of its rules in a shard.
func usageKeyIn(tag, budgetName string, month time.Time) string {
	return tag + ":usage:" + budgetName + ":" + budget.MonthKey(month)
}

// servicesKeyIn is a hash of the fleet's month per rule and service, fields
// "<rule>:<service>": of requests, or of sampled traces; each holds at most
// store.MaxFleetPairs.
func servicesKeyIn(tag string, month time.Time, sampled bool) string {
	k := tag + ":usage:" + store.FleetUsage + ":" + budget.MonthKey(month) + ":services"
	if sampled {
		k += "-sampled"
	}
	return k
}
