package rules

import (
	"bytes"
	"math/bits"
	"strings"
	"unicode/utf8"
)

// MaxIndexed is the largest rule set an Index narrows; larger sets are
// matched rule by rule.
const MaxIndexed = 64 * indexWords

const indexWords = 4

// Candidates is a set of rule positions, lowest (highest priority) first.
type Candidates [indexWords]uint64

// Next removes and returns the first position, or -1 when empty.
func (c *Candidates) Next() int {
	for w := range c {
		if c[w] != 0 {
			i := bits.TrailingZeros64(c[w])
			c[w] &= c[w] - 1
			return w*64 + i
		}
	}
	return -1
}

// Index narrows, for a request's HTTP method and URL path, the rules that can
// match it, so that a span start checks a candidate or two instead of every
// rule. It is a filter only: every candidate must still be matched in full,
// and every rule that matches is a candidate. Build it once per rule set; it
// is immutable and safe for concurrent use. Lookups do not allocate.
//
// Methods: rules whose method glob is a literal ("GET") are candidates only
// for that method; others always. Paths: a radix tree over the literal
// prefix of each path glob (up to its first wildcard) yields the rules whose
// prefix starts the request's path.
type Index struct {
	ok      bool
	methods []methodEntry
	anyVerb Candidates // rules whose method glob is not a literal
	decided Candidates // rules whose method and path a lookup settles fully
	nodes   []radixNode

	// For sets of up to 64 rules whose prefixes make few states, the same
	// trie as a dense table: one load per path byte instead of a search
	// among a node's children.
	dense []denseState
}

// denseState is one trie state: the next state for each folded ASCII byte
// (-1: none), and the rules whose prefix ends here.
type denseState struct {
	next [128]int16
	here uint64
}

// maxDenseStates bounds the dense table at 128 KiB of transitions.
const maxDenseStates = 512

// node is a trie node while an Index is built.
type node struct {
	kids map[byte]*node
	here Candidates
}

type methodEntry struct {
	method string // case-folded
	set    Candidates
}

type radixNode struct {
	label string // case-folded ASCII; its first byte selects it among siblings
	here  Candidates
	first []byte // first byte of each child's label
	kids  []int32
}

// NewIndex indexes rules, which are in matching order.
func NewIndex(rules []Compiled) *Index {
	idx := &Index{}
	if len(rules) > MaxIndexed {
		return idx
	}
	idx.ok = true
	root := &node{}
	for i := range rules {
		bit := Candidates{}
		bit[i/64] |= 1 << (i % 64)
		m := rules[i].HTTPMethod
		if m.kind == globExact {
			found := false
			for j := range idx.methods {
				if idx.methods[j].method == m.pattern {
					idx.methods[j].set = union(idx.methods[j].set, bit)
					found = true
				}
			}
			if !found {
				idx.methods = append(idx.methods, methodEntry{method: m.pattern, set: bit})
			}
		} else {
			idx.anyVerb = union(idx.anyVerb, bit)
		}
		n := root
		for _, c := range []byte(literalPrefix(rules[i].URLPath)) {
			if n.kids == nil {
				n.kids = map[byte]*node{}
			}
			if n.kids[c] == nil {
				n.kids[c] = &node{}
			}
			n = n.kids[c]
		}
		n.here = union(n.here, bit)
		if settled(rules[i].HTTPMethod, true) && settled(rules[i].URLPath, false) {
			idx.decided = union(idx.decided, bit)
		}
	}
	for j := range idx.methods {
		idx.methods[j].set = union(idx.methods[j].set, idx.anyVerb)
	}
	// Compress chains of single children that end no prefix into one label.
	var build func(n *node, label []byte) int32
	build = func(n *node, label []byte) int32 {
		for len(label) > 0 && len(n.kids) == 1 && n.here == (Candidates{}) {
			for c, k := range n.kids {
				label = append(label, c)
				n = k
			}
		}
		pos := int32(len(idx.nodes))
		idx.nodes = append(idx.nodes, radixNode{label: string(label), here: n.here})
		for c := byte(0); ; c++ {
			if k := n.kids[c]; k != nil {
				child := build(k, []byte{c})
				idx.nodes[pos].first = append(idx.nodes[pos].first, c)
				idx.nodes[pos].kids = append(idx.nodes[pos].kids, child)
			}
			if c == 255 {
				break
			}
		}
		return pos
	}
	build(root, nil)
	if len(rules) <= 64 {
		idx.buildDense(root)
	}
	return idx
}

// buildDense lays out the uncompressed trie as a dense transition table.
func (idx *Index) buildDense(root *node) {
	ids := map[*node]int{root: 0}
	order := []*node{root}
	for i := 0; i < len(order); i++ {
		for c := 0; c < 128; c++ {
			if k := order[i].kids[byte(c)]; k != nil {
				ids[k] = len(order)
				order = append(order, k)
			}
		}
		if len(order) > maxDenseStates {
			return
		}
	}
	idx.dense = make([]denseState, len(order))
	for i, n := range order {
		d := &idx.dense[i]
		for c := range d.next {
			d.next[c] = -1
		}
		d.here = n.here[0]
		for c, k := range n.kids {
			if c < 128 {
				d.next[c] = int16(ids[k])
			}
		}
	}
}

// settled reports whether a candidate found through the index is known to
// match g: "*" always; for methods a literal, which the method table matched
// exactly; for paths a prefix glob whose prefix the radix tree walked in full.
func settled(g Glob, method bool) bool {
	switch g.kind {
	case globAny:
		return true
	case globExact:
		return method
	case globPrefix:
		return !method && literalPrefix(g) == g.pattern
	}
	return false
}

// Settled reports whether candidate i, returned by Candidates, is known to
// match the request's method and path, so only its other conditions need
// checking.
func (idx *Index) Settled(i int) bool { return idx.decided[i/64]&(1<<(i%64)) != 0 }

// literalPrefix is the case-folded part of a glob before its first wildcard,
// cut at the first non-ASCII character (where folding may change lengths).
func literalPrefix(g Glob) string {
	p := g.pattern
	switch g.kind {
	case globAny:
		return ""
	case globGeneral:
		p = p[:strings.IndexAny(p, "*?")]
	}
	for i := 0; i < len(p); i++ {
		if p[i] >= utf8.RuneSelf {
			return p[:i]
		}
	}
	return p
}

func union(a, b Candidates) Candidates {
	for i := range a {
		a[i] |= b[i]
	}
	return a
}

// Candidates returns the rules that may match a request with this method and
// path. ok is false for an unindexed (too large) set: then check every rule.
func (idx *Index) Candidates(method, path string) (c Candidates, ok bool) {
	if !idx.ok {
		return c, false
	}
	verbs := &idx.anyVerb
	// Fold the method once into a buffer, then compare whole strings.
	var buf [16]byte
	if len(method) <= len(buf) {
		folded := buf[:len(method)]
		for i := 0; i < len(method); i++ {
			folded[i] = lowerASCII(method[i])
		}
		for i := range idx.methods {
			if string(folded) == idx.methods[i].method {
				verbs = &idx.methods[i].set
				break
			}
		}
	}
	if idx.dense != nil {
		d := &idx.dense[0]
		acc := d.here
		for i := 0; i < len(path); i++ {
			b := path[i]
			if b >= utf8.RuneSelf {
				break
			}
			st := d.next[lowerASCII(b)&0x7f]
			if st < 0 {
				break
			}
			d = &idx.dense[st]
			acc |= d.here
		}
		c[0] = acc & verbs[0]
		return c, true
	}
	n := &idx.nodes[0]
	acc := n.here
	for pos := 0; ; {
		child := idx.step(n, path, pos)
		if child == nil {
			break
		}
		pos += len(child.label)
		acc = union(acc, child.here)
		n = child
	}
	for i := range acc {
		acc[i] &= verbs[i]
	}
	return acc, true
}

// step returns the child of n whose label path continues with at pos, or nil.
func (idx *Index) step(n *radixNode, path string, pos int) *radixNode {
	if pos >= len(path) {
		return nil
	}
	j := bytes.IndexByte(n.first, lowerASCII(path[pos]))
	if j < 0 {
		return nil
	}
	child := &idx.nodes[n.kids[j]]
	lab := child.label
	if len(path)-pos < len(lab) {
		return nil
	}
	// Labels are folded ASCII, and their first byte already matched. Most
	// paths are lower case already: one memory compare.
	if path[pos:pos+len(lab)] == lab {
		return child
	}
	k := 1
	for ; k+8 <= len(lab); k += 8 {
		w := load8(path, pos+k)
		if w&highBits != 0 || lower8(w) != load8(lab, k) {
			return nil
		}
	}
	for ; k < len(lab); k++ {
		if lowerASCII(path[pos+k]) != lab[k] {
			return nil
		}
	}
	return child
}
