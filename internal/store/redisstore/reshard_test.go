package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/pkg/reservoir"
)

// reporter sends, through one store (a replica), the reports of its
// clients: each batch a numbered report per client, billing one request
// of a rule to a budget, and each client's rate of every rule, retracting
// its previous receipt. A batch that fails goes again as it was (same Key,
// same seqs), as the server and the SDK send them again, until it is
// applied.
type reporter struct {
	s       *redisstore.Store
	name    string
	clients int
	rules   []string
	ledger  reservoir.Ledger
	now     time.Time

	seq      uint64
	receipts map[[2]int]reservoir.Receipt // by client and rule
	billed   int64                        // requests acknowledged
	retries  int                          // batches sent again
	partial  int                          // failures that may have landed
	over     []string                     // quotas outstanding over R
}

// reservoirRate is each rule's R in the test.
const reservoirRate = 10

func (r *reporter) batch(n int) store.ReportBatch {
	r.seq++
	b := store.ReportBatch{Now: r.now, Ledger: r.ledger, Key: fmt.Sprintf("%s-%d", r.name, n)}
	bucket := r.ledger.Bucket(r.now)
	for c := range r.clients {
		client := fmt.Sprintf("%s-client-%d", r.name, c)
		rule := r.rules[(c+n)%len(r.rules)]
		b.Sequenced = append(b.Sequenced, store.SequencedUsage{Client: client, Seq: r.seq, Usage: []store.UsageIncrement{
			{Budget: "team", Month: r.now, Hour: 3, Rule: rule, Requests: 1},
		}})
		for i, rule := range r.rules {
			u := store.RateUpdate{Rule: rule, Client: true, Reservoir: reservoirRate, Add: reservoir.Receipt{Bucket: bucket, Rate: 1}}
			if prev, ok := r.receipts[[2]int{c, i}]; ok {
				u.Retract = &prev
			}
			b.Rates = append(b.Rates, u)
		}
	}
	return b
}

// send applies batch n, sending it again until it is.
func (r *reporter) send(ctx context.Context, n int) error {
	b := r.batch(n)
	for {
		res, err := r.s.RecordReports(ctx, b)
		if err == nil {
			for c := range r.clients {
				for i := range r.rules {
					k := c*len(r.rules) + i
					rec := b.Rates[k].Add
					rec.Quota = res[k].Quota
					r.receipts[[2]int{c, i}] = rec
					if res[k].Granted > reservoirRate*(1+1e-9) {
						r.over = append(r.over, fmt.Sprintf("%s batch %d: %s outstanding %v", r.name, n, r.rules[i], res[k].Granted))
					}
				}
			}
			r.billed += int64(r.clients)
			return nil
		}
		if !errors.Is(err, store.ErrUnavailable) || ctx.Err() != nil {
			return fmt.Errorf("%s batch %d: %w", r.name, n, err)
		}
		r.retries++
		if !errors.Is(err, store.ErrNotApplied) {
			r.partial++
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClusterReshard grows a real Cluster from 3 masters to 4 while two
// replicas (two stores) send numbered reports and rates, and lays the
// shards out again: the two race to reshard and one does it; every master
// then holds a shard; both replicas use the new list; the month's usage is
// the sum of what was acknowledged, none lost and none twice; each rule's
// fleet rate is still the two replicas' clients' and its quotas
// outstanding never passed R.
func TestClusterReshard(t *testing.T) {
	cluster := redistest.StartCluster(t)
	ctx := t.Context()
	opts := redisstore.Options{Prefix: "grow", ReplicaWait: testReplicaWait}
	stores := []*redisstore.Store{newStore(t, newClient(t, cluster.URL()), opts), newStore(t, newClient(t, cluster.URL()), opts)}
	straddling := newStore(t, newClient(t, cluster.URL()), redisstore.Options{Prefix: "straddle", ReplicaWait: testReplicaWait})
	if _, err := straddling.ShardCoverage(ctx); err != nil { // lays out 3 shards
		t.Fatal(err)
	}
	now := time.Now()
	l := reservoir.Ledger{Interval: time.Hour, Retain: 3}
	rules := make([]string, 16)
	for i := range rules {
		rules[i] = fmt.Sprintf("rule-%d", i)
	}
	reps := make([]*reporter, len(stores))
	for i, s := range stores {
		reps[i] = &reporter{s: s, name: fmt.Sprintf("r%d", i), clients: 8, rules: rules, ledger: l, now: now, receipts: map[[2]int]reservoir.Receipt{}}
	}
	const before, after = 20, 40 // batches per replica before the reshard starts, and in all
	run := func(from, to int) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, len(reps))
		for i, r := range reps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := from; n < to && errs[i] == nil; n++ {
					errs[i] = r.send(ctx, n)
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		// The quotas the clients hold now, each its last: within R.
		for i, rule := range rules {
			held := 0.0
			for _, r := range reps {
				for c := range r.clients {
					held += r.receipts[[2]int{c, i}].Quota
				}
			}
			if held > reservoirRate*(1+1e-9) {
				t.Errorf("after batch %d: the clients hold quotas of %v for %s, over R = %d", to, held, rule, reservoirRate)
			}
		}
	}
	run(0, before)
	if g := stores[0].Generation(); g != 0 {
		t.Fatalf("generation of a new Cluster's list: %d, want 0", g)
	}
	old := stores[0].ShardTagList()

	added := cluster.AddMaster(t)
	deadline := time.Now().Add(waitTimeout)
	for {
		c, err := stores[0].ShardCoverage(ctx)
		if err == nil && len(c.Masters) == 4 && len(c.Unsharded) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("coverage after adding %s: %+v, %v; want 4 masters, one without a shard", added.Addr(), c, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	testStraddle(t, cluster, straddling)

	// Both replicas reshard at once while both report.
	var wg sync.WaitGroup
	results := make([]redisstore.Reshard, len(stores))
	errs := make([]error, len(stores))
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = s.Reshard(ctx, false)
		}()
	}
	run(before, after)
	wg.Wait()
	did := 0
	for i := range stores {
		switch {
		case errors.Is(errs[i], redisstore.ErrReshardBusy):
		case errs[i] != nil:
			t.Fatalf("replica %d: Reshard: %v", i, errs[i])
		case results[i].To != results[i].From:
			did++
			t.Logf("replica %d resharded: %+v", i, results[i])
		}
	}
	if did != 1 {
		t.Fatalf("%d replicas resharded (%+v, %v), want 1", did, results, errs)
	}

	c, err := stores[1].ShardCoverage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]bool{}
	for _, sh := range c.Shards {
		held[sh[1]] = true
	}
	if len(c.Masters) != 4 || len(c.Shards) != 4 || len(c.Unsharded) != 0 || len(held) != 4 {
		t.Errorf("coverage after the reshard: %+v; want 4 shards, one on each of 4 masters", c)
	}
	for i, s := range stores {
		if g := s.Generation(); g != 1 {
			t.Errorf("replica %d: generation %d after the reshard, want 1", i, g)
		}
	}
	t.Logf("shards %v -> %v", old, stores[0].ShardTagList())

	var billed int64
	for _, r := range reps {
		billed += r.billed
		t.Logf("%s: %d requests billed, %d batches sent again (%d may have landed in part)", r.name, r.billed, r.retries, r.partial)
		for _, o := range r.over {
			t.Error(o)
		}
	}
	for i, s := range stores {
		u, err := s.Usage(ctx, "team", now)
		if err != nil {
			t.Fatal(err)
		}
		if got := u.Requests[3]; got != float64(billed) {
			t.Errorf("replica %d: month's requests %v, want %d billed", i, got, billed)
		}
		var rulesSum int64
		for _, ru := range u.Rules {
			rulesSum += ru.Requests
		}
		if rulesSum != billed {
			t.Errorf("replica %d: rules' requests %d, want %d", i, rulesSum, billed)
		}
	}

	// Each rule's ledger: every client of both replicas at rate 1.
	reads := store.ReportBatch{Now: now, Ledger: l}
	for _, r := range rules {
		reads.Rates = append(reads.Rates, store.RateUpdate{Rule: r, Add: reservoir.Receipt{Bucket: l.Bucket(now)}})
	}
	rates, err := stores[0].RecordReports(ctx, reads)
	if err != nil {
		t.Fatal(err)
	}
	want := float64(len(reps) * reps[0].clients)
	for i, r := range rates {
		if math.Abs(r.Fleet-want) > 1e-9 || r.Instances != int64(want) {
			t.Errorf("%s after the reshard: fleet rate %v of %d clients, want %v of %v", rules[i], r.Fleet, r.Instances, want, want)
		}
	}
}

// testStraddle sends a batch that straddles a reshard's fence (the fence
// is up on every old shard but one, which takes its part), reshards, and
// sends the batch again under its Key, as the server does with a batch
// that failed in part: laid out by the new list, it adds only the parts
// the old shard did not take, so every rule's rate and unnumbered usage
// count once, and every numbered report is billed once (the seqs of the
// clients whose part the old shard took moved with them).
func testStraddle(t *testing.T, cluster *redistest.Cluster, s *redisstore.Store) {
	ctx := t.Context()
	raw := cluster.Client(t)
	now := time.Now()
	l := reservoir.Ledger{Interval: time.Hour, Retain: 3}
	b := store.ReportBatch{Now: now, Ledger: l, Key: "straddling"}
	rules := make([]string, 12)
	for i := range rules {
		rules[i] = fmt.Sprintf("rule-%d", i)
		b.Rates = append(b.Rates, store.RateUpdate{Rule: rules[i], Client: true, Reservoir: reservoirRate, Add: reservoir.Receipt{Bucket: l.Bucket(now), Rate: 1}})
		b.Usage = append(b.Usage, store.UsageIncrement{Budget: "team", Month: now, Hour: 3, Rule: rules[i], Requests: 1})
		b.Sequenced = append(b.Sequenced, store.SequencedUsage{Client: fmt.Sprintf("client-%d", i), Seq: 1,
			Usage: []store.UsageIncrement{{Budget: "numbered", Month: now, Hour: 3, Rule: rules[i], Requests: 1}}})
	}
	open := s.ShardTagOf(rules[0])
	for _, tag := range s.ShardTagList() {
		if tag != open {
			if err := raw.Set(ctx, tag+":fence", 1, 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, err := s.RecordReports(ctx, b)
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrNotApplied) {
		t.Fatalf("a batch across the fence: %v, want ErrUnavailable (applied in part)", err)
	}
	res, err := s.Reshard(ctx, false)
	if err != nil || res.To != 1 {
		t.Fatalf("reshard: %+v, %v; want generation 1", res, err)
	}
	t.Logf("straddling batch's store resharded: %+v", res)
	if _, err := s.RecordReports(ctx, b); err != nil {
		t.Fatalf("the batch sent again after the reshard: %v", err)
	}
	u, err := s.Usage(ctx, "team", now)
	if err != nil {
		t.Fatal(err)
	}
	numbered, err := s.Usage(ctx, "numbered", now)
	if err != nil {
		t.Fatal(err)
	}
	if got := numbered.Requests[3]; got != float64(len(rules)) {
		t.Errorf("straddling batch: %v requests of numbered reports billed, want %d", got, len(rules))
	}
	reads := store.ReportBatch{Now: now, Ledger: l}
	for _, r := range rules {
		reads.Rates = append(reads.Rates, store.RateUpdate{Rule: r, Add: reservoir.Receipt{Bucket: l.Bucket(now)}})
	}
	rates, err := s.RecordReports(ctx, reads)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rules {
		if got := u.Rules[r].Requests; got != 1 {
			t.Errorf("straddling batch: %s billed %d requests, want 1", r, got)
		}
		if rates[i].Fleet != 1 || rates[i].Instances != 1 {
			t.Errorf("straddling batch: %s fleet rate %v of %d clients, want 1 of 1", r, rates[i].Fleet, rates[i].Instances)
		}
	}
}

// TestShardGenerations, on a one-node Cluster: a month counted under one
// generation of the shard list and then another is read whole, by a store
// that starts on the new list and by one that read the old (it notices the
// new list in the same read); a store still on the old list whose batch
// meets a fence lays it out by the new list, and counts it once.
func TestShardGenerations(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{Cluster: true})
	ctx := t.Context()
	raw := srv.ClusterClient(t)
	gen0 := `{"generation":0,"tags":["{gens}","{gens:1.0}","{gens:2.0}"]}`
	if err := raw.Set(ctx, "{gens}:shards", gen0, 0).Err(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rules := make([]string, 12)
	batch := store.ReportBatch{Now: now}
	for i := range rules {
		rules[i] = fmt.Sprintf("rule-%d", i)
		batch.Usage = append(batch.Usage, store.UsageIncrement{Budget: "team", Month: now, Hour: 2, Rule: rules[i], Requests: 1})
	}
	old := newStore(t, srv.ClusterClient(t), redisstore.Options{Prefix: "gens"})
	if _, err := old.RecordReports(ctx, batch); err != nil {
		t.Fatal(err)
	}
	// A reshard to two shards, one of them new, done by hand: the fences
	// up, then the list.
	for _, tag := range []string{"{gens}", "{gens:1.0}", "{gens:2.0}", "{gens:9.0}"} {
		if err := raw.Set(ctx, tag+":fence", 1, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	gen1 := fmt.Sprintf(`{"generation":1,"tags":["{gens}","{gens:9.0}"],"past":[{"generation":0,"tags":["{gens}","{gens:1.0}","{gens:2.0}"],"until":%d}]}`, now.UnixMilli())
	if err := raw.Set(ctx, "{gens}:shards", gen1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	fresh := newStore(t, srv.ClusterClient(t), redisstore.Options{Prefix: "gens"})
	check := func(when string, want int64) {
		t.Helper()
		for name, s := range map[string]*redisstore.Store{"fresh": fresh, "old": old} {
			u, err := s.Usage(ctx, "team", now)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rules {
				if got := u.Rules[r].Requests; got != want {
					t.Errorf("%s, %s store: %s has %d requests, want %d", when, name, r, got, want)
				}
			}
		}
	}
	check("after the reshard", 1)
	if _, err := fresh.RecordReports(ctx, batch); err != nil {
		t.Fatal(err)
	}
	check("after a batch of the new list", 2)

	stale := newStore(t, srv.ClusterClient(t), redisstore.Options{Prefix: "gens"})
	if err := raw.Set(ctx, "{gens}:shards", gen0, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := stale.ShardCoverage(ctx); err != nil { // reads gen 0
		t.Fatal(err)
	}
	if err := raw.Set(ctx, "{gens}:shards", gen1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if g := stale.Generation(); g != 0 {
		t.Fatalf("stale store at generation %d, want 0", g)
	}
	if _, err := stale.RecordReports(ctx, batch); err != nil {
		t.Fatalf("a batch of the old list, fenced: %v", err)
	}
	if g := stale.Generation(); g != 1 {
		t.Errorf("stale store at generation %d after its batch met the fence, want 1", g)
	}
	check("after a fenced batch laid out again", 3)
	keys, err := raw.Keys(ctx, "{gens:9.0}:usage:*").Result()
	if err != nil || len(keys) == 0 {
		t.Errorf("usage keys of the new shard: %q, %v; want some", keys, err)
	}

	// A reshard that fenced the shards at 2 and died: batches fail, saying
	// nothing was applied, the coverage says so, and the next reshard,
	// though every master holds a shard, finishes it.
	for _, tag := range []string{"{gens}", "{gens:9.0}"} {
		if err := raw.Set(ctx, tag+":fence", 2, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	_, err = fresh.RecordReports(ctx, batch) // waits for a new list, a while
	if !errors.Is(err, store.ErrNotApplied) {
		t.Errorf("a batch while the shards are fenced above the list: %v, want ErrNotApplied", err)
	}
	c, err := fresh.ShardCoverage(ctx)
	if err != nil || !c.Stuck || len(c.Unsharded) != 0 {
		t.Fatalf("coverage of a reshard stopped half way: %+v, %v; want Stuck and no master without a shard", c, err)
	}
	res, err := fresh.Reshard(ctx, false)
	if err != nil || res.To != 2 {
		t.Fatalf("reshard after one stopped half way: %+v, %v; want generation 2", res, err)
	}
	if _, err := fresh.RecordReports(ctx, batch); err != nil {
		t.Fatal(err)
	}
	check("after a stopped reshard was finished", 4)
}
