package rules

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// globKind picks a fast path at compile time so that the common patterns
// ("*", exact names, "prefix*") never run the general matcher.
type globKind uint8

const (
	globAny globKind = iota
	globExact
	globPrefix
	globGeneral
)

// Glob is a compiled, case-insensitive pattern in which '*' matches any run of
// characters (including none) and '?' exactly one character. Case is ignored
// as strings.EqualFold does (Unicode simple case folding), so "É" matches "é"
// and "σ" matches "ς". The zero Glob matches everything. Globs are immutable
// and safe for concurrent use.
type Glob struct {
	kind    globKind
	pattern string // case-folded (see foldRune); for globPrefix without the trailing '*'
}

// CompileGlob compiles p. The empty pattern is treated as "*".
func CompileGlob(p string) Glob {
	if p == "" || strings.Trim(p, "*") == "" {
		return Glob{kind: globAny}
	}
	lp := strings.Map(foldRune, p)
	wild := strings.IndexAny(lp, "*?")
	switch {
	case wild < 0:
		return Glob{kind: globExact, pattern: lp}
	case wild == len(lp)-1 && lp[wild] == '*':
		return Glob{kind: globPrefix, pattern: lp[:wild]}
	default:
		return Glob{kind: globGeneral, pattern: lp}
	}
}

// MatchesAll reports whether the glob matches every string, which is also the
// only case in which it matches an absent value.
func (g Glob) MatchesAll() bool { return g.kind == globAny }

// String returns the pattern with every character in its case-folded form
// (lower case for every letter that has one).
func (g Glob) String() string {
	switch g.kind {
	case globAny:
		return "*"
	case globPrefix:
		return g.pattern + "*"
	default:
		return g.pattern
	}
}

// Match reports whether s matches the glob, ignoring case. It does not
// allocate.
func (g Glob) Match(s string) bool {
	// The common answers inline into the caller: "*", and subjects already
	// in folded form.
	if g.kind == globAny || g.kind == globExact && s == g.pattern {
		return true
	}
	return g.match(s)
}

func (g Glob) match(s string) bool {
	switch g.kind {
	case globExact:
		return hasPrefixFold(s, g.pattern, true)
	case globPrefix:
		return hasPrefixFold(s, g.pattern, false)
	default:
		return matchFold(g.pattern, s)
	}
}

// MatchGlob compiles pattern and matches s against it; for one-off use.
func MatchGlob(pattern, s string) bool { return CompileGlob(pattern).Match(s) }

// hasPrefixFold reports whether s starts with the case-folded string lp,
// ignoring case; with whole it must also end there.
func hasPrefixFold(s, lp string, whole bool) bool {
	// Most subjects are already in folded form: one memory compare. (Match
	// made that compare for whole strings already.)
	if !whole && len(s) >= len(lp) && s[:len(lp)] == lp {
		return true
	}
	i, j := 0, 0
	// Eight ASCII bytes at a time while both strings have them.
	for len(lp)-j >= 8 && len(s)-i >= 8 {
		pw, sw := load8(lp, j), load8(s, i)
		if (pw|sw)&highBits != 0 {
			break // non-ASCII: the rune-wise loop below handles it
		}
		if lower8(sw) != pw {
			return false
		}
		i += 8
		j += 8
	}
	for j < len(lp) {
		if i >= len(s) {
			return false
		}
		pc, sc := lp[j], s[i]
		if pc < utf8.RuneSelf && sc < utf8.RuneSelf {
			if lowerASCII(sc) != pc {
				return false
			}
			i++
			j++
			continue
		}
		pr, pw := utf8.DecodeRuneInString(lp[j:])
		sr, sw := utf8.DecodeRuneInString(s[i:])
		if foldRune(sr) != pr {
			return false
		}
		i += sw
		j += pw
	}
	return !whole || i == len(s)
}

// matchFold matches s against the case-folded pattern p. It remembers only the
// most recent '*' to backtrack to, which is enough for patterns made of
// literals, '*' and '?', and keeps the match linear in practice and free of
// allocation.
func matchFold(p, s string) bool {
	px, sx := 0, 0
	nextPx, nextSx := 0, 0
	for px < len(p) || sx < len(s) {
		if px < len(p) {
			switch c := p[px]; c {
			case '*':
				nextPx = px
				nextSx = sx + 1
				if sx < len(s) {
					nextSx = sx + runeWidth(s[sx:])
				}
				px++
				continue
			case '?':
				if sx < len(s) {
					px++
					sx += runeWidth(s[sx:])
					continue
				}
			default:
				if sx < len(s) {
					sc := s[sx]
					if c < utf8.RuneSelf && sc < utf8.RuneSelf {
						if lowerASCII(sc) == c {
							px++
							sx++
							continue
						}
					} else {
						pr, pw := utf8.DecodeRuneInString(p[px:])
						sr, sw := utf8.DecodeRuneInString(s[sx:])
						if foldRune(sr) == pr {
							px += pw
							sx += sw
							continue
						}
					}
				}
			}
		}
		if 0 < nextSx && nextSx <= len(s) {
			px, sx = nextPx, nextSx
			continue
		}
		return false
	}
	return true
}

// foldRune maps r to one representative of its case-folding orbit (the runes
// unicode.SimpleFold cycles through, which are the runes strings.EqualFold
// treats as equal), so that two runes are equal ignoring case exactly when
// their representatives are. The representative is the lower case of the
// orbit's smallest rune when that is in the orbit (so 'K', 'k' and the Kelvin
// sign all become 'k', and 'Σ', 'σ', 'ς' become 'σ'), else the smallest rune.
//
// unicode.ToLower alone is not enough: it maps 'İ' to 'i' (which EqualFold
// keeps apart) and leaves 'ς' and 'ſ' alone (which EqualFold equates with 'σ'
// and 's'), so ignoring case by lower-casing is not what users of Go or of
// regular expressions expect.
func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		return rune(lowerASCII(byte(r)))
	}
	lo := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		lo = min(lo, f)
	}
	l := unicode.ToLower(lo)
	if l == lo {
		return lo
	}
	for f := unicode.SimpleFold(lo); f != lo; f = unicode.SimpleFold(f) {
		if f == l {
			return l
		}
	}
	return lo
}

func runeWidth(s string) int {
	if s[0] < utf8.RuneSelf {
		return 1
	}
	_, w := utf8.DecodeRuneInString(s)
	return w
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

const (
	ones     = 0x0101010101010101
	highBits = 0x8080808080808080
)

// load8 reads 8 bytes of s from i, little-endian; the compiler turns it into
// one load.
func load8(s string, i int) uint64 {
	s = s[i : i+8]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// lower8 lower-cases eight ASCII bytes at once: a byte gets 0x20 added when
// it is at least 'A' and at most 'Z'. No sum carries into the next byte since
// every byte is below 0x80.
func lower8(w uint64) uint64 {
	geA := w + (0x80-'A')*ones
	gtZ := w + (0x7f-'Z')*ones
	upper := geA &^ gtZ & highBits
	return w | upper>>2
}
