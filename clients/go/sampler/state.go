package sampler

import (
	"encoding/binary"
	"math"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"

	"github.com/tracesampling/controlplane/internal/reservoir"
	"github.com/tracesampling/controlplane/internal/rules"
)

// runtime is what a rule carries across rule-set versions: its quota, its
// borrowing allowance, the fixed rate in force and its counters. A new rules
// version keeps the runtime of every rule it keeps, so no count is lost.
type runtime struct {
	name     string
	quota    reservoir.Bucket
	expiry   atomic.Int64 // unix ns after which the quota is void; 0 = no quota
	borrow   reservoir.Bucket
	rateBits atomic.Uint64 // trace-ID threshold of the fixed rate in force
	counters counters

	// Guarded by the sampler's report mutex.
	receipt       string
	targetVersion int64 // rules version of the last target applied
}

func newRuntime(name string, now int64) *runtime {
	rt := &runtime{name: name}
	rt.borrow.SetRate(now, 1, 0)
	return rt
}

func (rt *runtime) setFixedRate(rate float64) { rt.rateBits.Store(rateThreshold(rate)) }

// rateThreshold returns the bound that OpenTelemetry's TraceIDRatioBased
// sampler compares the trace ID's low 63 bits against, so that this sampler
// and every OpenTelemetry sampler at the same rate agree on every trace.
func rateThreshold(rate float64) uint64 {
	switch {
	case !(rate > 0):
		return 0
	case rate >= 1:
		return math.MaxUint64
	}
	return uint64(rate * (1 << 63))
}

func traceIDBits(id [16]byte) uint64 { return binary.BigEndian.Uint64(id[8:16]) >> 1 }

// matcher is one rule of one rules version, with only the parts that depend
// on the request left to check.
type matcher struct {
	host, method, path rules.Glob
	attrs              []rules.AttributeGlob
	anyRequest         bool // every request-level part is "*"
	rt                 *runtime
	rule               rules.Rule
}

// ruleSet is one rules version, resolved for this sampler's service.
type ruleSet struct {
	version  int64
	matchers []matcher
	byName   map[string]*runtime
	// needHTTP is false when no rule looks at host, method or path, so their
	// attributes need not be looked up.
	needHTTP bool
	index    *rules.Index
}

// buildRuleSet resolves rs (in matching order) for a service, reusing the
// runtimes of rules the previous set already had.
func buildRuleSet(version int64, rs []rules.Rule, service, serviceType string, prev *ruleSet, now int64) *ruleSet {
	set := &ruleSet{version: version, byName: map[string]*runtime{}}
	var compiled []rules.Compiled
	for _, r := range rs {
		c := rules.Compile(r)
		if !c.MatchesService(service, serviceType) || !c.ResourceARN.MatchesAll() {
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
		m := matcher{host: c.Host, method: c.HTTPMethod, path: c.URLPath, attrs: c.Attributes, rt: rt, rule: r}
		m.anyRequest = c.Host.MatchesAll() && c.HTTPMethod.MatchesAll() && c.URLPath.MatchesAll() && len(c.Attributes) == 0
		set.needHTTP = set.needHTTP || !(c.Host.MatchesAll() && c.HTTPMethod.MatchesAll() && c.URLPath.MatchesAll())
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
}

// httpFields picks host, method and path out of span attributes, by the
// current OpenTelemetry semantic conventions and by the older ones.
func httpFields(attrs []attribute.KeyValue) (host, method, path string) {
	// Dispatch on the key's length first: most attributes are none of
	// these, and a length compare rejects them at once.
	for i := range attrs {
		k := string(attrs[i].Key)
		switch len(k) {
		case len("url.path"):
			if k == "url.path" {
				path = attrs[i].Value.AsString()
			}
		case len("http.host"):
			if k == "http.host" && host == "" {
				host = attrs[i].Value.AsString()
			}
		case len("http.method"): // and http.target
			switch k {
			case "http.method":
				method = attrs[i].Value.AsString()
			case "http.target":
				if path == "" {
					path = stripQuery(attrs[i].Value.AsString())
				}
			}
		case len("server.address"):
			if k == "server.address" && host == "" {
				host = attrs[i].Value.AsString()
			}
		case len("http.request.method"):
			if k == "http.request.method" {
				method = attrs[i].Value.AsString()
			}
		}
	}
	return host, method, path
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

func lookup(attrs []attribute.KeyValue, key string) (string, bool) {
	for i := range attrs {
		if string(attrs[i].Key) == key {
			if attrs[i].Value.Type() == attribute.STRING {
				return attrs[i].Value.AsString(), true
			}
			return attrs[i].Value.String(), true
		}
	}
	return "", false
}

func (s *ruleSet) match(req *request) *matcher {
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
	for i := range s.matchers {
		if s.matchers[i].matches(req) {
			return &s.matchers[i]
		}
	}
	return nil
}
