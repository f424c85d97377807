package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tracesampling/controlplane/internal/receipt"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

// fleetRates returns the fleet rates of a batch's results.
func fleetRates(rs []store.RateResult) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = r.Fleet
	}
	return out
}

// ledgerTest drives one rule ledger or more through a store and its peer.
type ledgerTest struct {
	t     *testing.T
	clk   *clock
	l     reservoir.Ledger
	down  time.Time // DownSince of the batches sent
	s     store.Store
	other store.Store
}

func newLedgerTest(t *testing.T, b Backend) *ledgerTest {
	clk := newClock()
	s := open(t, b, clk)
	return &ledgerTest{t: t, clk: clk, l: reservoir.Ledger{Interval: 10 * time.Second, Retain: 3}, s: s, other: peer(t, b, s, clk)}
}

// add is a report of rate for rule with a reservoir of 8, retracting prev.
func (lt *ledgerTest) add(rule string, rate float64, prev *reservoir.Receipt) store.RateUpdate {
	return store.RateUpdate{Rule: rule, Add: reservoir.Receipt{Bucket: lt.l.Bucket(lt.clk.Now()), Rate: rate}, Reservoir: 8, Retract: prev}
}

// record sends one batch to st and returns its results.
func (lt *ledgerTest) record(st store.Store, updates ...store.RateUpdate) []store.RateResult {
	lt.t.Helper()
	got, err := st.RecordReports(context.Background(), store.ReportBatch{Now: lt.clk.Now(), Ledger: lt.l, Rates: updates, DownSince: lt.down})
	if err != nil {
		lt.t.Fatal(err)
	}
	if len(got) != len(updates) {
		lt.t.Fatalf("%d results for %d updates", len(got), len(updates))
	}
	return got
}

// check compares results with pairs of fleet rate and quota.
func (lt *ledgerTest) check(what string, got []store.RateResult, want ...float64) {
	lt.t.Helper()
	var w []store.RateResult
	for i := 0; i+1 < len(want); i += 2 {
		w = append(w, store.RateResult{Fleet: want[i], Quota: want[i+1]})
	}
	if diff := cmp.Diff(w, got, cmpopts.EquateApprox(0, 1e-9), cmpopts.IgnoreFields(store.RateResult{}, "Sampled", "Instances", "Granted")); diff != "" {
		lt.t.Errorf("%s: fleet rates and quotas (-want +got):\n%s", what, diff)
	}
}

// receipt is what the client of u holds after r.
func receiptOf(u store.RateUpdate, r store.RateResult) *reservoir.Receipt {
	return &reservoir.Receipt{Bucket: u.Add.Bucket, Rate: u.Add.Rate, Quota: r.Quota}
}

// testLedger checks the fleet ledgers: adds and retractions, sums per rule
// across a batch and across store instances, quotas within what is left of
// the reservoir, floors at zero, and buckets that age out.
func testLedger(t *testing.T, b Backend) {
	lt := newLedgerTest(t, b)
	s, other := lt.s, lt.other

	a1 := lt.add("a", 30, nil)
	r := lt.record(s, a1)
	lt.check("first report: all of the reservoir", r, 30, 8)
	ra := receiptOf(a1, r[0])
	// Another replica's reports on the same rule, and one on another rule,
	// in one batch: each update gets its rule's fleet rate after the whole
	// batch, and quotas go in order while some of the reservoir is left.
	lt.check("batch", lt.record(other, lt.add("a", 10, nil), lt.add("b", 5, nil), lt.add("a", 1, nil)), 41, 0, 5, 8, 41, 0)
	lt.clk.Add(10 * time.Second)
	// Client a reports again: its old figures are replaced, and it gives
	// back what it held beyond its share, 8×20/31.
	a2 := lt.add("a", 20, ra)
	r = lt.record(s, a2)
	lt.check("replaced", r, 31, 8*20.0/31)
	ra = receiptOf(a2, r[0])
	// A retraction larger than the bucket leaves zero, not less.
	lt.check("floor", lt.record(s, lt.add("b", 0, &reservoir.Receipt{Bucket: lt.l.Bucket(lt.clk.Now()) - 1, Rate: 1e9, Quota: 1e9})), 0, 0)
	// A read (no reservoir) grants nothing and gives nothing back.
	read := store.RateUpdate{Rule: "a", Add: reservoir.Receipt{Bucket: lt.l.Bucket(lt.clk.Now())}}
	lt.check("read", lt.record(s, read), 31, 0)
	// Retracting from a bucket that is no longer live does nothing.
	lt.clk.Add(30 * time.Second)
	lt.check("aged out", lt.record(s, lt.add("a", 7, ra)), 7, 8)
	// A replica whose clock runs a little ahead writes into the next bucket;
	// the others count it and do not drop it.
	ahead := lt.clk.Now().Add(lt.l.Interval)
	if _, err := other.RecordReports(context.Background(), store.ReportBatch{Now: ahead, Ledger: lt.l, Rates: []store.RateUpdate{{Rule: "c", Add: reservoir.Receipt{Bucket: lt.l.Bucket(ahead), Rate: 1000}, Reservoir: 8}}}); err != nil {
		t.Fatal(err)
	}
	lt.check("skewed replica", lt.record(s, lt.add("c", 1, nil)), 1001, 0)
	lt.check("skewed replica, again", lt.record(s, lt.add("c", 1, nil)), 1002, 0)
	if got, err := s.RecordReports(context.Background(), store.ReportBatch{Now: lt.clk.Now(), Ledger: lt.l}); err != nil || len(got) != 0 {
		t.Errorf("empty batch: %v, %v", got, err)
	}
}

// testLedgerOutage: the first report after an outage of the store that
// nobody wrote through finds a reserve for the quotas granted before it
// (which replicas renewed meanwhile); the clients' receipts drain it. A ledger
// that is gone altogether is assumed to have handed out all of R.
func testLedgerOutage(t *testing.T, b Backend) {
	lt := newLedgerTest(t, b)
	s, other := lt.s, lt.other
	ua := lt.add("a", 30, nil)
	r := lt.record(s, ua)
	lt.check("a alone", r, 30, 8)
	ra := receiptOf(ua, r[0])
	ub := lt.add("a", 10, nil)
	r = lt.record(other, ub)
	lt.check("b: nothing left", r, 40, 0)
	rb := receiptOf(ub, r[0])
	lt.clk.Add(10 * time.Second)
	ua = lt.add("a", 30, ra)
	ub = lt.add("a", 10, rb)
	r = lt.record(s, ua, ub)
	lt.check("steady", r, 40, 6, 40, 2)
	ra, rb = receiptOf(ua, r[0]), receiptOf(ub, r[1])

	// The store is out of reach for a minute.
	lt.down = lt.clk.Now().Add(time.Second)
	lt.clk.Add(time.Minute)
	uc := lt.add("a", 20, nil)
	r = lt.record(other, uc)
	lt.check("a new client after the outage", r, 20, 0)
	rc := receiptOf(uc, r[0])
	r = lt.record(s, lt.add("a", 30, ra))
	lt.check("a back: its 6 leave the reserve", r, 50, 4.8)
	r = lt.record(other, lt.add("a", 10, rb))
	lt.check("b back: the reserve is empty", r, 60, 8.0*10/60)
	lt.clk.Add(10 * time.Second)
	lt.down = time.Time{}
	r = lt.record(s, lt.add("a", 20, rc))
	lt.check("c again", r, 60, 8-4.8-8.0*10/60)

	// A rule whose ledger the store does not have: all of R is reserved.
	lt.down = lt.clk.Now().Add(-time.Minute)
	lt.check("lost ledger", lt.record(s, lt.add("lost", 30, nil)), 30, 0)
	// Without an outage, a new ledger has all of R free.
	lt.down = time.Time{}
	lt.check("new ledger", lt.record(s, lt.add("new", 30, nil)), 30, 8)
}

// testLedgerFirstQuota: a report without a previous claim (a new chain)
// gets its share of R, but at most reservoir.FirstQuotaHeadroom times its
// rate, so that the first clients of a cold start, whose fleet looks like
// themselves, leave what they cannot spend to the next; a report that
// retracts its claim gets its share, uncapped; the quotas outstanding never
// pass R. A batch mixing both kinds is granted the same on either replica.
func testLedgerFirstQuota(t *testing.T, b Backend) {
	lt := newLedgerTest(t, b)
	s, other := lt.s, lt.other
	granted := func(what string, r []store.RateResult, want float64) {
		t.Helper()
		for i, g := range r {
			if !cmp.Equal(g.Granted, want, cmpopts.EquateApprox(0, 1e-9)) {
				t.Errorf("%s: result %d: quotas outstanding %v, want %v", what, i, g.Granted, want)
			}
		}
	}
	h := float64(reservoir.FirstQuotaHeadroom)
	ux := lt.add("a", 1, nil)
	r := lt.record(s, ux)
	lt.check("first client of 1/s: not all of R", r, 1, h*1)
	granted("first client", r, h*1)
	rx := receiptOf(ux, r[0])
	r = lt.record(other, lt.add("a", 0.5, nil), lt.add("a", 1, nil))
	lt.check("two more in one batch, each capped", r, 2.5, h*0.5, 2.5, h*1)
	granted("two more", r, h*2.5)
	lt.clk.Add(10 * time.Second)
	// x reports again (its 2 given back) beside a new client: x gets its
	// share, 8×1/3, above twice its rate; the new one twice its rate.
	r = lt.record(s, lt.add("a", 1, rx), lt.add("a", 0.5, nil))
	lt.check("again, beside a new client", r, 3, 8.0/3, 3, h*0.5)
	granted("again", r, h*1.5+8.0/3+h*0.5)
	// A new client whose share is below the cap gets its share, within
	// what is left: the quotas outstanding reach R, and no more.
	r = lt.record(other, lt.add("a", 10, nil))
	lt.check("share under the cap, what is left", r, 13, 8-(h*1.5+8.0/3+h*0.5))
	granted("full", r, 8)
	r = lt.record(s, lt.add("a", 1, nil))
	lt.check("nothing left", r, 14, 0)
	granted("still full", r, 8)
}

// testLedgerFleet: the ledger counts each reporting client once, as long as
// its latest report is live, whichever replica the reports reach and however
// many of them a batch holds; it sums the clients' sampled rates as it sums
// their request rates; and it says how much of the reservoir clients hold.
// Reads count nobody.
func testLedgerFleet(t *testing.T, b Backend) {
	lt := newLedgerTest(t, b)
	s, other := lt.s, lt.other
	client := func(rule string, rate, sampled float64, prev *reservoir.Receipt) store.RateUpdate {
		u := lt.add(rule, rate, prev)
		u.Add.Sampled, u.Client = sampled, true
		return u
	}
	receipt := func(u store.RateUpdate, r store.RateResult) *reservoir.Receipt {
		rc := receiptOf(u, r)
		rc.Sampled = u.Add.Sampled
		return rc
	}
	check := func(what string, got []store.RateResult, want store.RateResult) {
		t.Helper()
		for i, g := range got {
			g.Quota = 0 // each client's own, checked by the other clauses
			if diff := cmp.Diff(want, g, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
				t.Errorf("%s: result %d (-want +got):\n%s", what, i, diff)
			}
		}
	}
	read := store.RateUpdate{Rule: "a", Add: reservoir.Receipt{Bucket: lt.l.Bucket(lt.clk.Now())}}

	u1 := client("a", 30, 3, nil)
	r := lt.record(s, u1)
	check("first client", r, store.RateResult{Fleet: 30, Sampled: 3, Instances: 1, Granted: 8})
	r1 := receipt(u1, r[0])
	// Two more on another replica, in one batch, and a client of another
	// rule: each rule counts its own.
	u2, u3 := client("a", 10, 1, nil), client("a", 0, 0, nil)
	r = lt.record(other, u2, u3, client("b", 5, 5, nil))
	check("a batch of two", r[:2], store.RateResult{Fleet: 40, Sampled: 4, Instances: 3, Granted: 8})
	check("another rule", r[2:], store.RateResult{Fleet: 5, Sampled: 5, Instances: 1, Granted: 8})
	r2, r3 := receipt(u2, r[0]), receipt(u3, r[1])
	check("read", lt.record(s, read), store.RateResult{Fleet: 40, Sampled: 4, Instances: 3, Granted: 8})

	// Each reports again, in the same bucket or the next, with its receipt:
	// still three clients, their new figures replacing the old.
	u1 = client("a", 20, 2, r1)
	r = lt.record(other, u1)
	// It gave back its 8 and holds its share, 8×20/30.
	check("client 1 again, same bucket", r, store.RateResult{Fleet: 30, Sampled: 3, Instances: 3, Granted: 8 * 20.0 / 30})
	r1 = receipt(u1, r[0])
	lt.clk.Add(10 * time.Second)
	u1, u2 = client("a", 20, 2, r1), client("a", 10, 1, r2)
	r = lt.record(s, u1, u2)
	check("clients 1 and 2 a bucket later", r, store.RateResult{Fleet: 30, Sampled: 3, Instances: 3, Granted: 8})
	r1, r2 = receipt(u1, r[0]), receipt(u2, r[1])
	u3 = client("a", 0, 0, r3)
	r = lt.record(other, u3)
	check("client 3, no traffic, still an instance", r, store.RateResult{Fleet: 30, Sampled: 3, Instances: 3, Granted: 8})

	// Client 3 stops; once its last report is no longer live it is no longer
	// counted, while the others go on.
	for range 3 {
		lt.clk.Add(10 * time.Second)
		u1, u2 = client("a", 20, 2, r1), client("a", 10, 1, r2)
		r = lt.record(s, u1, u2)
		r1, r2 = receipt(u1, r[0]), receipt(u2, r[1])
	}
	check("client 3 gone", r, store.RateResult{Fleet: 30, Sampled: 3, Instances: 2, Granted: 8})
	// Everyone stops: the ledger ages out.
	lt.clk.Add(40 * time.Second)
	check("all gone", lt.record(other, read), store.RateResult{})
}

// testReceiptKeys: the first call makes the keys; every replica gets the
// same ones, even when they race; they rotate in two steps.
func testReceiptKeys(t *testing.T, b Backend) {
	clk := newClock()
	s := open(t, b, clk)
	other := peer(t, b, s, clk)
	ctx := context.Background()
	now := clk.Now()
	sets := make([]receipt.KeySet, 8)
	var wg sync.WaitGroup
	for i := range sets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := s
			if i%2 == 1 {
				st = other
			}
			var err error
			if sets[i], err = st.ReceiptKeys(ctx, now); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	first := sets[0]
	if len(first.Current.Secret) != 32 || first.Next != nil || first.Previous != nil {
		t.Fatalf("first key set %+v", first)
	}
	for i, set := range sets {
		if diff := cmp.Diff(first, set, cmpopts.EquateApproxTime(time.Millisecond)); diff != "" {
			t.Errorf("call %d got other keys (-first +got):\n%s", i, diff)
		}
	}
	mustKeys := func(st store.Store, at time.Time) receipt.KeySet {
		t.Helper()
		set, err := st.ReceiptKeys(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		return set
	}
	due := now.Add(receipt.RotateEvery)
	rotated := mustKeys(other, due)
	if rotated.Next == nil || rotated.Current.ID != first.Current.ID {
		t.Fatalf("after RotateEvery: %+v, want the current key and a next one", rotated)
	}
	if again := mustKeys(s, due.Add(time.Second)); again.Next == nil || again.Next.ID != rotated.Next.ID {
		t.Errorf("another replica got %+v, want the same next key", again)
	}
	promoted := mustKeys(s, due.Add(receipt.Promote))
	if promoted.Current.ID != rotated.Next.ID || promoted.Previous == nil || promoted.Previous.ID != first.Current.ID {
		t.Errorf("after Promote: %+v, want the next key current and the first one previous", promoted)
	}
}

// testLedgerApplied: the ledger counts the clients that run a rule as it is
// (their report names a rules version at or after the rule's last edit),
// retracts them with their receipts as it does instances, starts afresh
// when a report names a newer version of the rule, and answers a read of
// an older version of the rule as well as of the one it counts, but none
// of a newer one.
func testLedgerApplied(t *testing.T, b Backend) {
	lt := newLedgerTest(t, b)
	s, other := lt.s, lt.other
	client := func(version int64, applied bool, prev *reservoir.Receipt) store.RateUpdate {
		u := lt.add("a", 10, prev)
		u.Client, u.RuleVersion, u.Applied = true, version, applied
		return u
	}
	receipt := func(u store.RateUpdate, r store.RateResult) *reservoir.Receipt {
		rc := receiptOf(u, r)
		if u.Applied {
			rc.Applied = u.RuleVersion
		}
		return rc
	}
	read := func(st store.Store, version int64) store.RateResult {
		t.Helper()
		return lt.record(st, store.RateUpdate{Rule: "a", Add: reservoir.Receipt{Bucket: lt.l.Bucket(lt.clk.Now())}, RuleVersion: version})[0]
	}
	check := func(what string, got store.RateResult, instances, applied int64) {
		t.Helper()
		if got.Instances != instances || got.Applied != applied {
			t.Errorf("%s: %d instances, %d run the rule; want %d, %d", what, got.Instances, got.Applied, instances, applied)
		}
	}
	const v1, v2 = 1_772_366_400_000_001, 1_772_366_400_000_002 // rules versions as stores make them

	// Three clients at v1, one of them not (yet) running it.
	u1, u2, u3 := client(v1, true, nil), client(v1, true, nil), client(v1, false, nil)
	r := lt.record(s, u1, u2)
	check("two that run it", r[0], 2, 2)
	r1, r2 := receipt(u1, r[0]), receipt(u2, r[1])
	r = lt.record(other, u3)
	check("and one that does not", r[0], 3, 2)
	r3 := receipt(u3, r[0])
	check("a read", read(s, v1), 3, 2)
	check("a read of an older version", read(other, v1-1), 3, 2)

	// Reporting again replaces each client's figure: client 3 has applied
	// v1 now, client 1 counted once however often it reports.
	lt.clk.Add(10 * time.Second)
	u3, u1 = client(v1, true, r3), client(v1, true, r1)
	r = lt.record(other, u3, u1)
	check("client 3 applied it", r[0], 3, 3)
	r3, r1 = receipt(u3, r[0]), receipt(u1, r[1])

	// The rule is edited at v2: a read of v2 counts no client until one
	// reports that it runs v2; the first such report starts afresh, and
	// the receipts of v1 take nothing from the count of v2.
	check("a read of v2 before any report of it", read(s, v2), 3, 0)
	u1 = client(v2, true, r1)
	r = lt.record(s, u1)
	check("client 1 runs v2", r[0], 3, 1)
	r1 = receipt(u1, r[0])
	u2 = client(v2, false, r2)
	r = lt.record(other, u2)
	check("client 2 still runs v1", r[0], 3, 1)
	r2 = receipt(u2, r[0])
	check("a read of v1 counts v2's", read(s, v1), 3, 1)
	// A replica that does not know of v2 yet counts nothing into it.
	u3 = client(v1, true, r3)
	r = lt.record(s, u3)
	check("a report on a replica behind", r[0], 3, 1)

	// Clients age out of the count as they do of the instances.
	for range 3 {
		lt.clk.Add(10 * time.Second)
		u1 = client(v2, true, r1)
		r = lt.record(s, u1)
		r1 = receipt(u1, r[0])
	}
	check("only client 1 left", r[0], 1, 1)
	_ = r2
}
