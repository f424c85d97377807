package cli

import (
	"strings"
	"testing"
)

// TestBudgetsApply: apply creates, updates and (with --prune) deletes
// budgets to match a file, prints the changes first, changes nothing on a
// dry run or a second run, and compares channels as the server shows them.
func TestBudgetsApply(t *testing.T) {
	s := startBudgetServer(t)
	s.cli(t, "", "create", "old", "--amount", "1").mustOK(t)

	res := s.cli(t, "", "apply", "-f", "testdata/budgets.yaml").mustOK(t)
	want := "+ create search\n+ create platform\n# kept, not in testdata/budgets.yaml (--prune deletes them): old\n2 created, 0 updated, 0 deleted, 0 unchanged\n"
	if res.stdout != want {
		t.Errorf("first apply printed\n%s\nwant\n%s", res.stdout, want)
	}
	before := s.cli(t, "", "list", "-o", "json").mustOK(t).stdout

	// Again: nothing to do, secrets and full URLs included.
	res = s.cli(t, "", "apply", "-f", "testdata/budgets.yaml").mustOK(t)
	if !strings.HasPrefix(res.stdout, "= 2 unchanged\n") || !strings.HasSuffix(res.stdout, "0 created, 0 updated, 0 deleted, 2 unchanged\n") {
		t.Errorf("second apply printed\n%s", res.stdout)
	}
	if after := s.cli(t, "", "list", "-o", "json").mustOK(t).stdout; after != before {
		t.Errorf("an unchanged apply changed the budgets:\n%s\n->\n%s", before, after)
	}

	edited := `budgets:
  - name: search
    description: search traffic
    monthly_amount: 150
    scope:
      service_names: [search, "search-*"]
    spend_thresholds: [0.5, 0.9]
    forecast_thresholds: [0]
  - name: platform
    monthly_amount: 2000
    currency_code: EUR
    price_per_million: 2.5
    free_traces: 1000000
    scope:
      rule_labels: {team: platform}
    channels:
      - webhook_url: https://hooks.example.com/platform
    floor_traces_per_second: 2
`
	wantPlan := "~ update search: monthly_amount 120.5 -> 150, mode alert_only -> enforce\n" +
		"~ update platform: channels [https://hooks.example.com/… (signed) http://alerts.internal:8080/…] -> [https://hooks.example.com/…]\n" +
		"- delete old\n"
	res = s.cli(t, edited, "apply", "-f", "-", "--prune", "--dry-run").mustOK(t)
	if want := wantPlan + "dry run: 0 to create, 2 to update, 1 to delete, 0 unchanged; nothing was changed\n"; res.stdout != want {
		t.Errorf("dry run printed\n%s\nwant\n%s", res.stdout, want)
	}
	if after := s.cli(t, "", "list", "-o", "json").mustOK(t).stdout; after != before {
		t.Error("a dry run changed the budgets")
	}

	res = s.cli(t, edited, "apply", "-f", "-", "--prune").mustOK(t)
	if want := wantPlan + "0 created, 2 updated, 1 deleted, 0 unchanged\n"; res.stdout != want {
		t.Errorf("apply --prune printed\n%s\nwant\n%s", res.stdout, want)
	}
	if names := s.names(t); strings.Join(names, " ") != "platform search" {
		t.Errorf("budgets after apply --prune: %v", names)
	}
	search, platform := s.get(t, "search"), s.get(t, "platform")
	if search.GetMonthlyAmountMicros() != 150_000_000 || search.GetMode().String() != "MODE_ENFORCE" {
		t.Errorf("search after apply: %v", search)
	}
	if chs := platform.GetChannels(); len(chs) != 1 || chs[0].GetSecret() != "" {
		t.Errorf("platform's channels after apply: %v, want one, unsigned", chs)
	}
	// And once more: unchanged.
	if res := s.cli(t, edited, "apply", "-f", "-", "--prune").mustOK(t); !strings.HasPrefix(res.stdout, "= 2 unchanged\n") {
		t.Errorf("apply of the applied file printed\n%s", res.stdout)
	}

	// create -f still refuses a budget that exists, and says to apply.
	res = s.cli(t, "", "create", "-f", "testdata/budgets.yaml")
	if res.code != exitConflict || !strings.Contains(res.stderr, "budgets apply -f") {
		t.Errorf("create -f of existing budgets: exit %d, %v\nstderr:\n%s", res.code, res.err, res.stderr)
	}
}
