package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// How X-Ray clients count borrowed traces (--xray-counting).
const (
	countingSDK  = "sdk"  // in BorrowCount only (the AWS X-Ray SDKs for Go and Node.js)
	countingOTel = "otel" // in BorrowCount and SampledCount (the OpenTelemetry X-Ray samplers)
)

// xrayInstance is one simulated X-Ray SDK instance: it makes the wire calls
// the X-Ray SDKs' centralized samplers make (the X-Ray SDK for Go's, which
// the others follow) and decides as they do. It fetches the rules at start,
// again every rules interval (5 minutes in the SDKs) and whenever a targets
// answer's LastRuleModification is after its last fetch; it reports the
// measured rule's counts every report interval (the answer's Interval, 10 s
// by default) with a 24-hex ClientID; and it decides each request from its
// whole ReservoirQuota, spent per wall-clock second, while
// ReservoirQuotaTTL has not passed, else borrows one trace a second (if the
// rule has a reservoir), else samples at the fixed rate in force. Like the
// X-Ray SDKs for Go and Node.js, it reports borrowed traces in BorrowCount
// and not in SampledCount; with --xray-counting otel, in both, as the
// OpenTelemetry X-Ray samplers (JS, Python) count them.
type xrayInstance struct {
	run   *loadRun
	id    string // ClientID: 12 random bytes in hex, as the SDKs make it
	rate  float64
	rules []string
	rng   *rand.Rand

	mu        sync.Mutex
	quota     int32
	ttl       int64 // unix ns; 0: no quota yet
	second    int64 // the wall-clock second used counts
	used      int32 // taken or borrowed this second (one counter, as in the SDK for Go)
	fixedRate float64
	canBorrow bool      // the rule has a reservoir
	rulesAt   time.Time // when the rules in hand were asked for
	sawEdit   bool
	heldAt    atomic.Int64 // when it first had its rules (unix ns); 0: not yet
	requests  atomic.Int64
	sampled   atomic.Int64 // SampledCount: borrowed ones in it or not, by --xray-counting
	borrowed  atomic.Int64
	reported  counts // sampled with the borrowed ones, as the result counts them
	flushed   atomic.Bool
	interval  time.Duration // the last answer's Interval
}

func newXRayInstance(r *loadRun, i int, rate float64, rules []string) *xrayInstance {
	rng := rand.New(rand.NewPCG(uint64(i), 1913))
	var id [12]byte
	for k := range id {
		id[k] = byte(rng.Uint32())
	}
	return &xrayInstance{run: r, id: hex.EncodeToString(id[:]), rate: rate, rules: rules, rng: rng}
}

func (x *xrayInstance) load() float64    { return x.rate }
func (x *xrayInstance) heldSince() int64 { return x.heldAt.Load() }

// decide decides one request of the measured rule at ns as the X-Ray SDK
// for Go does.
func (x *xrayInstance) decide(ns int64, rng *rand.Rand) decision {
	x.mu.Lock()
	d := notSampled
	if sec := ns / int64(time.Second); sec != x.second {
		x.second, x.used = sec, 0
	}
	switch {
	case ns > x.ttl: // no quota yet, or it lapsed
		if x.canBorrow && x.used < 1 {
			x.used++
			d = byBorrow
		}
	case x.used < x.quota:
		x.used++
		d = byReservoir
	}
	if d == notSampled && rng.Float64() < x.fixedRate {
		d = byFixedRate
	}
	x.mu.Unlock()
	x.requests.Add(1)
	switch d {
	case byReservoir, byFixedRate:
		x.sampled.Add(1)
	case byBorrow:
		x.borrowed.Add(1)
		if x.run.cfg.xrayCounting == countingOTel {
			x.sampled.Add(1)
		}
	}
	return d
}

func (x *xrayInstance) tallies() (*counts, bool, float64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	return &x.reported, x.flushed.Load(), x.fixedRate
}

// X-Ray's JSON, as far as the SDKs read it.
type (
	xrayRule struct {
		RuleName      string
		ResourceARN   string
		Priority      int32
		FixedRate     float64
		ReservoirSize int64
		ServiceName   string
		ServiceType   string
		Host          string
		HTTPMethod    string
		URLPath       string
		Version       int32
	}
	xrayRules struct {
		SamplingRuleRecords []struct{ SamplingRule xrayRule }
	}
	xrayStatistics struct {
		RuleName     string
		ClientID     string
		RequestCount int64
		SampledCount int64
		BorrowCount  int64
		Timestamp    int64
	}
	xrayTargets struct {
		SamplingTargetDocuments []struct {
			RuleName          string
			FixedRate         float64
			ReservoirQuota    *int32
			ReservoirQuotaTTL *float64
			Interval          *int32
		}
		LastRuleModification float64
	}
)

// xrayCall POSTs in as JSON to the X-Ray API's path and decodes the answer
// into out (if not nil); an answer other than 200 is an error with X-Ray's
// error type and message.
func (r *loadRun) xrayCall(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+r.cfg.xrayAddr+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := r.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s %s: %s", path, resp.Status, resp.Header.Get("x-amzn-ErrorType"), bytes.TrimSpace(b))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// fetchRules asks for the rules, as the SDKs do at start, on their rules
// poll and when LastRuleModification says the rules changed.
func (x *xrayInstance) fetchRules(ctx context.Context) error {
	asked := time.Now()
	var out xrayRules
	if err := x.run.xrayCall(ctx, "/GetSamplingRules", struct{}{}, &out); err != nil {
		return err
	}
	for _, rec := range out.SamplingRuleRecords {
		r := rec.SamplingRule
		if r.RuleName != x.rules[0] {
			continue
		}
		x.mu.Lock()
		x.rulesAt = asked
		x.fixedRate = r.FixedRate
		x.canBorrow = r.ReservoirSize > 0
		x.mu.Unlock()
		x.sawRate(r.FixedRate)
		x.heldAt.CompareAndSwap(0, time.Now().UnixNano())
		return nil
	}
	return fmt.Errorf("/GetSamplingRules: no rule %s", x.rules[0])
}

// sawRate records how long after the run's edit the instance first decided
// at the edited rule's fixed rate.
func (x *xrayInstance) sawRate(rate float64) {
	at := x.run.editAt.Load()
	if at == 0 || rate != x.run.editedRate() {
		return
	}
	x.mu.Lock()
	seen := x.sawEdit
	x.sawEdit = true
	x.mu.Unlock()
	if !seen {
		x.run.xray.propagation(time.Duration(time.Now().UnixNano() - at))
	}
}

// report sends the measured rule's counts since the last report and takes
// the targets; it asks for the rules again if they changed since its last
// fetch. SDKs report only rules that had requests; so does this, but for
// the last report, which is always sent.
func (x *xrayInstance) report(ctx context.Context, final bool) error {
	now := time.Now()
	q, s, b := x.requests.Swap(0), x.sampled.Swap(0), x.borrowed.Swap(0)
	if q == 0 && !final {
		return nil
	}
	doc := xrayStatistics{RuleName: x.rules[0], ClientID: x.id, RequestCount: q, SampledCount: s, BorrowCount: b, Timestamp: now.Unix()}
	var out xrayTargets
	start := time.Now()
	err := x.run.xrayCall(ctx, "/SamplingTargets", map[string]any{"SamplingStatisticsDocuments": []xrayStatistics{doc}}, &out)
	if err != nil {
		x.requests.Add(q)
		x.sampled.Add(s)
		x.borrowed.Add(b)
		return err
	}
	x.reported.requests.Add(q)
	if x.run.cfg.xrayCounting == countingOTel {
		x.reported.sampled.Add(s)
	} else {
		x.reported.sampled.Add(s + b)
	}
	x.reported.borrowed.Add(b)
	x.run.xray.record(time.Since(start), x.run.measuring.Load() != 0)
	for _, t := range out.SamplingTargetDocuments {
		if t.RuleName != x.rules[0] {
			continue
		}
		x.mu.Lock()
		x.fixedRate = t.FixedRate
		if t.ReservoirQuota != nil && t.ReservoirQuotaTTL != nil {
			x.quota = *t.ReservoirQuota
			x.ttl = int64(*t.ReservoirQuotaTTL * 1e9)
		}
		if t.Interval != nil && *t.Interval > 0 {
			x.interval = time.Duration(*t.Interval) * time.Second
		}
		x.mu.Unlock()
		x.sawRate(t.FixedRate)
	}
	x.mu.Lock()
	stale := out.LastRuleModification > float64(x.rulesAt.Unix())
	x.mu.Unlock()
	if stale && !final {
		return x.fetchRules(ctx)
	}
	return nil
}

func (x *xrayInstance) reportInterval() time.Duration {
	if x.run.cfg.interval > 0 {
		return x.run.cfg.interval
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.interval > 0 {
		return x.interval
	}
	return 10 * time.Second
}

func (x *xrayInstance) loop(ctx context.Context, ready chan<- struct{}) {
	signalled := false
	signal := func() {
		if !signalled {
			signalled = true
			ready <- struct{}{}
		}
	}
	defer signal()
	for {
		err := x.fetchRules(ctx)
		if err == nil {
			break
		}
		x.run.xray.failed(err)
		sleep(ctx, 100*time.Millisecond+time.Duration(x.rng.Int64N(int64(time.Second))))
		if ctx.Err() != nil {
			return
		}
	}
	signal()
	// Reports start at a random phase of the interval, as a real fleet's do.
	next := time.NewTimer(time.Duration(x.rng.Int64N(int64(x.reportInterval()))) + time.Millisecond)
	defer next.Stop()
	rules := time.NewTicker(x.run.cfg.xrayRulesInterval)
	defer rules.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-x.run.flush:
			if x.report(ctx, true) == nil {
				x.flushed.Store(true)
			}
			return
		case <-next.C:
			if err := x.report(ctx, false); err != nil && ctx.Err() == nil {
				x.run.xray.failed(err)
			}
			next.Reset(x.reportInterval())
		case <-rules.C:
			if err := x.fetchRules(ctx); err != nil && ctx.Err() == nil {
				x.run.xray.failed(err)
			}
		}
	}
}

// xrayStats are the X-Ray fleet's calls and how fast it saw the edit.
type xrayStats struct {
	reports atomic.Int64
	errs    atomic.Int64
	mu      sync.Mutex
	lat     []time.Duration
	prop    []time.Duration
	// firstErr is the first call's error, for the result: a count alone
	// does not say what failed.
	firstErr string
}

// failed counts a call that failed, and keeps the first one's error.
func (s *xrayStats) failed(err error) {
	s.errs.Add(1)
	s.mu.Lock()
	if s.firstErr == "" {
		s.firstErr = err.Error()
	}
	s.mu.Unlock()
}

func (s *xrayStats) record(d time.Duration, measuring bool) {
	if !measuring {
		return
	}
	s.reports.Add(1)
	s.mu.Lock()
	s.lat = append(s.lat, d)
	s.mu.Unlock()
}

func (s *xrayStats) propagation(d time.Duration) {
	s.mu.Lock()
	s.prop = append(s.prop, d)
	s.mu.Unlock()
}

// XRayResult is the X-Ray fleet's part of the result.
type XRayResult struct {
	Clients          int      `json:"clients"`
	Reports          int64    `json:"reports"`
	ReportP50ms      float64  `json:"report_p50_ms"`
	ReportP99ms      float64  `json:"report_p99_ms"`
	Errors           int64    `json:"errors"`
	FirstError       string   `json:"first_error,omitempty"`
	Traces           Traces   `json:"traces"`
	Reported         Reported `json:"traces_reported"`
	FlushFailed      int      `json:"final_reports_failed"`
	PropagationSeen  int      `json:"propagation_seen"`
	PropagationP50ms *float64 `json:"propagation_p50_ms"`
	PropagationP99ms *float64 `json:"propagation_p99_ms"`
	FixedRateMin     float64  `json:"fixed_rate_min"`
	FixedRateMax     float64  `json:"fixed_rate_max"`
}

func (r *loadRun) xrayResult() *XRayResult {
	if len(r.xinstances) == 0 {
		return nil
	}
	s := &r.xray
	out := &XRayResult{Clients: len(r.xinstances), Reports: s.reports.Load(), Errors: s.errs.Load(), Traces: r.xfleet.traces(), FixedRateMin: math.Inf(1)}
	s.mu.Lock()
	out.ReportP50ms, out.ReportP99ms = percentileMs(s.lat, 0.5), percentileMs(s.lat, 0.99)
	out.FirstError = s.firstErr
	out.PropagationSeen = len(s.prop)
	if len(s.prop) > 0 {
		p50, p99 := percentileMs(s.prop, 0.5), percentileMs(s.prop, 0.99)
		out.PropagationP50ms, out.PropagationP99ms = &p50, &p99
	}
	s.mu.Unlock()
	out.Reported, out.FlushFailed, out.FixedRateMin, out.FixedRateMax = tallyMembers(r.xinstances)
	return out
}

// xrayRule is the X-Ray API's form of a rule the run creates.
func (r *loadRun) xrayRuleFor(name string, priority int32, urlPath string) xrayRule {
	return xrayRule{RuleName: name, ResourceARN: "*", Priority: priority, FixedRate: r.cfg.fixedRate, ReservoirSize: r.cfg.reservoir,
		ServiceName: "loadgen", ServiceType: "*", Host: "*", HTTPMethod: "*", URLPath: urlPath, Version: 1}
}
