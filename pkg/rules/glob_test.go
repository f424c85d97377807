package rules_test

import (
	"regexp"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/tracesampling/controlplane/pkg/rules"
)

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		subject string
		want    bool
	}{
		// "*" and "" match everything, including the empty string.
		{"star/empty subject", "*", "", true},
		{"star/word", "*", "checkout", true},
		{"star/unicode", "*", "café ☕", true},
		{"empty/empty subject", "", "", true},
		{"empty/word", "", "checkout", true},
		{"stars only/word", "***", "checkout", true},
		{"stars only/empty", "**", "", true},

		// Exact patterns.
		{"exact/same", "checkout", "checkout", true},
		{"exact/upper subject", "checkout", "CHECKOUT", true},
		{"exact/upper pattern", "CheckOut", "checkout", true},
		{"exact/subject longer", "checkout", "checkouts", false},
		{"exact/subject shorter", "checkout", "check", false},
		{"exact/other", "checkout", "cart", false},
		{"exact/empty subject", "checkout", "", false},
		{"exact/pattern longer than subject", "abcdef", "abc", false},
		{"exact/non-ASCII", "café", "CAFÉ", true},
		{"exact/non-ASCII pattern upper", "CAFÉ", "café", true},
		{"exact/non-ASCII differs", "café", "cafe", false},
		{"exact/accent only in subject", "cafe", "café", false},

		// Prefix patterns.
		{"prefix/match", "shop-*", "shop-eu", true},
		{"prefix/exactly prefix", "shop-*", "shop-", true},
		{"prefix/case", "shop-*", "SHOP-EU", true},
		{"prefix/too short", "shop-*", "shop", false},
		{"prefix/other", "shop-*", "shoe-eu", false},
		{"prefix/empty subject", "shop-*", "", false},
		{"prefix/non-ASCII", "straße-*", "STRASSE-x", false},
		{"prefix/non-ASCII case", "ÉTÉ-*", "été-2024", true},

		// Suffix patterns.
		{"suffix/match", "*.json", "/api/users.json", true},
		{"suffix/only suffix", "*.json", ".json", true},
		{"suffix/case", "*.json", "/API/USERS.JSON", true},
		{"suffix/other", "*.json", "/api/users.xml", false},
		{"suffix/not at end", "*.json", "/api/users.json.bak", false},
		{"suffix/empty subject", "*.json", "", false},
		{"suffix/pattern longer than subject", "*.json", "json", false},

		// Infix and several stars.
		{"infix/match", "*user*", "/api/users/42", true},
		{"infix/case", "*USER*", "/api/users/42", true},
		{"infix/whole subject", "*user*", "user", true},
		{"infix/missing", "*user*", "/api/orders", false},
		{"infix/empty subject", "*user*", "", false},
		{"middle star/match", "/api/*/items", "/api/42/items", true},
		{"middle star/empty run", "/api/*/items", "/api//items", true},
		{"middle star/slashes", "/api/*/items", "/api/a/b/items", true},
		{"middle star/wrong end", "/api/*/items", "/api/42/item", false},
		{"multi star/match", "a*b*c", "abc", true},
		{"multi star/runs", "a*b*c", "aXXbYYc", true},
		{"multi star/wrong order", "a*b*c", "acb", false},
		{"adjacent stars", "a**b", "ab", true},
		{"adjacent stars/run", "a**b", "aZZb", true},

		// Backtracking: the first place a literal matches is not the right one.
		{"backtrack/a*b*c", "a*b*c", "aXbYbZc", true},
		{"backtrack/a*b*c no c", "a*b*c", "aXbYbZ", false},
		{"backtrack/*a*a*a", "*a*a*a", "aaa", true},
		{"backtrack/*a*a*a spread", "*a*a*a", "xaxaxa", true},
		{"backtrack/*a*a*a two", "*a*a*a", "xaxa", false},
		{"backtrack/*a*a*a trailing", "*a*a*a", "aaab", false},
		{"backtrack/repeat suffix", "*ab", "aab", true},
		{"backtrack/repeat suffix2", "*abab", "ababab", true},
		{"backtrack/star then ?", "*?x", "abx", true},
		{"backtrack/star then ? short", "*?x", "x", false},
		{"backtrack/long", "*a*b*c*d", "abcabcabcabcd", true},
		{"backtrack/long no d", "*a*b*c*d", "abcabcabcabc", false},
		{"backtrack/exponential shape", "a*a*a*a*a*a*b", strings.Repeat("a", 64), false},

		// '?' matches exactly one character, a whole UTF-8 rune.
		{"?/one", "?", "a", true},
		{"?/none", "?", "", false},
		{"?/two", "?", "ab", false},
		{"?/two-byte rune", "?", "é", true},
		{"?/three-byte rune", "?", "☕", true},
		{"?/four-byte rune", "?", "😀", true},
		{"?/two runes", "?", "éé", false},
		{"??/two-byte rune is one char", "??", "é", false},
		{"?/inside", "caf?", "café", true},
		{"?/inside ascii", "caf?", "cafe", true},
		{"?/inside too long", "caf?", "cafés", false},
		{"?/between", "h?llo", "HÉLLO", true},
		{"?/and star", "?*", "", false},
		{"?/and star match", "?*", "é", true},
		{"?/with prefix star", "*?", "é", true},
		{"?/three", "???", "aé😀", true},
		{"?/three short", "???", "aé", false},

		// Case-insensitivity beyond ASCII.
		{"fold/É vs é", "É", "é", true},
		{"fold/é vs É", "é", "É", true},
		{"fold/Ω", "ω*", "ΩMEGA", true},
		{"fold/Greek sigma forms", "σ", "ς", true},
		{"fold/Greek capital sigma", "ς", "Σ", true},
		{"fold/Kelvin sign", "k", "\u212a", true},
		{"fold/long s", "s", "ſ", true},
		{"fold/sharp s", "ß", "ẞ", true},
		{"fold/Cyrillic", "привет*", "ПРИВЕТ мир", true},
		{"fold/different letters", "é", "è", false},
		// Dotted capital I has no simple case fold (it is not in the orbit of 'i').
		{"fold/dotted I is not i", "i", "İ", false},
		{"fold/i is not dotted I", "İ", "i", false},

		// Regexp metacharacters are literals.
		{"literal/dot", "a.c", "abc", false},
		{"literal/dot match", "a.c", "a.c", true},
		{"literal/brackets", "[a]", "[A]", true},
		{"literal/plus", "a+", "aa", false},
		{"literal/newline", "a\nb", "A\nB", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := rules.CompileGlob(tt.pattern)
			if got := g.Match(tt.subject); got != tt.want {
				t.Errorf("CompileGlob(%q).Match(%q) = %v, want %v", tt.pattern, tt.subject, got, tt.want)
			}
			if got := rules.MatchGlob(tt.pattern, tt.subject); got != tt.want {
				t.Errorf("MatchGlob(%q, %q) = %v, want %v", tt.pattern, tt.subject, got, tt.want)
			}
			// The reference must agree, or the fuzz target compares against
			// the wrong thing.
			if got := referenceMatch(tt.pattern, tt.subject); got != tt.want {
				t.Errorf("referenceMatch(%q, %q) = %v, want %v", tt.pattern, tt.subject, got, tt.want)
			}
		})
	}
}

func TestGlobMatchesAll(t *testing.T) {
	tests := []struct {
		pattern string
		want    bool
	}{
		{"", true},
		{"*", true},
		{"**", true},
		{"***", true},
		{"?", false},
		{"*?", false},
		{"?*", false},
		{"a*", false},
		{"*a", false},
		{"*a*", false},
		{"a", false},
	}
	for _, tt := range tests {
		if got := rules.CompileGlob(tt.pattern).MatchesAll(); got != tt.want {
			t.Errorf("CompileGlob(%q).MatchesAll() = %v, want %v", tt.pattern, got, tt.want)
		}
	}
	var zero rules.Glob
	if !zero.MatchesAll() || !zero.Match("anything") || !zero.Match("") {
		t.Error("the zero Glob must match everything")
	}
}

func TestGlobString(t *testing.T) {
	tests := []struct{ pattern, want string }{
		{"", "*"},
		{"***", "*"},
		{"Checkout", "checkout"},
		{"Shop-*", "shop-*"},
		{"*.JSON", "*.json"},
		{"/API/*/Items?", "/api/*/items?"},
		{"CAFÉ", "café"},
	}
	for _, tt := range tests {
		if got := rules.CompileGlob(tt.pattern).String(); got != tt.want {
			t.Errorf("CompileGlob(%q).String() = %q, want %q", tt.pattern, got, tt.want)
		}
	}
}

// TestGlobMatchDoesNotAllocate covers every kind of compiled glob (any,
// exact, prefix, general), with ASCII and non-ASCII subjects.
func TestGlobMatchDoesNotAllocate(t *testing.T) {
	tests := []struct {
		kind, pattern, subject string
	}{
		{"any", "*", "/api/users/42"},
		{"exact", "checkout", "CHECKOUT"},
		{"exact non-ASCII", "CAFÉ", "café"},
		{"prefix", "shop-*", "SHOP-eu-west-1"},
		{"prefix non-ASCII", "été-*", "ÉTÉ-2024"},
		{"suffix", "*.json", "/api/users/42.json"},
		{"infix", "*users*", "/api/USERS/42"},
		{"question", "/api/v?/*", "/api/v2/users"},
		{"backtracking", "*a*b*c", "xaxbxaxbxcx"},
		{"general non-ASCII", "*straße?", "HAUPTSTRASSE STRAẞE1"},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			g := rules.CompileGlob(tt.pattern)
			var sink bool
			allocs := testing.AllocsPerRun(100, func() { sink = g.Match(tt.subject) })
			if allocs != 0 {
				t.Errorf("CompileGlob(%q).Match(%q) allocates %v times per call, want 0", tt.pattern, tt.subject, allocs)
			}
			_ = sink
		})
	}
}

// referenceMatch is the obviously correct, slow definition of a glob: the
// pattern becomes an anchored regexp in which '*' is ".*" and '?' is ".", and
// every other character is a literal matched with Unicode simple case folding
// ((?i), as strings.EqualFold); (?s) lets '*' and '?' match newlines.
func referenceMatch(pattern, s string) bool {
	if pattern == "" {
		pattern = "*" // documented: the empty pattern means "*"
	}
	var b strings.Builder
	b.WriteString(`(?is)^`)
	for _, c := range pattern {
		switch c {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString(`$`)
	return regexp.MustCompile(b.String()).MatchString(s)
}

func FuzzGlob(f *testing.F) {
	seeds := []struct{ pattern, subject string }{
		{"*", ""},
		{"", "abc"},
		{"checkout", "CheckOut"},
		{"shop-*", "shop-eu"},
		{"*.json", "/a/b.JSON"},
		{"*user*", "/api/users"},
		{"a*b*c", "aXbYbZc"},
		{"*a*a*a", "xaxaxa"},
		{"caf?", "café"},
		{"??", "é"},
		{"É*", "été"},
		{"σ", "ς"},
		{"s", "ſ"},
		{"k", "\u212a"},
		{"i", "İ"},
		{"ß?", "ẞx"},
		{"*?x", "x"},
		{"a.c", "abc"},
		{"a\nb", "A\nB"},
		{"/api/*/items/?", "/API/42/items/7"},
	}
	for _, s := range seeds {
		f.Add(s.pattern, s.subject)
	}
	f.Fuzz(func(t *testing.T, pattern, subject string) {
		// regexp treats invalid UTF-8 differently (as U+FFFD per byte), and
		// validation keeps it out of rules and requests.
		if !utf8.ValidString(pattern) || !utf8.ValidString(subject) {
			t.Skip()
		}
		want := referenceMatch(pattern, subject)
		g := rules.CompileGlob(pattern)
		if got := g.Match(subject); got != want {
			t.Fatalf("CompileGlob(%q).Match(%q) = %v, reference says %v", pattern, subject, got, want)
		}
		if g.MatchesAll() && !want {
			t.Fatalf("CompileGlob(%q).MatchesAll() = true, but it does not match %q", pattern, subject)
		}
		// String gives a pattern that means the same thing.
		if got := rules.CompileGlob(g.String()).Match(subject); got != want {
			t.Fatalf("CompileGlob(%q).Match(%q) = %v (String of %q), reference says %v", g.String(), subject, got, pattern, want)
		}
	})
}

// TestGlobFoldsEveryRuneLikeEqualFold checks the case folding of a one-rune
// pattern for every Unicode code point: every rune of a case-folding orbit
// (the runes strings.EqualFold treats as equal) must compile to the same
// pattern, and that pattern must be equal, ignoring case, to the rune; so two
// runes match each other exactly when EqualFold says they are equal.
func TestGlobFoldsEveryRuneLikeEqualFold(t *testing.T) {
	failures := 0
	for r := rune(0); r <= unicode.MaxRune && failures < 10; r++ {
		if r == '*' || r == '?' || !utf8.ValidRune(r) {
			continue
		}
		want := rules.CompileGlob(string(r)).String()
		if !strings.EqualFold(want, string(r)) {
			t.Errorf("CompileGlob(%q).String() = %q, which is not EqualFold to it", r, want)
			failures++
		}
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if got := rules.CompileGlob(string(f)).String(); got != want {
				t.Errorf("CompileGlob(%q).String() = %q, but CompileGlob(%q).String() = %q; want equal, they fold together", f, got, r, want)
				failures++
			}
			if !rules.MatchGlob(string(r), string(f)) || !rules.MatchGlob("?"+string(f), "x"+string(r)) {
				t.Errorf("%q and %q should match each other ignoring case", r, f)
				failures++
			}
		}
	}
}
