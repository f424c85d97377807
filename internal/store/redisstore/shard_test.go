package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/pkg/reservoir"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// TestShardTags checks each shard's hash tag against Redis's own slot of
// it (CLUSTER KEYSLOT): shard i of n lies in the i-th n-th of the slots, so
// that a Cluster's masters, which redis-cli gives equal runs of slots, hold
// as many shards each.
func TestShardTags(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{Cluster: true})
	c := srv.Client(t)
	for _, n := range []int{1, 2, 3, 16, redisstore.MaxShards} {
		tags, err := redisstore.ShardTags("tsc", n)
		if err != nil || len(tags) != n {
			t.Fatalf("ShardTags(%d) = %d tags, %v", n, len(tags), err)
		}
		if n == 1 {
			if tags[0] != "{tsc}" {
				t.Errorf("one shard: tag %q, want the store's own {tsc}", tags[0])
			}
			continue
		}
		for i, tag := range tags {
			slot, err := c.ClusterKeySlot(t.Context(), tag+":ledger:x").Result()
			if err != nil {
				t.Fatal(err)
			}
			if got := redisstore.KeySlot(strings.Trim(tag, "{}")); int64(got) != slot {
				t.Errorf("%s: KeySlot %d, Redis says %d", tag, got, slot)
			}
			if lo, hi := int64(i*16384/n), int64((i+1)*16384/n); slot < lo || slot >= hi {
				t.Errorf("shard %d of %d: %s in slot %d, want [%d, %d)", i, n, tag, slot, lo, hi)
			}
		}
	}
	for _, n := range []int{0, -1, redisstore.MaxShards + 1} {
		if _, err := redisstore.ShardTags("tsc", n); err == nil {
			t.Errorf("ShardTags(%d) accepted", n)
		}
	}
}

// TestShardListRefused: a Cluster whose list of shards is not one of the
// store's fails the report path as unavailable, saying nothing was applied
// (so that the usage is kept for later), and changes nothing.
func TestShardListRefused(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{Cluster: true})
	ctx := t.Context()
	now := time.Now()
	for _, list := range []string{"garbage", "[]", `["{other}"]`, `["{tsc}", "tsc:1"]`,
		`{"generation":1,"tags":[]}`, `{"generation":-1,"tags":["{tsc}"]}`,
		`{"generation":1,"tags":["{tsc}"],"past":[{"generation":0,"tags":["{other}"]}]}`,
		`{"generation":1,"tags":["{tsc}"],"past":[{"generation":0,"tags":[]}]}`} {
		c := srv.ClusterClient(t)
		if err := c.Set(ctx, "{tsc}:shards", list, 0).Err(); err != nil {
			t.Fatal(err)
		}
		s := newStore(t, c, redisstore.Options{})
		inc := store.UsageIncrement{Budget: "team", Month: now, Hour: 1, Rule: "a", Requests: 1}
		_, err := s.RecordReports(ctx, store.ReportBatch{Now: now, Usage: []store.UsageIncrement{inc}})
		if !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, store.ErrNotApplied) {
			t.Errorf("shards %s: RecordReports: %v, want ErrUnavailable and ErrNotApplied", list, err)
		}
		if _, err := s.Usage(ctx, "team", now); !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("shards %s: Usage: %v, want ErrUnavailable", list, err)
		}
		keys, err := c.Keys(ctx, "*:usage:*").Result()
		if err != nil || len(keys) > 0 {
			t.Errorf("shards %s: usage keys %q (%v), want none", list, keys, err)
		}
	}
}

// testShardsSpread records the reports of many rules, with usage of one
// budget, on a Cluster of several masters: the rules' ledgers and the
// budget's month land on every master, the rules on one, and the budget's
// usage reads back whole.
func testShardsSpread(t *testing.T, url string) {
	client := newClient(t, url)
	cc, ok := client.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("client %T is not a Cluster's", client)
	}
	ctx := t.Context()
	s := newStore(t, client, redisstore.Options{Prefix: "spread", ReplicaWait: testReplicaWait})
	if _, err := s.CreateRule(ctx, rules.Rule{Name: "rule-0", Priority: 1}, "u"); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	l := reservoir.Ledger{Interval: 10 * time.Second, Retain: 3}
	batch := store.ReportBatch{Now: now, Ledger: l}
	const nrules = 12
	for i := range nrules {
		rule := fmt.Sprintf("rule-%d", i)
		batch.Rates = append(batch.Rates, store.RateUpdate{Rule: rule, Reservoir: 10, Add: reservoir.Receipt{Bucket: l.Bucket(now), Rate: 10}})
		batch.Usage = append(batch.Usage, store.UsageIncrement{Budget: "team", Month: now, Hour: 3, Rule: rule, Requests: 10, Sampled: 1})
	}
	res, err := s.RecordReports(ctx, batch)
	if err != nil || len(res) != nrules {
		t.Fatalf("RecordReports: %d results, %v", len(res), err)
	}
	for i, r := range res {
		if r.Fleet != 10 || r.Quota != 10 {
			t.Errorf("rule-%d: fleet %v, quota %v; want 10, 10", i, r.Fleet, r.Quota)
		}
	}
	type held struct{ ledgers, usage, rules int }
	var mu sync.Mutex
	masters := map[string]held{}
	err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		keys, err := c.Keys(ctx, "{spread*").Result()
		if err != nil {
			return err
		}
		var h held
		for _, k := range keys {
			switch {
			case strings.Contains(k, ":ledger:"):
				h.ledgers++
			case strings.Contains(k, ":usage:team:"):
				h.usage++
			case strings.HasSuffix(k, "}:rules"):
				h.rules++
			}
		}
		mu.Lock()
		defer mu.Unlock()
		masters[c.Options().Addr] = h
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("shards %q; keys per master (ledgers, usage parts, rules): %v", s.ShardTagList(), masters)
	if tags := s.ShardTagList(); len(tags) != len(masters) || tags[0] != "{spread}" {
		t.Errorf("shards %q: want one per master (%d), the store's own tag first", tags, len(masters))
	}
	later := newStore(t, newClient(t, url), redisstore.Options{Prefix: "spread"})
	if diff := cmp.Diff(s.ShardTagList(), later.ShardTagList()); diff != "" {
		t.Errorf("a replica started later has other shards (-first +later):\n%s", diff)
	}
	var sum held
	for addr, h := range masters {
		if h.ledgers == 0 || h.usage == 0 {
			t.Errorf("master %s holds %d ledgers and %d parts of the budget's month, want some of each", addr, h.ledgers, h.usage)
		}
		sum.ledgers, sum.usage, sum.rules = sum.ledgers+h.ledgers, sum.usage+h.usage, sum.rules+h.rules
	}
	if len(masters) < 3 || sum.ledgers != nrules || sum.rules != 1 {
		t.Errorf("%d masters, %d ledgers, %d rules hashes; want at least 3 masters, %d ledgers, 1 rules hash", len(masters), sum.ledgers, sum.rules, nrules)
	}
	u, err := s.Usage(ctx, "team", now)
	if err != nil {
		t.Fatal(err)
	}
	if u.Requests[3] != 10*nrules || u.Sampled[3] != nrules || len(u.Rules) != nrules {
		t.Errorf("the budget's month: hour 3 %v requests, %v sampled, %d rules; want %d, %d, %d", u.Requests[3], u.Sampled[3], len(u.Rules), 10*nrules, nrules, nrules)
	}
}

// TestUpgradeToShards opens a store of the layout before sharding (one
// shard: every key under "{tsc}") on a one-node Cluster, then one of 16
// shards on the same data, as a server upgraded over it: it keeps the
// rules, budgets and the budgets' months so far, and counts on from there.
// (The six-node Cluster runs it with the default shards, one per master.)
func TestUpgradeToShards(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{Cluster: true})
	testUpgrade(t, func(t *testing.T) redis.UniversalClient { return srv.ClusterClient(t) }, 16)
}

func testUpgrade(t *testing.T, client func(t *testing.T) redis.UniversalClient, shards int) {
	ctx := t.Context()
	now := time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	l := reservoir.Ledger{Interval: 10 * time.Second, Retain: 3}
	batch := func(rule string, requests, sampled int64) store.ReportBatch {
		return store.ReportBatch{Now: now, Ledger: l,
			Rates: []store.RateUpdate{{Rule: rule, Reservoir: 10, Add: reservoir.Receipt{Bucket: l.Bucket(now), Rate: 1}}},
			Usage: []store.UsageIncrement{
				{Budget: "team", Month: now, Hour: 5, Rule: rule, Requests: requests, Sampled: sampled},
				{Budget: store.FleetUsage, Month: now, Hour: 5, Rule: rule, Service: "shop", Requests: requests, Sampled: sampled},
			}}
	}

	old := newStore(t, client(t), redisstore.Options{Shards: 1, Now: clock, ReplicaWait: testReplicaWait})
	rule, err := old.CreateRule(ctx, rules.Rule{Name: "a", Priority: 1}, "u")
	if err != nil {
		t.Fatal(err)
	}
	b, err := old.CreateBudget(ctx, budget.Budget{Name: "team", MonthlyAmountMicros: budget.MicrosPerUnit})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"a", "b", "c"} {
		if _, err := old.RecordReports(ctx, batch(r, 100, 10)); err != nil {
			t.Fatal(err)
		}
	}
	c := client(t)
	if n := c.Exists(ctx, "{tsc}:usage:team:202603", "{tsc}:ledger:a", "{tsc}:usage:*:202603:services").Val(); n != 3 {
		t.Fatalf("the store of one shard wrote %d of the month, ledger and services keys under {tsc}, want 3 (the layout before sharding)", n)
	}
	_ = old.Close()

	s := newStore(t, client(t), redisstore.Options{Now: clock, Shards: shards, ReplicaWait: testReplicaWait})
	if got, err := s.Rule(ctx, "a"); err != nil || got.Revision != rule.Revision {
		t.Errorf("rule after the upgrade: %+v, %v", got, err)
	}
	if got, err := s.Budget(ctx, "team"); err != nil || got.Revision != b.Revision {
		t.Errorf("budget after the upgrade: %+v, %v", got, err)
	}
	for _, r := range []string{"a", "b", "d"} {
		if _, err := s.RecordReports(ctx, batch(r, 1000, 100)); err != nil {
			t.Fatal(err)
		}
	}
	tags := s.ShardTagList()
	if len(tags) < 2 {
		t.Fatalf("shards %q: want several", tags)
	}
	// Only the rules of a shard whose tag is {tsc} go on counting there.
	var want int64 = 300
	for _, r := range []string{"a", "b", "d"} {
		if s.ShardTagOf(r) == "{tsc}" {
			want += 1000
		}
	}
	if n := c.HGet(ctx, "{tsc}:usage:team:202603", "r:5").Val(); n != strconv.FormatInt(want, 10) {
		t.Errorf("the month under {tsc} counts %s requests in hour 5, want %d: the upgraded store writes in its shards %q", n, want, tags)
	}
	for _, name := range []string{"team", store.FleetUsage} {
		u, err := s.Usage(ctx, name, now)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]budget.RuleUsage{"a": {Requests: 1100, Sampled: 110}, "b": {Requests: 1100, Sampled: 110}, "c": {Requests: 100, Sampled: 10}, "d": {Requests: 1000, Sampled: 100}}
		if diff := cmp.Diff(want, u.Rules); diff != "" || u.Requests[5] != 3300 || u.Sampled[5] != 330 {
			t.Errorf("%s: hour 5 %v requests, %v sampled (want 3300, 330); rules (-want +got):\n%s", name, u.Requests[5], u.Sampled[5], diff)
		}
		if name == store.FleetUsage {
			if got := u.Services["a"]["shop"]; got != want["a"] || u.Services["c"]["shop"] != want["c"] {
				t.Errorf("fleet services: a/shop %v, c/shop %v; want %v, %v", got, u.Services["c"]["shop"], want["a"], want["c"])
			}
		}
	}
}

// testPartialBatch freezes the master of some of a batch's shards while the
// batch runs: the others apply their part, and the batch fails without
// saying it changed nothing. Sent again under its Key it applies in the
// frozen master's shards only (the part that reached it late is refused as
// past its deadline), and its numbered report, sent again in another
// batch, bills nowhere twice: every rule's ledger and usage count the batch
// once.
func testPartialBatch(t *testing.T, url string, cluster *redistest.Cluster) {
	ctx := t.Context()
	s := newStore(t, newClient(t, url), redisstore.Options{Prefix: "partial", ReplicaWait: testReplicaWait})
	const nrules = 12
	names := make([]string, nrules)
	for i := range names {
		names[i] = fmt.Sprintf("rule-%d", i)
	}
	frozen := cluster.MasterOf(t, s.ShardTagOf(names[0])+":x")
	var others int
	for _, r := range names {
		if cluster.MasterOf(t, s.ShardTagOf(r)+":x") != frozen {
			others++
		}
	}
	if others == 0 || others == nrules {
		t.Fatalf("%d of %d rules on other masters: want some on each side", others, nrules)
	}
	now := time.Now()
	l := reservoir.Ledger{Interval: 10 * time.Second, Retain: 3}
	batch := func(key string, seq uint64) store.ReportBatch {
		b := store.ReportBatch{Now: now, Ledger: l, Key: key}
		var numbered []store.UsageIncrement
		for _, r := range names {
			b.Rates = append(b.Rates, store.RateUpdate{Rule: r, Add: reservoir.Receipt{Bucket: l.Bucket(now), Rate: 1}})
			b.Usage = append(b.Usage, store.UsageIncrement{Budget: "team", Month: now, Hour: 2, Rule: r, Requests: 10})
			numbered = append(numbered, store.UsageIncrement{Budget: "team", Month: now, Hour: 2, Rule: r, Requests: 1})
		}
		b.Sequenced = []store.SequencedUsage{{Client: "c", Seq: seq, Usage: numbered}}
		return b
	}
	// Every shard learns Redis's clock, so that batches carry deadlines.
	if _, err := s.RecordReports(ctx, batch("", 1)); err != nil {
		t.Fatal(err)
	}

	frozen.Freeze()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := s.RecordReports(short, batch("k", 2))
	cancel()
	frozen.Thaw()
	if !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrNotApplied) {
		t.Fatalf("a batch part of which applied: %v; want ErrUnavailable without ErrNotApplied", err)
	}
	again := func(what string, b store.ReportBatch) {
		t.Helper()
		deadline := time.Now().Add(waitTimeout)
		for {
			_, err := s.RecordReports(ctx, b)
			if err == nil {
				return
			}
			if !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
				t.Fatalf("%s: %v", what, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	again("the batch again under its key", batch("k", 2))
	again("its numbered report again, in another batch", store.ReportBatch{Now: now, Key: "k2", Sequenced: batch("", 2).Sequenced})

	u, err := s.Usage(ctx, "team", now)
	if err != nil {
		t.Fatal(err)
	}
	reads := store.ReportBatch{Now: now, Ledger: l}
	for _, r := range names {
		reads.Rates = append(reads.Rates, store.RateUpdate{Rule: r, Add: reservoir.Receipt{Bucket: l.Bucket(now)}})
	}
	rates, err := s.RecordReports(ctx, reads)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range names {
		onFrozen := cluster.MasterOf(t, s.ShardTagOf(r)+":x") == frozen
		if got := u.Rules[r].Requests; got != 22 {
			t.Errorf("%s (frozen master %v): %d requests billed, want 22: the batch and its numbered report once, besides the first", r, onFrozen, got)
		}
		if rates[i].Fleet != 2 {
			t.Errorf("%s (frozen master %v): fleet rate %v, want 2: the batch's rate once, besides the first", r, onFrozen, rates[i].Fleet)
		}
	}
}

// testFailingShardHoldsBatch kills one master, sends a batch, which then
// applies in the other shards only, and a second one before the Cluster
// failed the master over: the second must not add its rates in the other
// shards (no client would receive their quotas, and nothing would retract
// them), since the shard that failed is tried alone first. Once a replica
// took over, batches apply everywhere.
func testFailingShardHoldsBatch(t *testing.T, url string, cluster *redistest.Cluster) {
	ctx := t.Context()
	s := newStore(t, newClient(t, url), redisstore.Options{Prefix: "gate", ReplicaWait: testReplicaWait})
	const nrules = 12
	names := make([]string, nrules)
	for i := range names {
		names[i] = fmt.Sprintf("rule-%d", i)
	}
	key := s.ShardTagOf(names[0]) + ":x"
	killed := cluster.MasterOf(t, key)
	onKilled := make([]bool, nrules)
	var others int
	for i, r := range names {
		onKilled[i] = cluster.MasterOf(t, s.ShardTagOf(r)+":x") == killed
		if !onKilled[i] {
			others++
		}
	}
	if others == 0 || others == nrules {
		t.Fatalf("%d of %d rules on other masters: want some on each side", others, nrules)
	}
	now := time.Now()
	l := reservoir.Ledger{Interval: time.Minute, Retain: 3}
	batch := func(key string, rate float64) store.ReportBatch {
		b := store.ReportBatch{Now: now, Ledger: l, Key: key}
		for _, r := range names {
			b.Rates = append(b.Rates, store.RateUpdate{Rule: r, Add: reservoir.Receipt{Bucket: l.Bucket(now), Rate: rate}})
		}
		return b
	}
	if _, err := s.RecordReports(ctx, batch("", 1)); err != nil {
		t.Fatal(err)
	}
	cluster.KillMaster(t, key)
	for _, key := range []string{"k1", "k2"} {
		short, cancel := context.WithTimeout(ctx, time.Second)
		_, err := s.RecordReports(short, batch(key, 1))
		cancel()
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("batch %s with a master dead: %v, want ErrUnavailable", key, err)
		}
	}
	cluster.WaitFailover(t, key)
	deadline := time.Now().Add(waitTimeout)
	for {
		_, err := s.RecordReports(ctx, batch("k3", 1))
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("a batch once a replica took over: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rates, err := s.RecordReports(ctx, batch("", 0))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range names {
		// On the other masters: the first batch, k1 (it failed on the
		// dead master only, and applied there) and the last; k2 nowhere.
		// (On the dead master's shard the first may be lost with it:
		// replication is asynchronous.)
		if !onKilled[i] && rates[i].Fleet != 3 {
			t.Errorf("%s: fleet rate %v, want 3", r, rates[i].Fleet)
		}
	}
	cluster.Rejoin(t, killed)
}

// TestClusterGrowth grows a real Cluster by a master (redis-cli add-node,
// then rebalance, which moves slots and their keys to it): the shard list
// stays as the first replica made it, the ledgers that moved with their
// slots are read as before, and ShardCoverage names the one master that
// holds no shard.
func TestClusterGrowth(t *testing.T) {
	cluster := redistest.StartCluster(t)
	ctx := t.Context()
	s := newStore(t, newClient(t, cluster.URL()), redisstore.Options{Prefix: "grow", ReplicaWait: testReplicaWait})
	now := time.Now()
	l := reservoir.Ledger{Interval: time.Minute, Retain: 3}
	names := make([]string, 12)
	batch := store.ReportBatch{Now: now, Ledger: l}
	reads := store.ReportBatch{Now: now, Ledger: l}
	for i := range names {
		names[i] = fmt.Sprintf("rule-%d", i)
		batch.Rates = append(batch.Rates, store.RateUpdate{Rule: names[i], Add: reservoir.Receipt{Bucket: l.Bucket(now), Rate: float64(i + 1)}})
		reads.Rates = append(reads.Rates, store.RateUpdate{Rule: names[i], Add: reservoir.Receipt{Bucket: l.Bucket(now)}})
	}
	if _, err := s.RecordReports(ctx, batch); err != nil {
		t.Fatal(err)
	}
	c, err := s.ShardCoverage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Cluster || len(c.Masters) != 3 || len(c.Shards) != 3 || len(c.Unsharded) != 0 {
		t.Fatalf("coverage of a new 3-master Cluster: %+v; want 3 masters, 3 shards, none unsharded", c)
	}

	added := cluster.AddMaster(t)
	// The store's client learns the new slots within a second.
	var after redisstore.Coverage
	deadline := time.Now().Add(waitTimeout)
	for {
		if after, err = s.ShardCoverage(ctx); err == nil && len(after.Masters) == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("coverage after adding %s: %+v, %v; want 4 masters", added.Addr(), after, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("after adding %s: %+v", added.Addr(), after)
	if len(after.Shards) != 3 || len(after.Unsharded) != 1 {
		t.Errorf("coverage after adding a master: %d shards, unsharded %v; want the 3 shards kept and 1 master without one", len(after.Shards), after.Unsharded)
	}
	for _, sh := range after.Shards {
		if sh[1] == "" {
			t.Errorf("shard %s: no master serves it", sh[0])
		}
	}

	var rates []store.RateResult
	for {
		if rates, err = s.RecordReports(ctx, reads); err == nil || !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rates {
		if want := float64(i + 1); r.Fleet != want {
			t.Errorf("%s after the reshard: fleet rate %v, want %v", names[i], r.Fleet, want)
		}
	}
}
