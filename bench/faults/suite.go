package faults

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/redistest"
)

// Mode sizes a run of the suite.
type Mode struct {
	Name string
	// Instances is the fleet's size; instance i serves Rates[i % len(Rates)]
	// requests per second, every one matching the measured rule.
	Instances int
	Rates     []float64
	// Replicas is the number of control plane replicas (at least 2).
	Replicas int
	// Reservoir is R, the measured rule's traces per second for the whole
	// fleet; its fixed rate is 0, so on target the fleet samples R per
	// second.
	Reservoir int64
	// Interval is the replicas' --report-interval.
	Interval time.Duration
	// Window is the length of one measurement of the fleet's rate.
	Window time.Duration
	// Warmup runs before anything is measured, Before is the baseline,
	// After is measured after the fault ends. Warmup and Before are
	// multiples of Window, so that the fault starts a window.
	Warmup, Before, After time.Duration
	// Outage is how long a killed Redis or replica stays down, an
	// impairment or a clock skew lasts; Freeze how long Redis stays
	// stopped.
	Outage, Freeze time.Duration
	// EditEvery is the editor's step (three edits each).
	EditEvery time.Duration
	// Tolerance: a window whose rate is within R × (1 ± Tolerance) is on
	// target.
	Tolerance float64
	// CloseWait is how long every instance's Close may take.
	CloseWait time.Duration
	// All runs every fault; otherwise only those marked for the short mode.
	All bool
	// Race says the suite runs under the race detector (so do the
	// replicas): decisions are many times slower then.
	Race bool
}

// ShortMode is the bounded run of CI: a small fleet, short phases, the
// control and five faults. About three minutes, under the race detector
// too.
func ShortMode() Mode {
	return Mode{
		Name: "short", Instances: 30, Rates: []float64{5, 10, 20, 40}, Replicas: 2,
		Reservoir: 20, Interval: time.Second, Window: 2 * time.Second,
		Warmup: 8 * time.Second, Before: 4 * time.Second, After: 8 * time.Second,
		Outage: 6 * time.Second, Freeze: 6 * time.Second,
		EditEvery: time.Second, Tolerance: 0.25, CloseWait: 30 * time.Second,
	}
}

// FullMode is the run whose figures docs/RELIABILITY.md records: several
// hundred instances, the 20 s freeze of issue 17, every fault. About
// seventeen minutes.
func FullMode() Mode {
	return Mode{
		Name: "full", Instances: 300, Rates: []float64{2, 5, 10, 20}, Replicas: 2,
		Reservoir: 50, Interval: time.Second, Window: 2 * time.Second,
		Warmup: 24 * time.Second, Before: 10 * time.Second, After: 30 * time.Second,
		Outage: 10 * time.Second, Freeze: 20 * time.Second,
		EditEvery: time.Second, Tolerance: 0.25, CloseWait: 30 * time.Second, All: true,
	}
}

// service is the fleet's service name: the measured rule's, the editor's
// rules' and the budget's scope.
const service = "faults"

// Names of what the suite creates.
const (
	measuredRule = "fleet"
	budgetName   = "faults"
)

// fault is one row of the suite.
type fault struct {
	name string
	// short: also run in the short mode.
	short bool
	// topo is the Redis the replicas use.
	topo topoKind
	// aof: a single node runs with the append-only file, fsynced on every
	// write. (A Sentinel set or a Cluster keeps acknowledged edits by
	// replication: the store waits for the replicas.)
	aof bool
	// lossExpected: the fault loses data by design (Redis without
	// persistence): the row says how much, the test does not fail on it.
	lossExpected bool
	// proxied: the replicas reach Redis through the impairing proxy.
	proxied bool
	// skewed: replica 1 runs in-process with a clock that can be set.
	skewed bool
	how    endpoints
	// todo, if set, says why the fault is not run yet.
	todo string
	// length is how long the fault lasts.
	length func(Mode) time.Duration
	// inject starts the fault; end, if not nil, ends it. Both run on the
	// test's goroutine.
	inject func(ctx context.Context, e *env) (end func(ctx context.Context) error, err error)
}

// topoKind names a Redis topology of internal/redistest.
type topoKind int

const (
	singleNode  topoKind = iota // one redis-server
	sentinelSet                 // a master, a replica, three Sentinels
	cluster                     // three masters with a replica each
)

// faults returns the suite's faults, in the order they run.
func faults() []fault {
	outage := func(m Mode) time.Duration { return m.Outage }
	return []fault{
		{
			// The control: what a run costs without a fault, shutdown
			// included, so the rows below can be read against it.
			name: "no fault (control)", short: true, aof: true,
			length: outage, inject: func(context.Context, *env) (func(context.Context) error, error) { return nil, nil },
		},
		{
			name: "Redis killed, restarted, no persistence", lossExpected: true,
			length: outage, inject: killRedis,
		},
		{
			name: "Redis killed, restarted, AOF", short: true, aof: true,
			length: outage, inject: killRedis,
		},
		{
			name: "Redis frozen (SIGSTOP)", short: true, aof: true,
			length: func(m Mode) time.Duration { return m.Freeze }, inject: freezeRedis,
		},
		{
			name: "Sentinel failover (master killed)", topo: sentinelSet,
			length: outage, inject: killSentinelMaster,
		},
		{
			name: "Cluster master killed", topo: cluster,
			length: outage, inject: killClusterMaster,
		},
		{
			name: "replica killed (SDKs know every replica)", short: true, aof: true,
			length: outage, inject: killReplica,
		},
		{
			name: "replica killed (each SDK knows one replica)", aof: true, how: oneReplica,
			length: outage, inject: killReplica,
		},
		{
			name: "Redis 100 ms away each way", aof: true, proxied: true,
			length: outage, inject: impair(impairment{delay: 100 * time.Millisecond}),
		},
		{
			name: "Redis link lossy: 20 % stalls of 300 ms, a reset every 500 ms", short: true, aof: true, proxied: true,
			length: outage, inject: impair(impairment{loss: 0.2, stall: 300 * time.Millisecond, cutEvery: 500 * time.Millisecond}),
		},
		{
			name: "replica clock 2 s ahead", short: true, aof: true, skewed: true,
			length: outage, inject: skew(2 * time.Second),
		},
		{
			name: "replica clock 2 s behind", aof: true, skewed: true,
			length: outage, inject: skew(-2 * time.Second),
		},
		{
			name: "replica clock 250 ms ahead", aof: true, skewed: true,
			length: outage, inject: skew(250 * time.Millisecond),
		},
	}
}

// env is what a fault acts on.
type env struct {
	tb testing.TB
	// url is the Redis URL of the topology (not of the proxy).
	url string
	// One of these is set, by the fault's topoKind.
	redis    *redistest.Server
	sentinel *redistest.SentinelSet
	cluster  *redistest.Cluster

	proxy    *proxy
	replicas []replica
	mode     Mode
	notes    []string
}

// startTopology starts the fault's Redis and sets e's URL and node set.
func (e *env) startTopology(f fault) {
	switch f.topo {
	case sentinelSet:
		e.sentinel = redistest.StartSentinelSet(e.tb)
		e.url = e.sentinel.URL()
	case cluster:
		e.cluster = redistest.StartCluster(e.tb)
		e.url = e.cluster.URL()
	default:
		e.redis = redistest.StartWith(e.tb, redistest.Options{AppendOnly: f.aof})
		e.url = e.redis.URL()
	}
}

func killRedis(_ context.Context, e *env) (func(context.Context) error, error) {
	e.redis.Stop()
	return func(context.Context) error {
		e.redis.Restart()
		return nil
	}, nil
}

func freezeRedis(_ context.Context, e *env) (func(context.Context) error, error) {
	e.redis.Freeze()
	return func(context.Context) error {
		e.redis.Thaw()
		return nil
	}, nil
}

// killSentinelMaster kills the Sentinel set's master with SIGKILL; the
// Sentinels promote the replica about a second later. When the fault ends
// the old master comes back as a replica.
func killSentinelMaster(_ context.Context, e *env) (func(context.Context) error, error) {
	m := e.sentinel.KillMaster(e.tb)
	return func(context.Context) error {
		e.sentinel.WaitFailover(e.tb)
		e.sentinel.Rejoin(e.tb, m)
		return nil
	}, nil
}

// storeSlotKey is a key in the slot of the store's own hash tag {tsc}: the
// Cluster master it names holds the rules, budgets and tokens, and the
// first of the report path's shards (the others are on the other masters;
// docs/SHARDING.md).
const storeSlotKey = "{tsc}"

// killClusterMaster kills the Cluster master that holds the store's rules;
// its replica takes over about a second later. When the fault ends the old
// master comes back as a replica.
func killClusterMaster(_ context.Context, e *env) (func(context.Context) error, error) {
	m := e.cluster.KillMaster(e.tb, storeSlotKey)
	return func(context.Context) error {
		e.cluster.WaitFailover(e.tb, storeSlotKey)
		e.cluster.Rejoin(e.tb, m)
		return nil
	}, nil
}

// killReplica kills replica 0 with SIGKILL and starts it again on the same
// address when the fault ends.
func killReplica(_ context.Context, e *env) (func(context.Context) error, error) {
	r := e.replicas[0]
	r.kill()
	return r.restart, nil
}

func impair(imp impairment) func(context.Context, *env) (func(context.Context) error, error) {
	return func(_ context.Context, e *env) (func(context.Context) error, error) {
		before := e.proxy.cuts.Load()
		e.proxy.set(imp)
		return func(context.Context) error {
			e.proxy.set(impairment{})
			if imp.cutEvery > 0 {
				e.notes = append(e.notes, fmt.Sprintf("%d connections to Redis reset", e.proxy.cuts.Load()-before))
			}
			return nil
		}, nil
	}
}

// skew steps replica 1's clock d off the real time, and back when the
// fault ends.
func skew(d time.Duration) func(context.Context, *env) (func(context.Context) error, error) {
	return func(_ context.Context, e *env) (func(context.Context) error, error) {
		r, ok := e.replicas[1].(*skewedReplica)
		if !ok {
			return nil, errors.New("replica 1 is not the skewed one")
		}
		r.setSkew(d)
		return func(context.Context) error {
			r.setSkew(0)
			return nil
		}, nil
	}
}
