package sampler

import (
	"cmp"
	"math/bits"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/tracesampling/controlplane/pkg/reservoir"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// runtime is what a rule carries across rule-set versions: its quota, its
// borrowing allowance, the fixed rate in force and its counters. A new rules
// version keeps the runtime of every rule it keeps, so no count is lost.
type runtime struct {
	name     string
	quota    reservoir.Bucket
	expiry   atomic.Int64 // unix ns after which the quota is void; 0 = no quota
	borrow   reservoir.Bucket
	rate     atomic.Pointer[fixedRate] // the fixed rate in force, never nil
	counters counters
	// boost is the boost in force (boost.go); nil: none. anomalies are
	// the rule's boost statistics, for rules with a sampling_rate_boost.
	boost     atomic.Pointer[boostRate]
	anomalies anomalyCounts

	// Guarded by the sampler's report mutex.
	receipt       string
	targetVersion int64 // rules version of the last target applied
	// borrowRate is what the rule may borrow per second without a quota
	// (1, or less when a budget scales the reservoir down); withheld says
	// that it borrows nothing until its first target (the control plane
	// let other new instances borrow this second).
	borrowRate float64
	withheld   bool
}

func newRuntime(name string, now int64) *runtime {
	rt := &runtime{name: name, borrowRate: 1}
	rt.borrow.SetRate(now, 1, 0)
	rt.setFixedRate(0)
	return rt
}

// setBorrow sets the borrowing bucket to borrowRate, or to nothing while
// withheld. The caller holds the report mutex.
func (rt *runtime) setBorrow(now int64) {
	rate := rt.borrowRate
	if rt.withheld {
		rate = 0
	}
	rt.borrow.SetRate(now, rate, 0)
}

func (rt *runtime) setFixedRate(rate float64) { rt.rate.Store(newFixedRate(rate)) }

// fixedRate is a fixed rate as the sampler decides by it: OpenTelemetry's
// consistent probability sampling, which keeps a trace when its randomness
// R is at or above the rate's threshold T. Every sampler that follows the
// specification at the same rate keeps the same traces, and one at a lower
// rate a subset of them. Immutable: a decision and the th it writes come
// from one value.
type fixedRate struct {
	// cut is the threshold R is compared with: RateThreshold's, or
	// MaxAdjustedCount, above every R, for a rate that keeps nothing.
	cut uint64
	// ts is the tracestate of a span this rate keeps whose context has
	// none, "ot=th:…": built once, so that the common case of a root span
	// costs no allocation.
	ts trace.TraceState
}

func newFixedRate(rate float64) *fixedRate {
	th, ok := RateThreshold(rate)
	if !ok {
		return &fixedRate{cut: MaxAdjustedCount}
	}
	ts, _ := WithThreshold(trace.TraceState{}, th, true) // "th:" and 14 hex digits at most: never fails
	return &fixedRate{cut: uint64(th), ts: ts}
}

func (f *fixedRate) keeps(r Randomness) bool { return uint64(r) >= f.cut }

// threshold is the th of a span f kept.
func (f *fixedRate) threshold() Threshold { return Threshold(f.cut) }

// probability is the probability f keeps a trace with: the rate, rounded
// to its threshold; 0 for a rate that keeps nothing.
func (f *fixedRate) probability() float64 { return Threshold(f.cut).Probability() }

// matcher is one rule of one rules version, with only the parts that depend
// on the request left to check.
type matcher struct {
	host, method, path rules.Glob
	attrs              []rules.AttributeGlob
	anyRequest         bool // every request-level part is "*"
	// expires is when the rule stops applying (its expire_time), in unix
	// nanoseconds; 0: never. It is skipped from then on, before the
	// control plane deletes it, and if the control plane cannot be
	// reached: a time-limited rule (trace every checkout) never outlives
	// its time.
	expires int64
	rt      *runtime
	rule    rules.Rule
}

// ruleSet is one rules version, resolved for this sampler's service.
type ruleSet struct {
	version  int64
	matchers []matcher
	byName   map[string]*runtime
	index    *rules.Index
	// need has a bit for each HTTP attribute (by the current conventions)
	// that some rule looks at: scan stops once it has found them all.
	need uint8
}

// buildRuleSet resolves rs (in matching order) for a service and the
// instance's resource, reusing the runtimes of rules the previous set
// already had. The control plane sends only the rules that match both; the
// sampler checks again, so that it never applies a rule meant for other
// instances (a control plane that predates resource attributes sends every
// rule of the service).
func buildRuleSet(version int64, rs []rules.Rule, service, serviceType string, resource map[string]string, prev *ruleSet, now int64) *ruleSet {
	set := &ruleSet{version: version, byName: map[string]*runtime{}}
	var compiled []rules.Compiled
	for _, r := range rs {
		c := rules.Compile(r)
		if !c.MatchesInstance(service, serviceType, resource) || !c.ResourceARN.MatchesAll() {
			// A rule on resource ARNs cannot match a span: spans carry none.
			continue
		}
		var rt *runtime
		if prev != nil {
			rt = prev.byName[r.Name]
		}
		if rt == nil {
			rt = newRuntime(r.Name, now)
		}
		set.byName[r.Name] = rt
		var need uint8 // the HTTP attributes this rule looks at
		if !c.Host.MatchesAll() {
			need |= 1 << serverAddress
		}
		if !c.HTTPMethod.MatchesAll() {
			need |= 1 << requestMethod
		}
		if !c.URLPath.MatchesAll() {
			need |= 1 << urlPath
		}
		set.need |= need
		m := matcher{host: c.Host, method: c.HTTPMethod, path: c.URLPath, attrs: c.Attributes, rt: rt, rule: r,
			anyRequest: need == 0 && len(c.Attributes) == 0}
		if !r.ExpireTime.IsZero() {
			m.expires = r.ExpireTime.UnixNano()
		}
		set.matchers = append(set.matchers, m)
		compiled = append(compiled, c)
	}
	set.index = rules.NewIndex(compiled)
	return set
}

// request is what a span start offers the rules.
type request struct {
	host, method, path string
	attrs              []attribute.KeyValue
	now                int64 // unix nanoseconds, for rules that expire
}

// The HTTP attribute keys a scan picks out.
const (
	serverAddress = iota
	httpHost
	requestMethod
	httpMethod
	urlPath
	httpTarget
)

// scan picks host, method and path out of the span's attributes, as far as
// the rules look at them: by the current OpenTelemetry semantic conventions
// (server.address, http.request.method, url.path) or, where those are absent
// or empty, by the older ones (http.host, http.method, http.target). As in
// OpenTelemetry, the last of several attributes with one key counts (if it
// is empty, the older key does, not an earlier value), so it scans from the
// end, and it stops once it has every value the rules need by the current
// conventions. Values are read as they are found, positions of the older
// keys noted for later: copying an attribute.Value costs more than the rest
// of a step.
func (s *ruleSet) scan(req *request) {
	missing := s.need
	if missing == 0 {
		return
	}
	attrs := req.attrs
	// open has the keys still missing whose own values may count: not those
	// whose last value was empty, for which the older key counts.
	open := missing
	// 1 + the position of the last http.host, http.method and http.target.
	var oldHost, oldMethod, oldTarget int
	for i := len(attrs) - 1; i >= 0 && missing != 0; i-- {
		a := &attrs[i]
		switch keyOf(string(a.Key)) {
		case serverAddress:
			if open&(1<<serverAddress) != 0 {
				open &^= 1 << serverAddress
				if req.host = a.Value.AsString(); req.host != "" {
					missing &^= 1 << serverAddress
				}
			}
		case requestMethod:
			if open&(1<<requestMethod) != 0 {
				open &^= 1 << requestMethod
				if req.method = a.Value.AsString(); req.method != "" {
					missing &^= 1 << requestMethod
				}
			}
		case urlPath:
			if open&(1<<urlPath) != 0 {
				open &^= 1 << urlPath
				if req.path = a.Value.AsString(); req.path != "" {
					missing &^= 1 << urlPath
				}
			}
		case httpHost:
			oldHost = cmp.Or(oldHost, i+1)
		case httpMethod:
			oldMethod = cmp.Or(oldMethod, i+1)
		case httpTarget:
			oldTarget = cmp.Or(oldTarget, i+1)
		}
	}
	if missing&(1<<serverAddress) != 0 && oldHost > 0 {
		req.host = attrs[oldHost-1].Value.AsString()
	}
	if missing&(1<<requestMethod) != 0 && oldMethod > 0 {
		req.method = attrs[oldMethod-1].Value.AsString()
	}
	if missing&(1<<urlPath) != 0 && oldTarget > 0 {
		req.path = stripQuery(attrs[oldTarget-1].Value.AsString())
	}
}

// keyOf says which HTTP attribute key k is, or -1. It dispatches on the
// length first: most attributes are none of these, and a length compare
// rejects them at once.
func keyOf(k string) int {
	switch len(k) {
	case len("url.path"):
		if k == "url.path" {
			return urlPath
		}
	case len("http.host"):
		if k == "http.host" {
			return httpHost
		}
	case len("http.method"): // and http.target
		switch k {
		case "http.method":
			return httpMethod
		case "http.target":
			return httpTarget
		}
	case len("server.address"):
		if k == "server.address" {
			return serverAddress
		}
	case len("http.request.method"):
		// In two parts, each short enough to compare inline.
		if k[:10] == "http.reque" && k[10:] == "st.method" {
			return requestMethod
		}
	}
	return -1
}

// stripQuery cuts a request target at its query or fragment.
func stripQuery(target string) string {
	for j := 0; j < len(target); j++ {
		if target[j] == '?' || target[j] == '#' {
			return target[:j]
		}
	}
	return target
}

func (m *matcher) matches(req *request) bool {
	if m.expires != 0 && req.now >= m.expires {
		return false
	}
	if m.anyRequest {
		return true
	}
	if !m.method.Match(req.method) || !m.path.Match(req.path) {
		return false
	}
	return m.matchesRest(req)
}

// matchesRest checks what the index does not: host and attributes.
func (m *matcher) matchesRest(req *request) bool {
	if m.expires != 0 && req.now >= m.expires {
		return false
	}
	if !m.host.Match(req.host) {
		return false
	}
	for i := range m.attrs {
		a := &m.attrs[i]
		v, ok := lookup(req.attrs, a.Key)
		if ok && !a.Glob.Match(v) || !ok && !a.Glob.MatchesAll() {
			return false
		}
	}
	return true
}

// lookup returns the value of the last attribute with key, as OpenTelemetry
// records it.
func lookup(attrs []attribute.KeyValue, key string) (string, bool) {
	for i := len(attrs) - 1; i >= 0; i-- {
		if string(attrs[i].Key) == key {
			return valueString(&attrs[i].Value), true
		}
	}
	return "", false
}

// valueString is an attribute's value as rules see it.
func valueString(v *attribute.Value) string {
	if v.Type() == attribute.STRING {
		return v.AsString()
	}
	return v.String()
}

func (s *ruleSet) match(req *request) *matcher {
	if s.index.Small() {
		c, ok := s.index.Candidates64(req.method, req.path)
		if !ok {
			return s.matchAll(req)
		}
		decided := s.index.Decided64()
		for ; c != 0; c &= c - 1 {
			i := bits.TrailingZeros64(c)
			m := &s.matchers[i]
			if decided&(1<<i) != 0 {
				if m.matchesRest(req) {
					return m
				}
			} else if m.matches(req) {
				return m
			}
		}
		return nil
	}
	if c, ok := s.index.Candidates(req.method, req.path); ok {
		for i := c.Next(); i >= 0; i = c.Next() {
			m := &s.matchers[i]
			if s.index.Settled(i) {
				if m.matchesRest(req) {
					return m
				}
			} else if m.matches(req) {
				return m
			}
		}
		return nil
	}
	return s.matchAll(req)
}

// matchAll tries every rule, for a request the index cannot narrow.
func (s *ruleSet) matchAll(req *request) *matcher {
	for i := range s.matchers {
		if s.matchers[i].matches(req) {
			return &s.matchers[i]
		}
	}
	return nil
}
