package rules

import (
	"math/bits"
	"slices"
	"strings"
	"unicode/utf8"
)

// MaxIndexed is the largest rule set an Index narrows; larger sets are
// matched rule by rule. It is twice MaxRules, so every rule set a control
// plane can send is indexed. The bound comes from the tree: a kids entry
// names a node in 12 bits, and a tree of n prefixes has at most 2n nodes
// (n that end a prefix, fewer than n that only branch).
const MaxIndexed = 2048

// maxNodes is the most radix tree nodes a kids entry can name.
const maxNodes = 1 << 12

// Index narrows, for a request's HTTP method and URL path, the rules that can
// match it, so that a span start checks a candidate or two instead of every
// rule. It is a filter only: every candidate must still be matched in full,
// and every rule that matches is a candidate. Build it once per rule set; it
// is immutable and safe for concurrent use. Lookups do not allocate.
//
// Methods: rules whose method glob is a short ASCII literal ("GET") are
// candidates only for that method; others always. Paths: a radix tree over
// the literal prefix of each path glob (up to its first wildcard) yields the
// rules whose prefix starts the request's path. Every node holds the rules of
// its own and its ancestors' prefixes, and a table of its children by the next
// byte in either case, so a walk costs a load and a word compare per node.
//
// A set of rules is a bitmap, bit i for rule i, of one word per 64 rules.
// With each node's bitmap goes a word with a bit for each of its words that
// is not zero, and so with each method's: a lookup visits only the words
// where both have rules, so a set of 1,000 rules costs about what one of 50
// does when the request's method and path leave few candidates.
type Index struct {
	ok    bool
	words int // words in a bitmap: one per 64 rules, at least one
	// methods, and anyVerb for every other method: the rules each allows.
	methods []methodEntry
	anyVerb methodEntry
	sets    []uint64 // the methods' bitmaps, words each, then maxWords zeros
	decided []uint64 // rules whose method and path a lookup settles fully
	// The radix tree, nodes[0] its root. kids holds each node's children by
	// the next path byte in either case: the child of node n for byte b is
	// kids[n<<7|b]>>4 (12 bits: see maxNodes), and the low four bits are the
	// child's label length (longLabel if it is longer than a word; 0: no
	// child), so a step of a walk waits on one load, not two, before the
	// next. upTo holds, words a node (then maxWords zeros), the rules whose
	// prefix is the node's path from the root or a prefix of it; rows, by
	// node, its bitmap and which of its words are not zero.
	nodes []pathNode
	kids  []uint16
	upTo  []uint64
	rows  []row
	// small is set when the index is built and every rule fits one word.
	small bool
}

type methodEntry struct {
	// The case-folded method, packed by packASCII, and its length: a NUL
	// byte adds nothing to the word, so "GET" and "GET\x00" differ only
	// there.
	word uint64
	size int
	// The rules it allows: the first word of their bitmap (all of it in a
	// small index), the bitmap in sets, and which of its words are not
	// zero.
	first uint64
	bits  *[maxWords]uint64
	busy  uint32
}

// row is one node's bitmap in upTo, and which of its words are not zero.
type row struct {
	set  *[maxWords]uint64
	busy uint32
}

// pathNode is the label of a radix tree node: the case-folded ASCII that
// leads to it from its parent.
type pathNode struct {
	word  uint64 // the label's first 8 bytes, packed by packASCII
	mask  uint64 // the bits of word that the label fills
	label string
}

// trieNode is a node of the uncompressed trie while an Index is built.
type trieNode struct {
	kids map[byte]*trieNode
	here []int // the rules whose prefix ends here
}

// NewIndex indexes rules, which are in matching order.
func NewIndex(rules []Compiled) *Index {
	if len(rules) > MaxIndexed {
		return &Index{}
	}
	w := max(1, (len(rules)+63)/64)
	idx := &Index{ok: true, words: w, small: w == 1, decided: make([]uint64, w)}
	// The methods' bitmaps while they are built.
	var methods [][]uint64
	anyVerb := make([]uint64, w)
	root := &trieNode{}
	for i := range rules {
		m := rules[i].HTTPMethod
		methodSettled := m.kind == globAny
		if mw, ok := methodWord(m); ok {
			methodSettled = true
			j := slices.IndexFunc(idx.methods, func(e methodEntry) bool { return e.word == mw && e.size == len(m.pattern) })
			if j < 0 {
				j = len(idx.methods)
				idx.methods = append(idx.methods, methodEntry{word: mw, size: len(m.pattern)})
				methods = append(methods, make([]uint64, w))
			}
			setBit(methods[j], i)
		} else {
			setBit(anyVerb, i)
		}
		n := root
		for _, c := range []byte(literalPrefix(rules[i].URLPath)) {
			if n.kids == nil {
				n.kids = map[byte]*trieNode{}
			}
			if n.kids[c] == nil {
				n.kids[c] = &trieNode{}
			}
			n = n.kids[c]
		}
		n.here = append(n.here, i)
		if methodSettled && pathSettled(rules[i].URLPath) {
			setBit(idx.decided, i)
		}
	}
	// Every method's bitmap, anyVerb's last, each then a view of maxWords
	// words into sets: a Cursor visits only the bitmap's own.
	for j := range idx.methods {
		for k := range methods[j] {
			methods[j][k] |= anyVerb[k]
		}
		idx.methods[j].first, idx.methods[j].busy = methods[j][0], busyWords(methods[j])
	}
	idx.anyVerb = methodEntry{first: anyVerb[0], busy: busyWords(anyVerb)}
	methods = append(methods, anyVerb)
	idx.sets = make([]uint64, 0, len(methods)*w+maxWords)
	for _, m := range methods {
		idx.sets = append(idx.sets, m...)
	}
	idx.sets = append(idx.sets, make([]uint64, maxWords)...)
	for j := range idx.methods {
		idx.methods[j].bits = (*[maxWords]uint64)(idx.sets[j*w:])
	}
	idx.anyVerb.bits = (*[maxWords]uint64)(idx.sets[len(idx.methods)*w:])
	idx.build(root, nil, -1)
	idx.upTo = append(idx.upTo, make([]uint64, maxWords)...)
	for i := range idx.rows {
		idx.rows[i].set = (*[maxWords]uint64)(idx.upTo[i*w:])
	}
	if len(idx.nodes) > maxNodes {
		// Cannot happen (see MaxIndexed); if it did, kids would be wrong.
		return &Index{}
	}
	return idx
}

func setBit(set []uint64, i int) { set[i/64] |= 1 << (i % 64) }

// busyWords returns a word with bit k set for each word k of set that is not
// zero.
func busyWords(set []uint64) uint32 {
	var b uint32
	for k, x := range set {
		if x != 0 {
			b |= 1 << k
		}
	}
	return b
}

// build appends n, with chains of single children that end no prefix
// compressed into its label, and its subtree; it returns n's position.
// parent is the position of n's parent, -1 for the root.
func (idx *Index) build(n *trieNode, label []byte, parent int) int {
	for len(label) > 0 && len(n.kids) == 1 && len(n.here) == 0 {
		for c, k := range n.kids {
			label = append(label, c)
			n = k
		}
	}
	pos := len(idx.nodes)
	w := idx.words
	idx.nodes = append(idx.nodes, pathNode{
		word: packASCII(string(label)), mask: 1<<(8*min(len(label), 8)) - 1,
		label: string(label),
	})
	if parent < 0 {
		idx.upTo = append(idx.upTo, make([]uint64, w)...)
	} else {
		idx.upTo = append(idx.upTo, idx.upTo[parent*w:parent*w+w]...)
	}
	bitmap := idx.upTo[pos*w : pos*w+w]
	for _, i := range n.here {
		setBit(bitmap, i)
	}
	idx.rows = append(idx.rows, row{busy: busyWords(bitmap)})
	idx.kids = append(idx.kids, make([]uint16, utf8.RuneSelf)...)
	for c := byte(0); c < utf8.RuneSelf; c++ {
		if k := n.kids[c]; k != nil {
			child := idx.build(k, []byte{c}, pos)
			size := len(idx.nodes[child].label)
			if size > 8 {
				size = longLabel
			}
			e := uint16(child)<<4 | uint16(size)
			idx.kids[pos<<7|int(c)] = e
			if 'a' <= c && c <= 'z' {
				idx.kids[pos<<7|int(c-('a'-'A'))] = e
			}
		}
	}
	return pos
}

// methodWord returns the packed method of a literal method glob that fits a
// word; ok is false for every other glob.
func methodWord(g Glob) (w uint64, ok bool) {
	if g.kind != globExact || len(g.pattern) > 8 {
		return 0, false
	}
	w = packASCII(g.pattern)
	return w, w&highBits == 0
}

// pathSettled reports whether a candidate found through the index is known
// to match path glob g: "*", or a prefix glob whose whole prefix the walk
// matched.
func pathSettled(g Glob) bool {
	return g.kind == globAny || g.kind == globPrefix && literalPrefix(g) == g.pattern
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

// Cursor yields the candidates of one lookup, in matching order. It is a
// value: copying it copies the position.
type Cursor struct {
	// The node's and the method's bitmaps. The arrays may run past them
	// into the next bitmaps; words never has a bit for a word past them.
	up, verbs *[maxWords]uint64
	words     uint32 // the words still to visit
	cur       uint64 // the candidates left in the word being visited
	base      int    // the first rule of that word
}

// maxWords is the most words a bitmap has.
const maxWords = MaxIndexed / 64

// Next removes and returns the next candidate, or -1 when there is none.
func (c *Cursor) Next() int {
	for c.cur == 0 {
		if c.words == 0 {
			return -1
		}
		k := bits.TrailingZeros32(c.words) & (maxWords - 1)
		c.words &= c.words - 1
		c.cur, c.base = c.up[k]&c.verbs[k], 64*k
	}
	i := bits.TrailingZeros64(c.cur)
	c.cur &= c.cur - 1
	return c.base + i
}

// Candidates returns the rules that may match a request with this method and
// path. ok is false when the index cannot narrow them: for an unindexed (too
// large) set, and for a request whose method or path has a non-ASCII
// character where it matters (Unicode case folding can turn one into ASCII,
// "\u212a" into "k"). Then check every rule.
func (idx *Index) Candidates(method, path string) (Cursor, bool) {
	n, verbs, ok := idx.lookup(method, path)
	if !ok {
		return Cursor{}, false
	}
	up := &idx.rows[n]
	return Cursor{up: up.set, verbs: verbs.bits, words: up.busy & verbs.busy}, true
}

// Small reports whether the index holds at most 64 rules, so that
// Candidates64 and Decided64 describe it in one word each.
func (idx *Index) Small() bool { return idx.small }

// Candidates64 is Candidates for a Small index, bit i for rule i: a span
// start then neither keeps a cursor nor visits words.
func (idx *Index) Candidates64(method, path string) (c uint64, ok bool) {
	n, verbs, ok := idx.lookup(method, path)
	if !ok {
		return 0, false
	}
	return idx.upTo[n] & verbs.first, true
}

// Decided64 is Settled for every rule of a Small index, bit i for rule i.
func (idx *Index) Decided64() uint64 { return idx.decided[0] }

// lookup returns the last tree node path reaches and the rules the method
// allows.
func (idx *Index) lookup(method, path string) (n int, verbs *methodEntry, ok bool) {
	if !idx.ok {
		return 0, nil, false
	}
	n, ok = idx.walk(path)
	if !ok {
		return 0, nil, false
	}
	if len(method) <= 8 {
		var w uint64
		switch {
		case len(method) >= 4:
			// Two 4-byte loads that overlap in the middle.
			w = uint64(load4(method, 0)) | uint64(load4(method, len(method)-4))<<(8*(len(method)-4))
		case len(method) > 0:
			// First, middle and last byte, which overlap below three.
			k := len(method)
			w = uint64(method[0]) | uint64(method[k/2])<<(8*(k/2)) | uint64(method[k-1])<<(8*(k-1))
		}
		if w&highBits != 0 {
			return 0, nil, false
		}
		w = lower8(w)
		for i := range idx.methods {
			if idx.methods[i].word == w && idx.methods[i].size == len(method) {
				return n, &idx.methods[i], true
			}
		}
	} else if !isASCII(method) {
		return 0, nil, false
	}
	return n, &idx.anyVerb, true
}

// walk follows path down the tree as far as it matches and returns the last
// node reached. ok is false if a non-ASCII byte came before the end of the
// match, where folding could have made it match further, or within the word
// it was reading when it stopped: the caller then falls back to a full scan,
// which is always right.
func (idx *Index) walk(path string) (last int, ok bool) {
	n, pos := 0, 0
	kids, nodes := idx.kids, idx.nodes
	// While a whole word of path is left and labels fit a word, a step is
	// one load, a table load and a compare; the next step waits on the two
	// loads alone. The rest is walkTail's.
	for pos+8 <= len(path) {
		w := load8(path, pos)
		// The table has both cases of every letter: the raw byte will do.
		e := int(kids[n<<7|int(w&0x7f)])
		if w&highBits != 0 {
			return n, false
		}
		size := e & 15
		if size == 0 {
			return n, true
		}
		if size == longLabel {
			break
		}
		k := e >> 4
		if nd := &nodes[k]; lower8(w)&nd.mask != nd.word {
			return n, true
		}
		pos += size
		n = k
	}
	// Most walks end at a node without a child for the next byte.
	if pos < len(path) && path[pos] < utf8.RuneSelf && kids[n<<7|int(path[pos])] == 0 {
		return n, true
	}
	return idx.walkTail(path, n, pos)
}

// longLabel marks, in a kids entry, a label longer than a word.
const longLabel = 15

// walkTail is walk from node n at pos, for any label and path length.
func (idx *Index) walkTail(path string, n, pos int) (last int, ok bool) {
	for pos < len(path) {
		b := path[pos]
		if b >= utf8.RuneSelf {
			return n, false
		}
		k := int(idx.kids[n<<7|int(b)] >> 4)
		if k == 0 {
			break
		}
		nd := &idx.nodes[k]
		size := len(nd.label)
		// Folding never lengthens a string, so a path shorter than the
		// label cannot match it.
		rest := len(path) - pos
		if rest < size {
			break
		}
		if size <= 8 {
			var w uint64
			if rest >= 8 {
				w = load8(path, pos) & nd.mask
			} else {
				w = loadTail(path, pos, size)
			}
			if w&highBits != 0 {
				return n, false
			}
			if lower8(w) != nd.word {
				break
			}
		} else if equal, ascii := foldEqualLong(path[pos:pos+size], nd.label); !equal {
			return n, ascii
		}
		pos += size
		n = k
	}
	return n, true
}

// loadTail packs path[pos:pos+n], n <= 8, near the end of path.
func loadTail(path string, pos, n int) uint64 {
	if end := pos + n; end >= 8 {
		return load8(path, end-8) >> (64 - 8*n)
	}
	return packASCII(path[pos : pos+n])
}

// foldEqualLong compares s with lab, a label longer than a word, of the same
// length, ignoring ASCII case. ascii is false if it met a non-ASCII byte.
func foldEqualLong(s, lab string) (equal, ascii bool) {
	for i := 0; ; i += 8 {
		if i+8 > len(lab) {
			i = len(lab) - 8 // the last word overlaps the one before
		}
		w := load8(s, i)
		if w&highBits != 0 {
			return false, false
		}
		if lower8(w) != load8(lab, i) {
			return false, true
		}
		if i+8 == len(lab) {
			return true, true
		}
	}
}

// packASCII packs up to eight bytes of s into a word, first byte lowest, as
// load8 does.
func packASCII(s string) uint64 {
	var w uint64
	for i := 0; i < len(s) && i < 8; i++ {
		w |= uint64(s[i]) << (8 * i)
	}
	return w
}

// load4 reads 4 bytes of s from i, little-endian, in one load.
func load4(s string, i int) uint32 {
	s = s[i : i+4]
	return uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
