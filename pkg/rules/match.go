package rules

// Request is what a rule is matched against. An attribute absent from
// Attributes, or from Resource, matches only "*".
type Request struct {
	ServiceName string
	ServiceType string
	Host        string
	HTTPMethod  string
	URLPath     string
	ResourceARN string
	Attributes  map[string]string
	// Resource is the SDK instance's resource attributes
	// (deployment.environment.name=production), which a rule's
	// ResourceAttributes are matched against.
	Resource map[string]string
}

// AttributeGlob is one compiled attribute condition of a rule.
type AttributeGlob struct {
	Key  string
	Glob Glob
}

// Compiled is a rule with its globs compiled once, so matching does not
// allocate. The SDK keeps the request-level parts and resolves the
// service-level parts once per rule set.
type Compiled struct {
	Rule        Rule
	ServiceName Glob
	ServiceType Glob
	Host        Glob
	HTTPMethod  Glob
	URLPath     Glob
	ResourceARN Glob
	Attributes  []AttributeGlob // sorted by key
	// ResourceAttributes, sorted by key, depend on the instance like the
	// service globs do.
	ResourceAttributes []AttributeGlob
}

// Compile compiles r's globs.
func Compile(r Rule) Compiled {
	c := Compiled{
		Rule:        r,
		ServiceName: CompileGlob(r.ServiceName),
		ServiceType: CompileGlob(r.ServiceType),
		Host:        CompileGlob(r.Host),
		HTTPMethod:  CompileGlob(r.HTTPMethod),
		URLPath:     CompileGlob(r.URLPath),
		ResourceARN: CompileGlob(r.ResourceARN),
	}
	for _, k := range sortedKeys(r.Attributes) {
		c.Attributes = append(c.Attributes, AttributeGlob{Key: k, Glob: CompileGlob(r.Attributes[k])})
	}
	for _, k := range sortedKeys(r.ResourceAttributes) {
		c.ResourceAttributes = append(c.ResourceAttributes, AttributeGlob{Key: k, Glob: CompileGlob(r.ResourceAttributes[k])})
	}
	return c
}

// MatchesService reports whether the rule applies to a service of this name
// and type, whatever the instance's resource.
func (c *Compiled) MatchesService(name, typ string) bool {
	return c.ServiceName.Match(name) && c.ServiceType.Match(typ)
}

// MatchesInstance reports whether the rule applies to an SDK instance of
// this service name, type and resource: all that depends on the instance
// rather than the request.
func (c *Compiled) MatchesInstance(name, typ string, resource map[string]string) bool {
	if !c.MatchesService(name, typ) {
		return false
	}
	_, missed := missedAttribute(c.ResourceAttributes, resource)
	return !missed
}

// NeedsResource reports whether the rule matches only instances that
// declare some resource attribute: it has a resource glob other than "*".
// Clients that declare no resource (X-Ray's, Jaeger's) never match it.
func (c *Compiled) NeedsResource() bool {
	for i := range c.ResourceAttributes {
		if !c.ResourceAttributes[i].Glob.MatchesAll() {
			return true
		}
	}
	return false
}

// missedAttribute returns the first of globs that attrs fails: an absent
// attribute matches only "*".
func missedAttribute(globs []AttributeGlob, attrs map[string]string) (i int, missed bool) {
	for i := range globs {
		a := &globs[i]
		v, ok := attrs[a.Key]
		if ok && !a.Glob.Match(v) || !ok && !a.Glob.MatchesAll() {
			return i, true
		}
	}
	return 0, false
}

// Matches reports whether req matches every condition of the rule.
func (c *Compiled) Matches(req *Request) bool {
	_, missed := c.Mismatch(req)
	return !missed
}

// Miss names the condition of a rule that a request failed.
type Miss struct {
	// Field is the rule's field, as the API names it: "service_name",
	// "service_type", "resource_attributes" (then Key is the attribute's
	// key), "host", "http_method", "url_path", "resource_arn" or
	// "attributes" (then Key is the attribute's key).
	Field, Key string
	// Value is the request's value; Absent says the request has no such
	// attribute.
	Value  string
	Absent bool
}

// Pattern returns the glob of r that m names, as r holds it.
func (m Miss) Pattern(r *Rule) string {
	switch m.Field {
	case "service_name":
		return r.ServiceName
	case "service_type":
		return r.ServiceType
	case "host":
		return r.Host
	case "http_method":
		return r.HTTPMethod
	case "url_path":
		return r.URLPath
	case "resource_arn":
		return r.ResourceARN
	case "resource_attributes":
		return r.ResourceAttributes[m.Key]
	}
	return r.Attributes[m.Key]
}

// Mismatch returns the first condition of the rule that req fails, in the
// order Matches tries them; missed is false when req matches. Matches is
// Mismatch, so that an explanation of why a rule did not match can never
// disagree with matching. It does not allocate.
func (c *Compiled) Mismatch(req *Request) (m Miss, missed bool) {
	switch {
	case !c.ServiceName.Match(req.ServiceName):
		return Miss{Field: "service_name", Value: req.ServiceName}, true
	case !c.ServiceType.Match(req.ServiceType):
		return Miss{Field: "service_type", Value: req.ServiceType}, true
	}
	if i, missed := missedAttribute(c.ResourceAttributes, req.Resource); missed {
		k := c.ResourceAttributes[i].Key
		v, ok := req.Resource[k]
		return Miss{Field: "resource_attributes", Key: k, Value: v, Absent: !ok}, true
	}
	switch {
	case !c.Host.Match(req.Host):
		return Miss{Field: "host", Value: req.Host}, true
	case !c.HTTPMethod.Match(req.HTTPMethod):
		return Miss{Field: "http_method", Value: req.HTTPMethod}, true
	case !c.URLPath.Match(req.URLPath):
		return Miss{Field: "url_path", Value: req.URLPath}, true
	case !c.ResourceARN.Match(req.ResourceARN):
		return Miss{Field: "resource_arn", Value: req.ResourceARN}, true
	}
	if i, missed := missedAttribute(c.Attributes, req.Attributes); missed {
		k := c.Attributes[i].Key
		v, ok := req.Attributes[k]
		return Miss{Field: "attributes", Key: k, Value: v, Absent: !ok}, true
	}
	return Miss{}, false
}

// Trial is what became of one rule, in matching order, when a request was
// explained.
type Trial struct {
	// Position is the rule's index in matching order.
	Position int
	Rule     *Compiled
	// Miss is the condition it failed.
	Miss Miss
}

// Explain returns the rule that Match returns for req and its position
// (nil and -1 if none matches), and why each rule tried before it did not
// match, up to max of them (all with max < 0); skipped counts the rest.
func (s *Set) Explain(req *Request, max int) (match *Compiled, position int, tried []Trial, skipped int) {
	for i := range s.rules {
		c := &s.rules[i]
		miss, missed := c.Mismatch(req)
		if !missed {
			return c, i, tried, skipped
		}
		if max < 0 || len(tried) < max {
			tried = append(tried, Trial{Position: i, Rule: c, Miss: miss})
		} else {
			skipped++
		}
	}
	return nil, -1, tried, skipped
}

// Set is an ordered, compiled rule set. It is immutable once built and safe
// for concurrent use.
type Set struct {
	rules []Compiled
	index *Index
}

// NewSet compiles rs and orders them by priority, then name, with the Default
// rule last. It does not modify rs, and keeps deep copies, so later edits of
// rs (or of their maps) do not reach the set.
func NewSet(rs []Rule) *Set {
	sorted := make([]Rule, len(rs))
	for i := range rs {
		sorted[i] = rs[i].Clone()
	}
	Sort(sorted)
	s := &Set{rules: make([]Compiled, len(sorted))}
	for i, r := range sorted {
		s.rules[i] = Compile(r)
	}
	s.index = NewIndex(s.rules)
	return s
}

// Rules returns the compiled rules in the order they are tried. The caller
// must not modify them.
func (s *Set) Rules() []Compiled { return s.rules }

// Match returns the first rule that matches req, or nil if none does (a set
// that holds the Default rule always matches).
func (s *Set) Match(req *Request) *Compiled {
	if c, ok := s.index.Candidates(req.HTTPMethod, req.URLPath); ok {
		for i := c.Next(); i >= 0; i = c.Next() {
			if s.rules[i].Matches(req) {
				return &s.rules[i]
			}
		}
		return nil
	}
	for i := range s.rules {
		if s.rules[i].Matches(req) {
			return &s.rules[i]
		}
	}
	return nil
}
