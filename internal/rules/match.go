package rules

// Request is what a rule is matched against. An attribute absent from
// Attributes matches only "*".
type Request struct {
	ServiceName string
	ServiceType string
	Host        string
	HTTPMethod  string
	URLPath     string
	ResourceARN string
	Attributes  map[string]string
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
	return c
}

// MatchesService reports whether the rule applies to a service of this name
// and type; it is all that depends on the SDK instance rather than the request.
func (c *Compiled) MatchesService(name, typ string) bool {
	return c.ServiceName.Match(name) && c.ServiceType.Match(typ)
}

// Matches reports whether req matches every condition of the rule.
func (c *Compiled) Matches(req *Request) bool {
	if !c.MatchesService(req.ServiceName, req.ServiceType) ||
		!c.Host.Match(req.Host) || !c.HTTPMethod.Match(req.HTTPMethod) ||
		!c.URLPath.Match(req.URLPath) || !c.ResourceARN.Match(req.ResourceARN) {
		return false
	}
	for i := range c.Attributes {
		a := &c.Attributes[i]
		v, ok := req.Attributes[a.Key]
		if ok && !a.Glob.Match(v) || !ok && !a.Glob.MatchesAll() {
			return false
		}
	}
	return true
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
