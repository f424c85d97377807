package cli

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/rules"
)

func TestApply(t *testing.T) {
	s := startCLIServer(t, nil)

	res := s.cli(t, "", "apply", "-f", "testdata/rules.yaml").mustOK(t)
	golden(t, "apply.first.golden", res.stdout)
	golden(t, "apply.list.golden", s.cli(t, "", "list").mustOK(t).stdout)

	// Again: nothing to do, and nothing done.
	before := s.list(t)
	res = s.cli(t, "", "apply", "-f", "testdata/rules.yaml").mustOK(t)
	if want := "= 3 unchanged\n0 created, 0 updated, 0 deleted, 3 unchanged\n"; res.stdout != want {
		t.Errorf("second apply printed\n%s\nwant\n%s", res.stdout, want)
	}
	if d := cmp.Diff(before, s.list(t), protocmp.Transform()); d != "" {
		t.Errorf("an unchanged apply changed the rules (-before +after):\n%s", d)
	}

	// A dry run of the edited file prints the diff and changes nothing.
	res = s.cli(t, "", "apply", "-f", "testdata/rules_edited.yaml", "--dry-run").mustOK(t)
	golden(t, "apply.edited.dry-run.golden", res.stdout)
	if d := cmp.Diff(before, s.list(t), protocmp.Transform()); d != "" {
		t.Errorf("--dry-run changed the rules (-before +after):\n%s", d)
	}

	// The edit itself, without --prune: search is kept. Its three changes
	// are one batch: one rules version.
	res = s.cli(t, "", "apply", "-f", "testdata/rules_edited.yaml").mustOK(t)
	golden(t, "apply.edited.golden", res.stdout)
	if v := s.list(t).GetRulesVersion(); v != before.GetRulesVersion()+1 {
		t.Errorf("rules version %d → %d after one apply, want one step", before.GetRulesVersion(), v)
	}
	if names := ruleNames(s.list(t).GetRules()); strings.Join(names, " ") != "health checkout login search Default" {
		t.Errorf("after the edit: %v", names)
	}
	checkout := normalized(s.get(t, "checkout"))
	if checkout.FixedRate != 0.2 || checkout.URLPath != "/pay*" || checkout.Labels["env"] != "prod" {
		t.Errorf("checkout after the edit: %+v", checkout)
	}
	if d := s.get(t, "Default"); d.GetFixedRate() != 0.01 || d.GetReservoirSize() != 2 || d.GetPriority() != rules.DefaultPriority {
		t.Errorf("Default after the edit: %v", d)
	}

	// With --prune: search goes, Default stays although only re-rated.
	res = s.cli(t, "", "apply", "-f", "testdata/rules_edited.yaml", "--prune").mustOK(t)
	if want := "- delete search\n= 4 unchanged\n0 created, 0 updated, 1 deleted, 4 unchanged\n"; res.stdout != want {
		t.Errorf("apply --prune printed\n%s\nwant\n%s", res.stdout, want)
	}
	// A file without the Default rule never prunes it.
	res = s.cli(t, "rules:\n  - {name: health, priority: 1, url_path: /healthz, description: never trace health checks}\n",
		"apply", "-f", "-", "--prune").mustOK(t)
	if want := "- delete checkout\n- delete login\n= 1 unchanged\n0 created, 0 updated, 2 deleted, 1 unchanged\n"; res.stdout != want {
		t.Errorf("apply --prune of one rule printed\n%s\nwant\n%s", res.stdout, want)
	}
	if names := ruleNames(s.list(t).GetRules()); strings.Join(names, " ") != "health Default" {
		t.Errorf("after pruning: %v", names)
	}
}

func TestApplyInvalidFileChangesNothing(t *testing.T) {
	s := startCLIServer(t, nil)
	s.cli(t, "", "apply", "-f", "testdata/rules.yaml").mustOK(t)
	before := s.list(t)

	for _, tc := range []struct {
		name string
		file string
		want []string // in the error, in this order
	}{
		{
			name: "bad value",
			file: `rules:
  - name: health
    priority: 1
  - name: checkout
    priority: 10
    fixed_rate: 1.5
`,
			want: []string{`<stdin>:6: rule "checkout" (#2): fixed_rate: must be between 0 and 1, got 1.5`},
		},
		{
			name: "unknown field",
			file: `rules:
  - name: checkout
    priority: 10
    fixed_rat: 0.5
`,
			want: []string{`<stdin>:4: rule "checkout" (#1): fixed_rat: unknown field; did you mean "fixed_rate"?`},
		},
		{
			name: "duplicate name",
			file: `rules:
  - name: checkout
    priority: 10
  - name: search
    priority: 20
  - name: checkout
    priority: 30
  - name: search
    priority: 0
`,
			want: []string{
				`<stdin>:6: rule "checkout" (#3): name: rule #1 (line 2) has the same name`,
				`<stdin>:8: rule "search" (#4): name: rule #2 (line 4) has the same name`,
				`<stdin>:9: rule "search" (#4): priority: must be between 1 and 9999, got 0`,
			},
		},
		{
			name: "yaml syntax",
			file: "rules:\n  - name: checkout\n    priority: [10\n",
			want: []string{"<stdin>:", "invalid YAML"},
		},
		{
			name: "wrong type",
			file: "rules:\n  - name: checkout\n    priority: high\n    labels: [a, b]\n    reservoir_size: 1.5\n",
			want: []string{
				`<stdin>:3: rule "checkout" (#1): priority: want a whole number, got "high"`,
				`<stdin>:4: rule "checkout" (#1): labels: want a mapping of key: value, got a list`,
				`<stdin>:5: rule "checkout" (#1): reservoir_size: want a whole number, got "1.5"`,
			},
		},
		{
			name: "every problem at once",
			file: `rules:
  - name: checkout
    priority: 0
    fixed_rate: 2
    http_method: VERYLONGMETHOD
    attributes: {tier: ""}
    labels: {Team: x}
  - priority: 5
`,
			want: []string{
				"<stdin>: 6 problems found, nothing was changed",
				`<stdin>:3: rule "checkout" (#1): priority: must be between 1 and 9999, got 0`,
				`<stdin>:4: rule "checkout" (#1): fixed_rate: must be between 0 and 1, got 2`,
				`<stdin>:5: rule "checkout" (#1): http_method: at most 10 characters, got 14`,
				`<stdin>:6: rule "checkout" (#1): attributes.tier: is required`,
				`<stdin>:7: rule "checkout" (#1): labels.Team: label keys must be`,
				`<stdin>:8: rule #2: name: is required`,
			},
		},
		{
			name: "Default narrowed",
			file: "rules:\n  - name: Default\n    fixed_rate: 0.1\n    service_name: shop\n",
			want: []string{`<stdin>:2: rule "Default" (#1): the Default rule can be re-rated but not deleted, renamed or narrowed (cannot change service_name)`},
		},
		{
			name: "field given twice",
			file: "rules:\n  - name: checkout\n    priority: 10\n    priority: 20\n",
			want: []string{`<stdin>:4: rule "checkout" (#1): priority: given twice (first at line 3)`},
		},
		{
			name: "output-only field",
			file: "rules:\n  - name: checkout\n    priority: 10\n    etag: \"3\"\n",
			want: []string{`<stdin>:4: rule "checkout" (#1): etag: is output only`},
		},
		{
			name: "unknown top-level field",
			file: "rule:\n  - name: checkout\n",
			want: []string{`<stdin>:1: unknown field "rule"`},
		},
		{
			name: "not a list",
			file: "rules: {name: checkout}\n",
			want: []string{`<stdin>:1: "rules" must be a list of rules, got a mapping`},
		},
		{
			name: "empty file",
			file: "",
			want: []string{"<stdin>: the file is empty"},
		},
		{
			name: "two documents",
			file: "rules: []\n---\nrules: []\n",
			want: []string{"<stdin>:2: only one YAML document is allowed"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, args := range [][]string{
				{"apply", "-f", "-", "--prune"},
				{"apply", "-f", "-", "--dry-run"},
				{"create", "-f", "-"},
			} {
				res := s.cli(t, tc.file, args...)
				if res.code != exitInvalid {
					t.Fatalf("%s: exit code %d, want %d; err %v\nstdout:\n%s", args[0], res.code, exitInvalid, res.err, res.stdout)
				}
				// Problems are listed in the order of the file.
				msg := res.err.Error()
				for _, w := range tc.want {
					i := strings.Index(msg, w)
					if i < 0 {
						t.Errorf("%s: error\n%v\ndoes not contain (after the previous problem)\n%s", args[0], res.err, w)
						continue
					}
					msg = msg[i+len(w):]
				}
				if res.stdout != "" {
					t.Errorf("%s: printed %q for an invalid file", args[0], res.stdout)
				}
			}
			if d := cmp.Diff(before, s.list(t), protocmp.Transform()); d != "" {
				t.Errorf("an invalid file changed the rules (-before +after):\n%s", d)
			}
		})
	}
}

// racingStore edits a rule behind the CLI's back just before the server
// applies its batch, as another admin would between apply's list and its
// batch.
type racingStore struct {
	*memstore.Store
	victim string
	once   sync.Once
}

func (s *racingStore) ApplyRuleEdits(ctx context.Context, edits []store.RuleEdit, actor, message string) (store.BatchResult, error) {
	var err error
	s.once.Do(func() {
		var r rules.Rule
		if r, err = s.Store.Rule(ctx, s.victim); err == nil {
			r.Description = "edited meanwhile"
			_, err = s.Store.UpdateRule(ctx, r, r.Revision, "someone-else")
		}
	})
	if err != nil {
		return store.BatchResult{}, err
	}
	return s.Store.ApplyRuleEdits(ctx, edits, actor, message)
}

// TestApplyConcurrentEditChangesNothing: a rule edited by someone else
// between apply's read and its batch fails the whole apply, which changes
// nothing, and keeps the other edit.
func TestApplyConcurrentEditChangesNothing(t *testing.T) {
	s := startCLIServer(t, &racingStore{Store: newCLIStore(t), victim: "checkout"})
	s.cli(t, "", "create", "-f", "testdata/rules.yaml").mustOK(t)
	before := s.list(t)

	res := s.cli(t, "", "apply", "-f", "testdata/rules_edited.yaml", "--prune")
	if res.code != exitConflict {
		t.Fatalf("exit code %d, want %d (aborted); err %v", res.code, exitConflict, res.err)
	}
	for _, want := range []string{`apply 4 changes: `, `update rule "checkout"`, "revision conflict", "nothing was changed"} {
		if !strings.Contains(res.err.Error(), want) {
			t.Errorf("error %q does not contain %q", res.err, want)
		}
	}
	if want := "apply failed: none of the 4 changes was made\n"; res.stderr != want {
		t.Errorf("stderr:\n%s\nwant\n%s", res.stderr, want)
	}
	if strings.Contains(res.stdout, "created") {
		t.Errorf("stdout sums up changes that were not made:\n%s", res.stdout)
	}
	if c := s.get(t, "checkout"); c.GetDescription() != "edited meanwhile" || c.GetFixedRate() != 0.5 {
		t.Errorf("the other admin's edit was overwritten: %v", c)
	}
	after := s.list(t)
	if names := ruleNames(after.GetRules()); strings.Join(names, " ") != "health checkout search Default" {
		t.Errorf("after the failed apply: %v", names)
	}
	if after.GetRulesVersion() != before.GetRulesVersion()+1 {
		t.Errorf("rules version %d → %d, want only the other admin's edit", before.GetRulesVersion(), after.GetRulesVersion())
	}
}

func TestApplyFromStdinMatchesFile(t *testing.T) {
	data, err := os.ReadFile("testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	a, b := startCLIServer(t, nil), startCLIServer(t, nil)
	a.cli(t, "", "apply", "-f", "testdata/rules.yaml").mustOK(t)
	b.cli(t, string(data), "apply", "-f", "-").mustOK(t)
	if d := cmp.Diff(a.list(t), b.list(t), protocmp.Transform()); d != "" {
		t.Errorf("apply -f FILE and -f - differ (-FILE +stdin):\n%s", d)
	}
}

// TestApplyRuleLimit: a file that would take the server past its limit of
// rules fails before any change; one that stays within it once pruned
// applies, its deletes first when creating first would pass the limit.
func TestApplyRuleLimit(t *testing.T) {
	st := newCLIStore(t)
	s := startCLIServer(t, st)
	ctx := t.Context()
	// The server at the limit: Default and r1 to r999.
	var file strings.Builder
	file.WriteString("rules:\n")
	for i := 1; i < rules.MaxRules; i++ {
		r := rules.Rule{Name: fmt.Sprintf("r%d", i), Priority: 100, ReservoirSize: 1}.Normalize()
		if _, err := st.CreateRule(ctx, r, "test"); err != nil {
			t.Fatal(err)
		}
		if i <= 990 {
			fmt.Fprintf(&file, "  - {name: r%d, priority: 100, reservoir_size: 1}\n", i)
		}
	}
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&file, "  - {name: n%d, priority: 100, reservoir_size: 1}\n", i)
	}
	before := s.list(t)

	// Without --prune the server would hold 1,009 rules.
	res := s.cli(t, file.String(), "apply", "-f", "-")
	if res.code != exitConflict || !strings.Contains(fmt.Sprint(res.err), "1009 rules, more than the limit of 1000") {
		t.Fatalf("apply past the limit: exit %d, %v", res.code, res.err)
	}
	if strings.Contains(res.stdout, "created") {
		t.Errorf("apply past the limit printed\n%s", res.stdout)
	}
	if d := cmp.Diff(before, s.list(t), protocmp.Transform()); d != "" {
		t.Errorf("apply past the limit changed the rules (-before +after):\n%s", d)
	}

	// With --prune it holds 1,000: one batch, whatever the order.
	res = s.cli(t, file.String(), "apply", "-f", "-", "--prune").mustOK(t)
	if !strings.HasSuffix(res.stdout, "9 created, 0 updated, 9 deleted, 990 unchanged\n") {
		t.Errorf("apply --prune printed\n%s", res.stdout)
	}
	if n := len(s.list(t).GetRules()); n != rules.MaxRules {
		t.Errorf("%d rules after apply --prune, want %d", n, rules.MaxRules)
	}
}
