package cli

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/rules"
)

// The rules file is the YAML form of a list of rules, with the API's
// snake_case field names:
//
//	rules:
//	  - name: checkout
//	    priority: 10
//	    fixed_rate: 0.5
//	    reservoir_size: 5
//	    service_name: "shop-*"
//	    attributes: {tier: gold}
//	    labels: {team: payments}
//
// It is what `apply` and `create -f` read and what `list -o yaml` and
// `get -o yaml` print, so that output can be edited and applied back. A rule
// in the file is its whole desired state: an omitted glob means "*", an
// omitted number zero, an omitted map or description empty. Output-only
// fields (etag, times) are never printed and are refused on input.

// ruleFile is the document the encoder writes.
type ruleFile struct {
	Rules []fileRule `yaml:"rules"`
}

// fileRule is one rule as printed; the field order is the proto's.
type fileRule struct {
	Name          string            `yaml:"name"`
	Priority      int32             `yaml:"priority,omitempty"`
	FixedRate     float64           `yaml:"fixed_rate"`
	ReservoirSize int64             `yaml:"reservoir_size"`
	ServiceName   string            `yaml:"service_name,omitempty"`
	ServiceType   string            `yaml:"service_type,omitempty"`
	Host          string            `yaml:"host,omitempty"`
	HTTPMethod    string            `yaml:"http_method,omitempty"`
	URLPath       string            `yaml:"url_path,omitempty"`
	ResourceARN   string            `yaml:"resource_arn,omitempty"`
	Attributes    map[string]string `yaml:"attributes,omitempty,flow"`
	Description   string            `yaml:"description,omitempty"`
	Labels        map[string]string `yaml:"labels,omitempty,flow"`
}

// toFileRule returns the printed form of r: globs that match anything and
// the Default rule's fixed priority are left out, as the file means them
// when they are absent.
func toFileRule(r rules.Rule) fileRule {
	r = r.Normalize()
	glob := func(s string) string {
		if s == "*" {
			return ""
		}
		return s
	}
	f := fileRule{
		Name:          r.Name,
		Priority:      r.Priority,
		FixedRate:     r.FixedRate,
		ReservoirSize: r.ReservoirSize,
		ServiceName:   glob(r.ServiceName),
		ServiceType:   glob(r.ServiceType),
		Host:          glob(r.Host),
		HTTPMethod:    glob(r.HTTPMethod),
		URLPath:       glob(r.URLPath),
		ResourceARN:   glob(r.ResourceARN),
		Attributes:    r.Attributes,
		Description:   r.Description,
		Labels:        r.Labels,
	}
	if r.IsDefault() {
		f.Priority = 0
	}
	return f
}

// writeRulesFile prints rules in the rules file format.
func writeRulesFile(w io.Writer, rs []*pb.Rule) error {
	doc := ruleFile{Rules: make([]fileRule, 0, len(rs))}
	for _, p := range rs {
		doc.Rules = append(doc.Rules, toFileRule(apiconv.RuleFromProto(p)))
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return enc.Close()
}

// fileEntry is one rule read from a file, normalized, and where it was.
type fileEntry struct {
	Rule  rules.Rule
	Index int // 1-based position in the file
	Line  int
}

// invalidFileError lists every problem of a rules file, each naming the file,
// line, rule and field, so that a user fixes them all in one go.
type invalidFileError struct {
	File     string
	Problems []string
}

func (e *invalidFileError) Error() string {
	n := len(e.Problems)
	s := "s"
	if n == 1 {
		s = ""
	}
	return fmt.Sprintf("%s: %d problem%s found, nothing was changed:\n%s", e.File, n, s, strings.Join(e.Problems, "\n"))
}

// readRulesFile reads path ("-" for stdin) and loads it.
func readRulesFile(path string, stdin io.Reader) ([]fileEntry, error) {
	var (
		data []byte
		err  error
		name = path
	)
	if path == "-" {
		name = "<stdin>"
		data, err = io.ReadAll(stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, invalidInput(err)
	}
	return loadRules(name, data)
}

// loadRules decodes a rules file strictly (an unknown or repeated field is an
// error, so a typo never passes silently) and checks every rule with
// rules.Validate, the one definition of a valid rule, plus what only a file
// can get wrong: two rules with one name. It returns the rules in file order,
// or an *invalidFileError with every problem found.
func loadRules(name string, data []byte) ([]fileEntry, error) {
	l := &loader{file: name}
	entries := l.load(data)
	if len(l.problems) > 0 {
		slices.SortStableFunc(l.problems, func(a, b problem) int { return cmp.Compare(a.line, b.line) })
		texts := make([]string, len(l.problems))
		for i, p := range l.problems {
			texts[i] = p.text
		}
		return nil, &invalidFileError{File: name, Problems: texts}
	}
	return entries, nil
}

type loader struct {
	file     string
	problems []problem
}

type problem struct {
	line int
	text string
}

func (l *loader) addf(line int, format string, args ...any) {
	pos := l.file
	if line > 0 {
		pos += ":" + strconv.Itoa(line)
	}
	l.problems = append(l.problems, problem{line, pos + ": " + fmt.Sprintf(format, args...)})
}

func (l *loader) load(data []byte) []fileEntry {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			l.addf(0, `the file is empty; want a "rules:" list`)
		} else {
			line, msg := syntaxError(err)
			l.addf(line, "invalid YAML: %s", msg)
		}
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			line, msg := syntaxError(err)
			l.addf(line, "invalid YAML: %s", msg)
		} else {
			l.addf(extra.Line, `only one YAML document is allowed; put every rule under one "rules:" list`)
		}
		return nil
	}
	root := resolve(&doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = resolve(root.Content[0])
	}
	if root.Kind != yaml.MappingNode {
		l.addf(root.Line, `want a mapping with a "rules:" list, got %s`, kindName(root))
		return nil
	}
	pairs, errs := mappingPairs(root)
	for _, e := range errs {
		l.addf(e.line, "%s", e.msg)
	}
	var list *yaml.Node
	for _, p := range pairs {
		if p.key.Value != "rules" {
			l.addf(p.key.Line, `unknown field %q; the file has one field, "rules"`, p.key.Value)
			continue
		}
		list = resolve(p.val)
	}
	if list == nil {
		if len(l.problems) == 0 {
			l.addf(root.Line, `no "rules:" list`)
		}
		return nil
	}
	if isNull(list) {
		return nil // "rules:" with nothing after it: no rules
	}
	if list.Kind != yaml.SequenceNode {
		l.addf(list.Line, `"rules" must be a list of rules, got %s`, kindName(list))
		return nil
	}
	var (
		entries []fileEntry
		seen    = map[string]fileEntry{}
	)
	for i, item := range list.Content {
		e, ok := l.rule(i+1, resolve(item))
		if e.Rule.Name != "" {
			if first, dup := seen[e.Rule.Name]; dup {
				l.addf(e.Line, "rule %q (#%d): name: rule #%d (line %d) has the same name", e.Rule.Name, e.Index, first.Index, first.Line)
				continue
			}
			seen[e.Rule.Name] = e
		}
		if ok {
			entries = append(entries, e)
		}
	}
	return entries
}

// rule decodes and validates one rule; ok is false if it had problems. The
// entry is returned either way, with as much of the rule as was read.
func (l *loader) rule(index int, n *yaml.Node) (e fileEntry, ok bool) {
	e = fileEntry{Index: index, Line: n.Line}
	if n.Kind != yaml.MappingNode {
		l.addf(n.Line, "rule #%d: want a mapping of fields, got %s", index, kindName(n))
		return e, false
	}
	pairs, perrs := mappingPairs(n)
	var r rules.Rule
	// Find the name first, so that every problem can name the rule.
	for _, p := range pairs {
		if p.key.Value == "name" {
			v := resolve(p.val)
			if v.Kind == yaml.ScalarNode && !isNull(v) {
				r.Name = v.Value
			}
		}
	}
	who := fmt.Sprintf("rule #%d", index)
	if r.Name != "" {
		who = fmt.Sprintf("rule %q (#%d)", r.Name, index)
	}
	before := len(l.problems)
	for _, e := range perrs {
		l.addf(e.line, "%s: %s", who, e.msg)
	}
	lines := map[string]int{}   // field (as Validate names it) -> line
	failed := map[string]bool{} // fields that did not decode
	for _, p := range pairs {
		field := p.key.Value
		lines[field] = p.key.Line
		if err := decodeField(&r, field, resolve(p.val), lines); err != nil {
			failed[field] = true
			l.addf(err.line, "%s: %s: %s", who, field, err.msg)
		}
	}
	r = r.Normalize()
	var ve *rules.ValidationError
	if err := rules.Validate(&r); errors.As(err, &ve) {
		for _, v := range ve.Violations {
			top, _, _ := strings.Cut(v.Field, ".")
			if failed[top] {
				continue // already reported as undecodable
			}
			line, ok := lines[v.Field]
			if !ok {
				line, ok = lines[top]
			}
			if !ok {
				line = n.Line
			}
			l.addf(line, "%s: %s: %s", who, v.Field, v.Description)
		}
	}
	if err := rules.CheckDefault(&r); err != nil {
		l.addf(n.Line, "%s: %v", who, err)
	}
	e.Rule = r
	return e, len(l.problems) == before
}

// nodeError is a problem at one line of the file.
type nodeError struct {
	line int
	msg  string
}

func errAt(n *yaml.Node, format string, args ...any) *nodeError {
	return &nodeError{line: n.Line, msg: fmt.Sprintf(format, args...)}
}

// decodeField sets the field of r that a file key names. Map entries record
// their lines in lines, keyed as Validate names them ("attributes.tier").
func decodeField(r *rules.Rule, field string, v *yaml.Node, lines map[string]int) *nodeError {
	switch field {
	case "name":
		return decodeString(v, &r.Name)
	case "priority":
		var n int64
		if err := decodeInt(v, &n); err != nil {
			return err
		}
		if n < math.MinInt32 || n > math.MaxInt32 {
			return errAt(v, "%d is out of range", n)
		}
		r.Priority = int32(n)
		return nil
	case "fixed_rate":
		return decodeFloat(v, &r.FixedRate)
	case "reservoir_size":
		return decodeInt(v, &r.ReservoirSize)
	case "service_name":
		return decodeString(v, &r.ServiceName)
	case "service_type":
		return decodeString(v, &r.ServiceType)
	case "host":
		return decodeString(v, &r.Host)
	case "http_method":
		return decodeString(v, &r.HTTPMethod)
	case "url_path":
		return decodeString(v, &r.URLPath)
	case "resource_arn":
		return decodeString(v, &r.ResourceARN)
	case "attributes":
		return decodeMap(v, field, &r.Attributes, lines)
	case "description":
		return decodeString(v, &r.Description)
	case "labels":
		return decodeMap(v, field, &r.Labels, lines)
	case "etag", "create_time", "update_time":
		return errAt(v, "is output only and cannot be set in a file")
	}
	fields := []string{"name", "priority", "fixed_rate", "reservoir_size", "service_name", "service_type", "host",
		"http_method", "url_path", "resource_arn", "attributes", "description", "labels"}
	if near := closest(field, fields); near != "" {
		return errAt(v, "unknown field; did you mean %q?", near)
	}
	return errAt(v, "unknown field; a rule has %s", strings.Join(fields, ", "))
}

// closest returns the option within two edits of s, if there is one.
func closest(s string, options []string) string {
	best, bestDist := "", 3
	for _, o := range options {
		if d := editDistance(strings.ToLower(s), o); d < bestDist {
			best, bestDist = o, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func decodeString(v *yaml.Node, out *string) *nodeError {
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.ScalarNode {
		return errAt(v, "want text, got %s", kindName(v))
	}
	*out = v.Value
	return nil
}

// decodeInt decodes a whole number. A float is accepted when it is whole
// ("1e3", "2.0"): the YAML library would truncate 1.5 to 1 when it decodes
// into an integer, so the tag is checked here.
func decodeInt(v *yaml.Node, out *int64) *nodeError {
	if isNull(v) {
		return nil
	}
	if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!float" {
		var f float64
		if v.Decode(&f) == nil && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			*out = int64(f)
			return nil
		}
	}
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(out) != nil {
		return errAt(v, "want a whole number, got %s", valueText(v))
	}
	return nil
}

func decodeFloat(v *yaml.Node, out *float64) *nodeError {
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.ScalarNode || v.Decode(out) != nil {
		return errAt(v, "want a number, got %s", valueText(v))
	}
	return nil
}

func decodeMap(v *yaml.Node, field string, out *map[string]string, lines map[string]int) *nodeError {
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.MappingNode {
		return errAt(v, "want a mapping of key: value, got %s", kindName(v))
	}
	pairs, errs := mappingPairs(v)
	if len(errs) > 0 {
		return errs[0]
	}
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		val := resolve(p.val)
		if val.Kind != yaml.ScalarNode {
			return errAt(val, "%s: want text, got %s", p.key.Value, kindName(val))
		}
		text := val.Value
		if isNull(val) {
			text = ""
		}
		m[p.key.Value] = text
		lines[field+"."+p.key.Value] = p.key.Line
	}
	*out = m
	return nil
}

type pair struct{ key, val *yaml.Node }

// mappingPairs returns the entries of a mapping node, with YAML merge keys
// ("<<: *base") expanded below the mapping's own entries. A key given twice,
// a key that is not text and a bad merge are problems; the other entries
// are still returned.
func mappingPairs(n *yaml.Node) ([]pair, []*nodeError) {
	var (
		own, merged []pair
		errs        []*nodeError
		seen        = map[string]*yaml.Node{}
	)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			errs = append(errs, errAt(k, "keys must be text, got %s", kindName(k)))
			continue
		}
		if k.Tag == "!!merge" {
			ps, es := mergePairs(v)
			merged, errs = append(merged, ps...), append(errs, es...)
			continue
		}
		if first, dup := seen[k.Value]; dup {
			errs = append(errs, errAt(k, "%s: given twice (first at line %d)", k.Value, first.Line))
			continue
		}
		seen[k.Value] = k
		own = append(own, pair{k, v})
	}
	for _, p := range merged {
		if _, ok := seen[p.key.Value]; !ok {
			seen[p.key.Value] = p.key
			own = append(own, p)
		}
	}
	return own, errs
}

// mergePairs returns the entries a merge key's value brings: one mapping or
// a list of them, the first winning.
func mergePairs(v *yaml.Node) ([]pair, []*nodeError) {
	var srcs []*yaml.Node
	switch mv := resolve(v); mv.Kind {
	case yaml.MappingNode:
		srcs = append(srcs, mv)
	case yaml.SequenceNode:
		for _, s := range mv.Content {
			srcs = append(srcs, resolve(s))
		}
	}
	if len(srcs) == 0 {
		return nil, []*nodeError{errAt(v, "a merge (<<) wants a mapping or a list of mappings")}
	}
	var (
		pairs []pair
		errs  []*nodeError
		seen  = map[string]bool{}
	)
	for _, s := range srcs {
		if s.Kind != yaml.MappingNode {
			errs = append(errs, errAt(s, "a merge (<<) wants a mapping or a list of mappings"))
			continue
		}
		ps, es := mappingPairs(s)
		errs = append(errs, es...)
		for _, p := range ps {
			if !seen[p.key.Value] {
				seen[p.key.Value] = true
				pairs = append(pairs, p)
			}
		}
	}
	return pairs, errs
}

// resolve follows aliases (*name) to the node they stand for.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return strconv.Quote(n.Value)
	}
	return "nothing"
}

func valueText(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return strconv.Quote(n.Value)
	}
	return kindName(n)
}

// syntaxError returns the line and message of a YAML parse error; the
// library reports them as "yaml: line N: message".
func syntaxError(err error) (line int, msg string) {
	msg = strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, text, ok := strings.Cut(rest, ": "); ok {
			if line, err := strconv.Atoi(num); err == nil {
				return line, text
			}
		}
	}
	return 0, msg
}
