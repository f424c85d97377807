package files

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

func TestLoadBudgetsProblems(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		want []string
	}{
		{"empty", "", []string{`f.yaml: the file is empty; want a "budgets:" list`}},
		{"wrong top-level field", "rules: []\n", []string{`f.yaml:1: unknown field "rules"; the file has one field, "budgets"`}},
		{"not a list", "budgets: {name: a}\n", []string{`f.yaml:1: "budgets" must be a list of budgets, got a mapping`}},
		{"unnamed", "budgets:\n  - monthly_amount: 5\n", []string{`f.yaml:2: budget #1: name: is required`}},
		{"bad values", "budgets:\n  - name: a\n    monthly_amount: lots\n    mode: always\n    spend_thresholds: 0.5\n    free_traces: 1.5\n", []string{
			`f.yaml:3: budget "a" (#1): monthly_amount: want an amount such as 12.50, got "lots"`,
			`f.yaml:4: budget "a" (#1): mode: enforce or alert_only, got "always"`,
			`f.yaml:5: budget "a" (#1): spend_thresholds: want a list of numbers such as [0.5, 0.8, 1], got "0.5"`,
			`f.yaml:6: budget "a" (#1): free_traces: want a whole number, got "1.5"`,
		}},
		{"validation names the line", "budgets:\n  - name: a\n    monthly_amount: 5\n    scope:\n      service_names: [x, '']\n      rule_labels: {Team: x}\n    channels:\n      - webhook_url: x\n", []string{
			`f.yaml:5: budget "a" (#1): scope.service_names[1]: a glob of 1-`,
			`f.yaml:6: budget "a" (#1): scope.rule_labels.Team: label keys must be`,
			`f.yaml:8: budget "a" (#1): channels[0].webhook_url: an http or https URL`,
		}},
		{"masked secret", "budgets:\n  - name: a\n    monthly_amount: 5\n    channels:\n      - {webhook_url: 'https://h.example.com', secret: '****'}\n", []string{
			`f.yaml:5: budget "a" (#1): channels[0].secret: "****" is how the server masks a secret`,
		}},
		{"output only", "budgets:\n  - {name: a, monthly_amount: 5, etag: '3'}\n", []string{`budget "a" (#1): etag: is output only`}},
		{"same name", "budgets:\n  - {name: a, monthly_amount: 5}\n  - {name: a, monthly_amount: 6}\n", []string{
			`f.yaml:3: budget "a" (#2): name: budget #1 (line 2) has the same name`,
		}},
		{"field given twice", "budgets:\n  - name: a\n    monthly_amount: 5\n    monthly_amount: 6\n", []string{`f.yaml:4: budget "a" (#1): monthly_amount: given twice (first at line 3)`}},
		{"money", "budgets:\n  - name: a\n    monthly_amount: 12.1234567\n    price_per_million: -1\n    currency: euro\n", []string{
			`f.yaml:3: budget "a" (#1): monthly_amount: at most 6 decimal places (micros), got 12.1234567`,
			`f.yaml:4: budget "a" (#1): price_per_million: must be more than 0 and at most 1000000 units, got -1`,
			`f.yaml:5: budget "a" (#1): currency: an ISO 4217 code such as USD, got "euro"`,
		}},
		{"a price of 0", "budgets:\n  - name: a\n    monthly_amount: 5\n    price_per_million: 0\n", []string{
			`f.yaml:4: budget "a" (#1): price_per_million: must be more than 0`,
		}},
		{"an empty secret", "budgets:\n  - name: a\n    monthly_amount: 5\n    channels:\n      - {webhook_url: 'https://h.example.com', secret: ''}\n", []string{
			`f.yaml:5: budget "a" (#1): channels[0].secret: empty; leave secret out for an unsigned webhook`,
		}},
		{"currency under both names", "budgets:\n  - {name: a, monthly_amount: 5, currency_code: EUR, currency: EUR}\n", []string{
			`budget "a" (#1): currency: currency_code and currency are one field (currency is its earlier name); give one`,
		}},
		{"redacted URL", "budgets:\n  - name: a\n    monthly_amount: 5\n    channels:\n      - {webhook_url: 'https://hooks.slack.com/…4Hd6'}\n", []string{
			`f.yaml:5: budget "a" (#1): channels[0].webhook_url: a redacted URL`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bs, err := LoadBudgets("f.yaml", []byte(tc.file))
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("loadBudgets = %v, %v; want an *Error", bs, err)
			}
			if len(fe.Problems) != len(tc.want) {
				t.Errorf("%d problems, want %d:\n%s", len(fe.Problems), len(tc.want), strings.Join(fe.Problems, "\n"))
			}
			for i, w := range tc.want {
				if i < len(fe.Problems) && !strings.Contains(fe.Problems[i], w) {
					t.Errorf("problem %d = %q, want it to contain %q", i, fe.Problems[i], w)
				}
			}
		})
	}
}

// TestLoadBudgetsMoney: a file's amounts are decimal currency units, read
// exactly into the API's micros; a file written before currency_code (with
// currency) still loads.
func TestLoadBudgetsMoney(t *testing.T) {
	bs, err := LoadBudgets("f.yaml", []byte("budgets:\n  - {name: a, monthly_amount: 0.1, price_per_million: 2.000001, currency: EUR}\n  - {name: b, monthly_amount: 1e3, currency_code: JPY}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []*pb.Budget{
		{Name: "a", MonthlyAmountMicros: 100_000, PricePerMillionMicros: 2_000_001, CurrencyCode: "EUR"},
		{Name: "b", MonthlyAmountMicros: 1_000_000_000, PricePerMillionMicros: 5_000_000, CurrencyCode: "JPY"},
	}
	ignore := protocmp.IgnoreFields(&pb.Budget{}, "mode", "spend_thresholds", "forecast_thresholds")
	if diff := cmp.Diff(want, bs, protocmp.Transform(), ignore); diff != "" {
		t.Errorf("loadBudgets (-want +got):\n%s", diff)
	}
}
