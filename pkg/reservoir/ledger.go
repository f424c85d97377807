package reservoir

import (
	"math"
	"time"
)

// Ledger describes how a rule's fleet-wide request rate, and the quotas
// handed out of its reservoir, are kept with storage that depends on time,
// never on the number of clients.
//
// Time is cut into buckets one report interval long. Each report adds the
// client's request rate, and the quota it is granted, to the bucket of the
// time it arrived, and retracts the client's previous figures from the bucket
// they went into, as named by the Receipt handed back with the previous
// quota. So the live buckets always add up to the sum of every reporting
// client's latest rate, and to the sum of the quotas that clients may still
// hold: exact, whatever the phases of the reports and however skewed the
// traffic. A client that stops reporting is never retracted, and drops out
// when its bucket ages out after Retain intervals (its quota expired before).
//
// A new quota is the client's proportional share of the reservoir, but never
// more than the reservoir less the quotas outstanding (see Apply), so the
// quotas that clients hold never add up to more than the reservoir: not at a
// cold start, when the first client to report sees a fleet made of itself,
// nor after an outage of the store. A client's first quota (a report with
// no previous claim) is also at most twice its own rate (FirstQuota), so
// that at a cold start the first reporters do not take all of R, sized on
// a fleet of a few, when they cannot spend it.
type Ledger struct {
	// Interval is the bucket length and the clients' report interval.
	Interval time.Duration
	// Retain is how many buckets, the current one included, hold live
	// contributions. It must exceed one so that a report that arrives a little
	// late still finds its predecessor live, and a quota must expire within
	// Retain-1 intervals of its grant so that the bucket counting it outlives
	// it.
	Retain int
}

// NewLedger returns the ledger of a control plane whose clients report every
// interval: three live buckets, so that a report that comes up to one
// interval late still finds its predecessor live, and a quota, which lasts
// two intervals (QuotaLifetime), is counted for as long as it lasts.
func NewLedger(interval time.Duration) Ledger { return Ledger{Interval: interval, Retain: 3} }

// QuotaLifetime is how long a quota lasts after the report it answers: two
// intervals, so that one report that comes late or is lost costs no client
// its quota.
func (l Ledger) QuotaLifetime() time.Duration { return time.Duration(l.Retain-1) * l.Interval }

// Bucket returns the index of the bucket that t falls in.
func (l Ledger) Bucket(t time.Time) int64 { return t.UnixNano() / int64(l.Interval) }

// Live reports whether bucket still holds live contributions at now.
//
// The bucket after now's counts as live too: replicas' clocks differ by a
// little, and one that is ahead writes into the next bucket just before the
// others reach it; its contributions must count, and must not be dropped as
// stale, on every replica.
func (l Ledger) Live(bucket int64, now time.Time) bool {
	return l.liveAt(bucket, l.Bucket(now))
}

func (l Ledger) liveAt(bucket, cur int64) bool {
	return bucket <= cur+1 && bucket > cur-int64(l.Retain)
}

// TTL is how long storage must keep a ledger after its last write: long
// enough to outlast an outage of the store, so that the quotas granted
// before it are still known when it ends (see Account.Reserve), and at least
// as long as its buckets live.
func (l Ledger) TTL() time.Duration {
	return max(time.Duration(l.Retain+1)*l.Interval, MaxOutage)
}

// MaxOutage is the longest outage of the store after which a ledger still
// knows what it had granted before. After a longer one (or if the store lost
// its data) the quotas that replicas renewed meanwhile are assumed to add up
// to the whole reservoir until they have expired or come back.
const MaxOutage = 15 * time.Minute

// Receipt records one client's contribution to one rule's ledger — its
// request rate, its sampled rate and the quota it was granted, in the bucket
// of its report — so that its next report can retract it.
type Receipt struct {
	Bucket int64
	Rate   float64
	Quota  float64
	// Sampled is the client's sampled traces per second; the ledger sums
	// it as it sums rates, for the fleet's sampled rate.
	Sampled float64
	// Applied is the rule version (rules.Rule.RulesVersion) under which
	// the report counted the client as running the rule as it is (see
	// Update.Applied); 0: it did not.
	Applied int64
}

// Account is one rule's ledger as a store keeps it. The zero value is a
// ledger never written.
type Account struct {
	Rates  map[int64]float64 // bucket → sum of request rates
	Quotas map[int64]float64 // bucket → sum of quotas granted
	// Sampled sums sampled rates as Rates sums request rates, and Clients
	// counts the clients whose latest report is in each bucket: a client's
	// report adds one to its bucket and its receipt takes the one out of the
	// previous, so the live buckets count each reporting client once.
	Sampled map[int64]float64
	Clients map[int64]int64
	// Applied counts, as Clients does, the clients whose latest report
	// said they run the rule as it was at AppliedVersion (its
	// RulesVersion): the newest version of the rule a report named. A
	// newer one starts the counts afresh, so they never count a client on
	// an edit it has not applied; the old counts are no use after it.
	Applied        map[int64]int64
	AppliedVersion int64
	// Last is the newest bucket a report was written to; Written says
	// whether there was one.
	Last    int64
	Written bool
	// Reserve stands for quotas that clients may hold although no live
	// bucket counts them any more: those granted before an outage of the
	// store, which replicas kept renewing from memory while it lasted. It
	// is created when the first report after the outage finds that no
	// report was written during it, lives while ReserveBucket (the bucket
	// it was created in) is live, and shrinks as those clients' receipts,
	// of buckets from ReserveFrom on, come back.
	Reserve       float64
	ReserveBucket int64
	ReserveFrom   int64
}

// Update is one client's report for the rule, as a store applies it.
type Update struct {
	// Add is the client's request rate now, in the bucket of the report;
	// its Quota is ignored: Apply decides it, in the bucket of now.
	Add Receipt
	// Reservoir is the rule's reservoir R, in traces per second; a batch
	// grants quotas of the largest its updates give. An update with none,
	// no rates, no Retract and no Client is a read, which changes nothing:
	// the budget controller and the fleet status read the ledger this way.
	Reservoir float64
	// Retract is the client's previous contribution, or nil.
	Retract *Receipt
	// Client marks one client's report: the client counts as an instance
	// in Add's bucket, and no longer in Retract's. Reads leave it unset.
	Client bool
	// RuleVersion is the rule's RulesVersion as the replica knows it, and
	// Applied says that the client runs it: its report says it applied
	// that rules version or a later one (as go-control-plane's ACK does).
	// The client then counts in Account.Applied. A read's RuleVersion is
	// the version whose count it asks for (Totals.AppliedAt).
	RuleVersion int64
	Applied     bool
}

// Apply applies a batch of updates to a at now and returns the fleet rate
// after all of them (the sum of the live rate buckets) and each update's
// quota. downSince, when not zero, says that the replica sending the batch
// could not reach the store from then until a moment ago, and renewed the
// quotas of its clients meanwhile.
//
// Quotas are granted in order (Grants): each is the client's share of the
// reservoir in proportion to its rate, R × rate / fleet rate, but at most
// what is left of R once the quotas outstanding are counted — those of live
// buckets, and the reserve — after this batch's retractions. So the quotas outstanding
// never add up to more than R. An update without Retract (a new chain: a
// client's first report) gets a first quota, at most FirstQuotaHeadroom
// times its rate (FirstQuota). The first clients to report after a reset
// (whose fleet looks like themselves) get that of what is free, the next
// ones what is left, and as each client reports again, once the fleet rate
// is known, it gives back what it holds beyond its share: within two
// intervals every client holds its proportional share.
//
// A store calls Apply under whatever lock makes a batch atomic; its Lua twin
// in the Redis store must stay in step with it, and storetest checks both.
func (l Ledger) Apply(a *Account, now, downSince time.Time, ups []Update) (fleet float64, grants []float64) {
	fleet, grants, _ = l.ApplyTotals(a, now, downSince, ups)
	return fleet, grants
}

// ApplyTotals is Apply, and returns Totals(a, now) after it as well, summed
// as Apply goes through a's buckets rather than in a second pass over them
// (on the embedded store, a report's path; issue 17).
func (l Ledger) ApplyTotals(a *Account, now, downSince time.Time, ups []Update) (fleet float64, grants []float64, t Totals) {
	if a.Rates == nil {
		a.Rates = map[int64]float64{}
	}
	if a.Quotas == nil {
		a.Quotas = map[int64]float64{}
	}
	if a.Sampled == nil {
		a.Sampled = map[int64]float64{}
	}
	if a.Clients == nil {
		a.Clients = map[int64]int64{}
	}
	if a.Applied == nil {
		a.Applied = map[int64]int64{}
	}
	cur := l.Bucket(now)
	var reservoir float64 // the largest R of the batch
	writes := false       // anything but reads
	var version int64     // the newest rule version of the batch
	for _, u := range ups {
		reservoir = max(reservoir, u.Reservoir)
		writes = writes || u.Reservoir > 0 || u.Add.Rate != 0 || u.Add.Sampled != 0 || u.Retract != nil || u.Client
		version = max(version, u.RuleVersion)
	}
	if writes && version > a.AppliedVersion {
		clear(a.Applied) // counts of an older version of the rule
		a.AppliedVersion = version
	}
	if reservoir > 0 && !downSince.IsZero() {
		l.reserveAfterOutage(a, cur, l.Bucket(downSince), reservoir)
	}
	reserveLive := a.Reserve > 0 && l.liveAt(a.ReserveBucket, cur)
	for _, u := range ups {
		if u.Add.Rate != 0 {
			a.Rates[u.Add.Bucket] += u.Add.Rate
		}
		if u.Add.Sampled != 0 {
			a.Sampled[u.Add.Bucket] += u.Add.Sampled
		}
		if u.Client {
			a.Clients[u.Add.Bucket]++
			if u.Applied && u.RuleVersion == a.AppliedVersion {
				a.Applied[u.Add.Bucket]++
			}
		}
		r := u.Retract
		switch {
		case r == nil:
		case l.liveAt(r.Bucket, cur):
			if _, ok := a.Rates[r.Bucket]; ok {
				a.Rates[r.Bucket] = max(0, a.Rates[r.Bucket]-r.Rate)
			}
			if _, ok := a.Quotas[r.Bucket]; ok {
				a.Quotas[r.Bucket] = max(0, a.Quotas[r.Bucket]-r.Quota)
			}
			if _, ok := a.Sampled[r.Bucket]; ok {
				a.Sampled[r.Bucket] = max(0, a.Sampled[r.Bucket]-r.Sampled)
			}
			if _, ok := a.Clients[r.Bucket]; ok && u.Client {
				a.Clients[r.Bucket] = max(0, a.Clients[r.Bucket]-1)
			}
			if _, ok := a.Applied[r.Bucket]; ok && u.Client && r.Applied != 0 && r.Applied == a.AppliedVersion {
				a.Applied[r.Bucket] = max(0, a.Applied[r.Bucket]-1)
			}
		case reserveLive && r.Bucket >= a.ReserveFrom && r.Bucket < a.ReserveBucket:
			// A client whose quota the reserve stands for: it holds the
			// quota no longer, or is about to be granted a new one.
			a.Reserve = max(0, a.Reserve-r.Quota)
		}
	}
	var outstanding float64
	for b, s := range a.Rates {
		if l.liveAt(b, cur) {
			fleet += s
		} else if writes {
			delete(a.Rates, b)
		}
	}
	for b, q := range a.Quotas {
		if l.liveAt(b, cur) {
			outstanding += q
		} else if writes {
			delete(a.Quotas, b)
		}
	}
	if writes {
		for b, s := range a.Sampled {
			if l.liveAt(b, cur) {
				t.Sampled += s
			} else {
				delete(a.Sampled, b)
			}
		}
		for b, n := range a.Clients {
			if l.liveAt(b, cur) {
				t.Instances += n
			} else {
				delete(a.Clients, b)
			}
		}
		for b, n := range a.Applied {
			if l.liveAt(b, cur) {
				t.Applied += n
			} else {
				delete(a.Applied, b)
			}
		}
	}
	if reserveLive {
		outstanding += a.Reserve
	} else if writes {
		a.Reserve = 0
	}
	// Quotas in order, each within what the ones before it left; a client
	// without a previous claim gets a first quota (FirstQuota).
	grants = make([]float64, len(ups))
	top := fleet
	for _, u := range ups {
		top = fleetWith(top, u.Add.Rate)
	}
	var granted float64
	for i, u := range ups {
		grants[i] = grant(reservoir, top, outstanding+granted, u.Add.Rate, u.Retract == nil)
		granted += grants[i]
	}
	if granted > 0 {
		a.Quotas[cur] += granted
	}
	if writes && (!a.Written || a.Last < cur) {
		a.Last, a.Written = cur, true
	}
	if !writes {
		// Nothing went through the other buckets.
		return fleet, grants, l.Totals(a, now)
	}
	// Every bucket of a is live now; the batch's grants went to cur's.
	t.Rate, t.Quota, t.AppliedVersion = fleet, outstanding+granted, a.AppliedVersion
	return fleet, grants, t
}

// Totals is what a rule's ledger says of its fleet at one moment.
type Totals struct {
	// Rate is the fleet's request rate and Sampled its sampled rate, per
	// second: the sums of every reporting client's latest figures.
	Rate, Sampled float64
	// Instances is the number of clients whose latest report is live.
	Instances int64
	// Quota is the sum of the quotas that clients may hold, the reserve
	// included: never more than the reservoir.
	Quota float64
	// Applied is how many of the Instances run the rule as it was at
	// AppliedVersion (Account.Applied).
	Applied        int64
	AppliedVersion int64
}

// AppliedAt is how many instances run the rule as it is at version (its
// RulesVersion) or later: none if the ledger counts an older one.
func (t Totals) AppliedAt(version int64) int64 {
	if t.AppliedVersion < version {
		return 0
	}
	return t.Applied
}

// Totals returns a's live sums at now. It changes nothing.
func (l Ledger) Totals(a *Account, now time.Time) Totals {
	cur := l.Bucket(now)
	var t Totals
	for b, s := range a.Rates {
		if l.liveAt(b, cur) {
			t.Rate += s
		}
	}
	for b, s := range a.Sampled {
		if l.liveAt(b, cur) {
			t.Sampled += s
		}
	}
	for b, n := range a.Clients {
		if l.liveAt(b, cur) {
			t.Instances += n
		}
	}
	for b, n := range a.Applied {
		if l.liveAt(b, cur) {
			t.Applied += n
		}
	}
	t.AppliedVersion = a.AppliedVersion
	for b, q := range a.Quotas {
		if l.liveAt(b, cur) {
			t.Quota += q
		}
	}
	if a.Reserve > 0 && l.liveAt(a.ReserveBucket, cur) {
		t.Quota += a.Reserve
	}
	return t
}

// Grants returns the quotas of clients reporting rates, in order, of a
// reservoir r with a fleet rate of fleet and outstanding quotas already
// handed out: each its share (its first quota if first), within what the
// ones before it left. (The fleet rate includes the batch's rates; were it
// below one of them, that rate stands for it.) So they add up to
// min(Σ shares, r − outstanding), which is what the Redis script records
// without going through them one by one (the first reports' shares summed
// as min(r / fleet, FirstQuotaHeadroom) × Σ their rates); the store then
// calls Grants on the sums the script returns.
//
// first[i] says that rates[i] is a first report (FirstQuota); first may be
// nil: none is.
func Grants(r, fleet, outstanding float64, rates []float64, first []bool) []float64 {
	for _, rate := range rates {
		fleet = fleetWith(fleet, rate)
	}
	grants := make([]float64, len(rates))
	for i, rate := range rates {
		grants[i] = grant(r, fleet, outstanding, rate, i < len(first) && first[i])
		outstanding += grants[i]
	}
	return grants
}

// fleetWith is the fleet rate a batch's grants use: the ledger's, or one of
// the batch's rates if that is larger (only rounding makes it so).
func fleetWith(fleet, rate float64) float64 {
	if usable(rate) {
		return max(fleet, rate)
	}
	return fleet
}

// grant is one quota of Grants: the client's share, a first quota if first,
// within what outstanding leaves of r.
func grant(r, fleet, outstanding, rate float64, first bool) float64 {
	share := Quota(r, rate, fleet)
	if first {
		share = FirstQuota(share, rate)
	}
	return Grant(r, share, outstanding)
}

// FirstQuotaHeadroom is how many times its own request rate a client's first
// quota may be (FirstQuota).
const FirstQuotaHeadroom = 2

// FirstQuota is the quota of a first report (an Update without Retract: a
// new chain, such as a client that has just started) whose share of the
// reservoir is share and whose request rate is rate: its share, but at most
// FirstQuotaHeadroom times its rate. Later quotas are the share alone.
//
// Why: a share is R × rate / fleet rate, and at a cold start the fleet rate
// the ledger knows is that of the few clients that have reported yet, so the
// first of them get shares far above their rates — all of R for a first
// client of 5 requests a second — that they cannot spend, while the rest of
// the fleet, reporting a moment later, finds nothing left until those give
// it back an interval on. The cap binds only while the fleet rate the ledger
// knows (the batch's included) is below R / FirstQuotaHeadroom: a fleet that
// could not spend R even at twice its rate. Then each new client holds room
// for its traffic to double within its first interval, and what it could not
// spend stays free for the clients reporting next; once the known fleet can
// spend R, shares are below the cap and nothing changes. A burst beyond
// twice its first rate finds no room until the client's next report, one
// interval on, whose share is uncapped (a cap on every quota took that room
// at every interval). A floor from the ledger's instance count, such as
// R / (instances + 1), was left out: at a cold start it is R or R / 2 for the
// first reporters, and about the share itself for a client of average rate,
// so it would undo the cap where the cap is needed.
func FirstQuota(share, rate float64) float64 {
	if !usable(rate) {
		return 0
	}
	return min(share, FirstQuotaHeadroom*rate)
}

// reserveAfterOutage creates the reserve when the first report after an
// outage of the store, from bucket down on, finds that no report was
// written since: the quotas granted before it, which replicas may have
// renewed meanwhile, are in buckets that are no longer live. A ledger that
// was written during the outage (another replica reached the store) or that
// has no gap needs nothing; one that is gone (an outage longer than
// MaxOutage, or a store that lost its data) is assumed to have handed out
// all of reservoir.
func (l Ledger) reserveAfterOutage(a *Account, cur, down int64, reservoir float64) {
	switch {
	case !a.Written:
		a.Reserve, a.ReserveBucket, a.ReserveFrom = reservoir, cur, math.MinInt64
	case a.Last < cur-1 && a.Last >= down-1:
		// What was outstanding when the ledger was last written, and is not
		// live any more.
		var held float64
		for b, q := range a.Quotas {
			if l.liveAt(b, a.Last) && !l.liveAt(b, cur) {
				held += q
			}
		}
		if a.Reserve > 0 && l.liveAt(a.ReserveBucket, a.Last) && !l.liveAt(a.ReserveBucket, cur) {
			held += a.Reserve
		}
		a.Reserve, a.ReserveBucket, a.ReserveFrom = held, cur, a.Last-int64(l.Retain)+1
	}
}
