// Package files reads and writes the CLI's YAML files: the rules file and
// the budgets file. Both are one list under one key; one loader reads that
// shape strictly (an unknown or repeated field is a problem), checks each
// entry with the domain's own validation, and reports every problem with
// the line it is on, so that a user fixes them all in one go.
package files

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
)

// Error lists every problem of a file, each naming the file, line, entry
// and field.
type Error struct {
	File     string
	Problems []string
}

func (e *Error) Error() string {
	n := len(e.Problems)
	s := "s"
	if n == 1 {
		s = ""
	}
	return fmt.Sprintf("%s: %d problem%s found, nothing was changed:\n%s", e.File, n, s, strings.Join(e.Problems, "\n"))
}

// DisplayName is how messages name the file at path: "-" is "<stdin>".
func DisplayName(path string) string {
	if path == "-" {
		return "<stdin>"
	}
	return path
}

// read reads path, or stdin for "-".
func read(path string, stdin io.Reader) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(stdin)
	}
	return os.ReadFile(path)
}

// loader collects the problems of one file.
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

// err returns the problems found, in line order, as an *Error; nil if none.
func (l *loader) err() error {
	if len(l.problems) == 0 {
		return nil
	}
	slices.SortStableFunc(l.problems, func(a, b problem) int { return cmp.Compare(a.line, b.line) })
	texts := make([]string, len(l.problems))
	for i, p := range l.problems {
		texts[i] = p.text
	}
	return &Error{File: l.file, Problems: texts}
}

// list describes the one list a file holds.
type list struct {
	key  string // the file's one field: "rules"
	noun string // what an entry is: "rule"
	// item decodes, validates and keeps one entry (index from 1), reporting
	// its problems to the loader. It returns the entry's name ("" if it has
	// none) and whether it had no problem; keep is called for an entry only
	// once its name is known to be unique in the file.
	item func(index int, n *yaml.Node) (name string, ok bool, keep func())
}

// load reads data as one YAML document holding a mapping with one field,
// the list, and hands each entry to the list's item. An entry with the
// name of an earlier one is a problem.
func (l *loader) load(data []byte, ls list) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			l.addf(0, `the file is empty; want a "%s:" list`, ls.key)
		} else {
			l.syntax(data, err)
		}
		return
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			l.syntax(data, err)
		} else {
			l.addf(extra.Line, `only one YAML document is allowed; put every %s under one "%s:" list`, ls.noun, ls.key)
		}
		return
	}
	root := resolve(&doc)
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = resolve(root.Content[0])
	}
	if root.Kind != yaml.MappingNode {
		l.addf(root.Line, `want a mapping with a "%s:" list, got %s`, ls.key, kindName(root))
		return
	}
	pairs, errs := mappingPairs(root)
	for _, e := range errs {
		l.addf(e.line, "%s", e.msg)
	}
	var items *yaml.Node
	for _, p := range pairs {
		if p.key.Value != ls.key {
			l.addf(p.key.Line, `unknown field %q; the file has one field, %q`, p.key.Value, ls.key)
			continue
		}
		items = resolve(p.val)
	}
	if items == nil {
		if len(l.problems) == 0 {
			l.addf(root.Line, `no "%s:" list`, ls.key)
		}
		return
	}
	if isNull(items) {
		return // "rules:" with nothing after it: an empty list
	}
	if items.Kind != yaml.SequenceNode {
		l.addf(items.Line, `%q must be a list of %ss, got %s`, ls.key, ls.noun, kindName(items))
		return
	}
	seen := map[string][2]int{} // name -> index, line
	for i, item := range items.Content {
		n := resolve(item)
		name, ok, keep := ls.item(i+1, n)
		if name != "" {
			if first, dup := seen[name]; dup {
				l.addf(n.Line, "%s %q (#%d): name: %s #%d (line %d) has the same name", ls.noun, name, i+1, ls.noun, first[0], first[1])
				continue
			}
			seen[name] = [2]int{i + 1, n.Line}
		}
		if ok {
			keep()
		}
	}
}

// syntax reports a YAML syntax error.
func (l *loader) syntax(data []byte, err error) {
	line, msg := syntaxError(err)
	l.addf(syntaxLine(data, msg, line), "invalid YAML: %s", msg)
}

// syntaxLine finds the line of a syntax error. The YAML library reports the
// line where the construct around the problem began, and counts it from 0
// at that: a bad indent on line 40 of a list is "line 1". The problem is on
// the first line that makes the file's beginning fail with the same
// message, found by bisection over the lines (a prefix that stops at a line
// end is itself a document, and fails only if it holds a problem). Where
// that finds nothing better, the library's line stands.
func syntaxLine(data []byte, msg string, reported int) int {
	var ends []int // offset after each line
	for i, b := range data {
		if b == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(ends) == 0 || ends[len(ends)-1] != len(data) {
		ends = append(ends, len(data))
	}
	failsSo := func(lines int) bool {
		dec := yaml.NewDecoder(bytes.NewReader(data[:ends[lines-1]]))
		for {
			var n yaml.Node
			err := dec.Decode(&n)
			if errors.Is(err, io.EOF) {
				return false
			}
			if err != nil {
				_, m := syntaxError(err)
				return m == msg
			}
		}
	}
	// Invariant: the first lo lines do not fail so, the first hi lines do.
	lo, hi := 0, len(ends)
	if !failsSo(hi) {
		return reported
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if failsSo(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

// nodeError is a problem at one line of the file.
type nodeError struct {
	line int
	msg  string
}

func errAt(n *yaml.Node, format string, args ...any) *nodeError {
	return &nodeError{line: n.Line, msg: fmt.Sprintf(format, args...)}
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
