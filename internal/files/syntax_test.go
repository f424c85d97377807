package files

import (
	"errors"
	"strings"
	"testing"
)

// TestSyntaxErrorLine: a YAML syntax error names the line of the problem,
// not the line where the list or mapping around it began.
func TestSyntaxErrorLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		want string // the problem, with its line
	}{
		{"key indented less", "rules:\n  - name: a\n    priority: 1\n   fixed_rate: 0.5\n", "f.yaml:4: invalid YAML: did not find expected '-' indicator"},
		{"key indented as the list", "rules:\n  - name: a\n    priority: 1\n  fixed_rate: 0.5\n", "f.yaml:4: invalid YAML: did not find expected '-' indicator"},
		{"list item inside a mapping", "rules:\n  - name: a\n    priority: 1\n    - fixed_rate: 0.5\n", "f.yaml:4: invalid YAML: did not find expected key"},
		{"far down a long file", "rules:\n" + strings.Repeat("  - {name: a, priority: 1}\n", 40) + "  - name: b\n   priority: 2\n", "f.yaml:43: invalid YAML: did not find expected '-' indicator"},
		{"a tab", "rules:\n  - name: a\n    priority: 1\n\tfixed_rate: 0.5\n", "f.yaml:4: invalid YAML: found a tab character that violates indentation"},
		{"unclosed flow", "rules:\n  - name: a\n    priority: 1\n    labels: {a: 1\n  - name: b\n", "f.yaml:4: invalid YAML: did not find expected ',' or '}'"},
		{"unknown anchor", "rules:\n  - name: a\n    priority: 1\n    description: *nope\n", "f.yaml:4: invalid YAML: unknown anchor 'nope' referenced"},
		{"already right", "rules:\n  - name: a\n    priority: 1\n    fixed_rate: 0.5: 3\n", "f.yaml:4: invalid YAML: mapping values are not allowed in this context"},
		{"in the second document", "rules: []\n---\nrules:\n  - name: a\n   x: 1\n", "f.yaml:5: invalid YAML: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, load := range []struct {
				what string
				err  func() error
			}{
				{"rules", func() error { _, err := LoadRules("f.yaml", []byte(tc.file)); return err }},
				{"budgets", func() error {
					_, err := LoadBudgets("f.yaml", []byte(strings.Replace(tc.file, "rules:", "budgets:", 1)))
					return err
				}},
			} {
				var fe *Error
				if err := load.err(); !errors.As(err, &fe) || len(fe.Problems) != 1 || !strings.HasPrefix(fe.Problems[0], tc.want) {
					t.Errorf("%s: %v; want one problem starting %q", load.what, err, tc.want)
				}
			}
		})
	}
}
