package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runSimCmd runs `controlplane simulate args...` and returns its exit code,
// output, and the JSON object of its last line (nil if it did not end with
// one).
func runSimCmd(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string, result map[string]any) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), append([]string{"simulate"}, args...), strings.NewReader(stdin), &out, &errOut)
	stdout, stderr = out.String(), errOut.String()
	lines := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
	if last := lines[len(lines)-1]; strings.HasPrefix(last, "{") {
		if err := json.Unmarshal([]byte(last), &result); err != nil {
			t.Fatalf("last line is not one JSON object: %v\n%s", err, last)
		}
	}
	return exitCode(err), stdout, stderr, result
}

func TestSimulateCmdCostOnly(t *testing.T) {
	code, stdout, stderr, res := runSimCmd(t, "")
	if code != 0 || res == nil {
		t.Fatalf("exit %d, stderr %q, stdout %q", code, stderr, stdout)
	}
	if got := res["monthly_cost"].(float64); got != 1887.31 {
		t.Errorf("monthly_cost = %v, want 1887.31 (the issue's ≈ $1,890)", got)
	}
	if got := res["traces_per_day"].(float64); got != 12582080 {
		t.Errorf("traces_per_day = %v, want 12582080", got)
	}
	if _, ok := res["monthly_amount"]; ok {
		t.Errorf("budget figures without --budget: %v", res)
	}
	for _, want := range []string{"250,000,000 requests/day", "12,582,080/day", "$1,887.31 per 30 days"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
}

func TestSimulateCmdBudget(t *testing.T) {
	// Two days under a $20 budget: it enforces from the first minute.
	code, stdout, stderr, res := runSimCmd(t, "", "--days", "2", "--daily-swing", "0.6", "--spike-day", "2:3",
		"--budget", "20", "--interval", "5m")
	if code != 0 || res == nil {
		t.Fatalf("exit %d, stderr %q, stdout %q", code, stderr, stdout)
	}
	for _, key := range []string{"monthly_amount", "spent", "spent_ratio", "max_forecast_ratio", "min_fixed_rate_factor", "alerts", "requests", "traces", "cost"} {
		if _, ok := res[key]; !ok {
			t.Errorf("no %q in %v", key, res)
		}
	}
	if res["monthly_amount"].(float64) != 20 || res["mode"] != "enforce" {
		t.Errorf("monthly_amount %v mode %v", res["monthly_amount"], res["mode"])
	}
	if f := res["min_fixed_rate_factor"].(float64); !(f < 1) {
		t.Errorf("min_fixed_rate_factor = %v, want < 1", f)
	}
	alerts := res["alerts"].([]any)
	if len(alerts) == 0 {
		t.Fatal("no alerts")
	}
	first := alerts[0].(map[string]any)
	if first["kind"] != "forecast_over" || first["at"] != "2026-11-01T00:05:00Z" {
		t.Errorf("first alert %v, want forecast_over at the first step", first)
	}
	if !strings.Contains(stdout, "Budget $20.00 (enforce)") || !strings.Contains(stdout, "Alerts:") {
		t.Errorf("summary:\n%s", stdout)
	}
}

func TestSimulateCmdRulesFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(good, []byte(`rules:
  - name: checkout
    priority: 10
    fixed_rate: 0.5
    reservoir_size: 10
  - name: Default
    fixed_rate: 0.01
    reservoir_size: 0
`), 0o600); err != nil {
		t.Fatal(err)
	}
	// checkout: 1M a day, 864,000 by the reservoir and half the rest;
	// Default: 3M a day at 1 %.
	code, stdout, stderr, res := runSimCmd(t, "", "-f", good, "--requests-per-day", "4000000", "--share", "checkout:1", "--share", "Default:3", "--days", "1")
	if code != 0 || res == nil {
		t.Fatalf("exit %d, stderr %q, stdout %q", code, stderr, stdout)
	}
	if got, want := res["traces_per_day"].(float64), 864000+0.5*(1e6-864000)+0.01*3e6; got != want {
		t.Errorf("traces_per_day = %v, want %v", got, want)
	}
	// The same file from stdin.
	data, _ := os.ReadFile(good)
	if code, _, stderr, _ := runSimCmd(t, string(data), "-f", "-", "--days", "1"); code != 0 {
		t.Errorf("-f -: exit %d, %s", code, stderr)
	}
}

func TestSimulateCmdBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("rules:\n  - name: x\n    priority: 5\n    fixed_rate: 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	shopOnly := filepath.Join(dir, "shop.yaml")
	if err := os.WriteFile(shopOnly, []byte("rules:\n  - {name: shop, priority: 5, service_name: \"shop-*\", fixed_rate: 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.yaml")
	if err := os.WriteFile(empty, []byte("rules:\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		msg  string // in stderr or the error
	}{
		{"unknown flag", []string{"--nope"}, exitUsage, "unknown flag: --nope"},
		{"an argument", []string{"extra"}, exitUsage, "takes no arguments"},
		{"no days", []string{"--days", "0"}, exitUsage, "--days"},
		{"negative traffic", []string{"--requests-per-day", "-1"}, exitUsage, "--requests-per-day"},
		{"swing over 1", []string{"--daily-swing", "1.5"}, exitUsage, "--daily-swing"},
		{"spike without a factor", []string{"--spike-day", "12"}, exitUsage, "DAY:FACTOR"},
		{"spike on day 0", []string{"--spike-day", "0:5"}, exitUsage, "DAY"},
		{"spike after the last day", []string{"--spike-day", "31:5"}, exitUsage, "after the last simulated day"},
		{"a priority out of range", []string{"--budget", "10", "--priority", "x:5000"}, exitUsage, "--priority (rule_priorities[0].priority)"},
		{"a priority without a number", []string{"--priority", "x"}, exitUsage, "SELECTOR:N"},
		{"an unknown pricing", []string{"--pricing", "acme"}, exitUsage, "--pricing"},
		{"a floor the budget cannot pay for", []string{"--budget", "10", "--floor", "1"}, exitUsage, "costs $13.39"},
		{"negative growth", []string{"--growth", "-1"}, exitUsage, "--growth"},
		{"spike given twice", []string{"--spike-day", "3:5", "--spike-day", "3:2"}, exitUsage, "twice"},
		{"negative budget", []string{"--budget", "-5"}, exitUsage, "--budget"},
		{"zero budget", []string{"--budget", "0"}, exitUsage, "--budget"},
		{"zero price", []string{"--price-per-million", "0"}, exitUsage, "--price-per-million"},
		{"negative floor", []string{"--budget", "5", "--floor", "-1"}, exitUsage, "--floor"},
		{"bad mode", []string{"--mode", "strict"}, exitUsage, "--mode"},
		{"interval not dividing an hour", []string{"--interval", "7m"}, exitUsage, "--interval"},
		{"bad start", []string{"--start", "November"}, exitUsage, "--start"},
		{"share of an unknown rule", []string{"--share", "nope:1"}, exitUsage, "nope"},
		{"invalid rules file", []string{"-f", bad}, exitInvalid, "fixed_rate"},
		{"missing rules file", []string{"-f", filepath.Join(dir, "missing.yaml")}, exitInvalid, "missing.yaml"},
		{"no rules in the file", []string{"-f", empty}, exitInvalid, "no rules"},
		{"zipf without --fleet", []string{"--zipf", "1"}, exitUsage, "--zipf needs --fleet"},
		{"service without --fleet", []string{"--service", "shop"}, exitUsage, "--service needs --fleet"},
		{"a budget's service without --fleet", []string{"--budget", "5", "--budget-service", "shop"}, exitUsage, "--budget-service needs --fleet"},
		{"a negative fleet", []string{"--fleet", "-1"}, exitUsage, "--fleet"},
		{"a fleet too large", []string{"--fleet", "10001"}, exitUsage, "--fleet"},
		{"a fleet making too many reports", []string{"--fleet", "5000", "--interval", "1s"}, exitUsage, "over the limit"},
		{"a fleet's negative zipf", []string{"--fleet", "2", "--zipf", "-1"}, exitUsage, "zipf"},
		{"a fleet whose services run no rule with traffic", []string{"--fleet", "2", "--service", "admin", "-f", shopOnly, "--duration", "1m", "--interval", "10s"}, exitUsage, "matches none of the instances' services"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), append([]string{"simulate"}, tt.args...), strings.NewReader(""), &out, &errOut)
			if got := exitCode(err); got != tt.code {
				t.Fatalf("exit %d (%v), want %d; stderr %q", got, err, tt.code, errOut.String())
			}
			if text := errOut.String() + err.Error(); !strings.Contains(text, tt.msg) {
				t.Errorf("error %q, stderr %q: want %q in them", err, errOut.String(), tt.msg)
			}
			if out.Len() != 0 {
				t.Errorf("printed %q on failure", out.String())
			}
		})
	}
}

func TestSimulateCmdHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"simulate", "-h"}, strings.NewReader(""), &out, &errOut)
	if code := exitCode(err); code != 0 {
		t.Fatalf("exit %d", code)
	}
	// The help is the output: on stdout.
	if !strings.Contains(out.String(), "--spike-day") || errOut.Len() > 0 {
		t.Errorf("help lacks the flags:\n%s\nstderr:\n%s", out.String(), errOut.String())
	}
}

// TestSimulateCmdPriorities: issue 15's mixed rules, cut by priority: with
// health checks at a lower priority, checkout keeps its rate; the summary
// and the JSON say how each rule fared.
func TestSimulateCmdPriorities(t *testing.T) {
	rulesFile := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(`rules:
  - name: checkout
    priority: 10
    fixed_rate: 1
    reservoir_size: 0
    labels: {tier: critical}
  - name: health
    priority: 20
    fixed_rate: 0.5
    reservoir_size: 50
`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr, res := runSimCmd(t, "", "-f", rulesFile, "--requests-per-day", "8640000", "--share", "checkout:1", "--share", "health:4",
		"--budget", "40", "--floor", "1", "--priority", "tier=critical:10", "--days", "3", "--start", "2026-11-28", "--interval", "10m")
	if code != 0 || res == nil {
		t.Fatalf("exit %d, stderr %q, stdout %q", code, stderr, stdout)
	}
	rules := map[string]map[string]any{}
	for _, r := range res["rules"].([]any) {
		m := r.(map[string]any)
		rules[m["name"].(string)] = m
	}
	if c := rules["checkout"]; c["priority"].(float64) != 10 || c["min_fixed_rate_factor"].(float64) != 1 {
		t.Errorf("checkout %v: want priority 10, never cut", c)
	}
	if h := rules["health"]; h["max_fixed_rate_factor"].(float64) != 0 {
		t.Errorf("health %v: want its fixed rate off", h)
	}
	if !strings.Contains(stdout, "checkout (10):") || !strings.Contains(stdout, "never cut") {
		t.Errorf("summary:\n%s", stdout)
	}
	if code, _, stderr, _ := runSimCmd(t, "", "--budget", "10", "--priority", "x:5000"); code != exitUsage {
		t.Errorf("a priority out of range: exit %d, %s", code, stderr)
	}
}

// TestSimulateCmdFleet: --fleet runs the server's pipeline with virtual SDK
// instances; a budget scoped to a service counts only its instances' traces,
// and the summary and JSON say what the fleet did.
func TestSimulateCmdFleet(t *testing.T) {
	rulesFile := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte(`rules:
  - {name: shop, priority: 10, service_name: "shop-*", fixed_rate: 0.1, reservoir_size: 0}
  - {name: admin, priority: 11, service_name: admin, fixed_rate: 0.5, reservoir_size: 0}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	// 100 requests/s, half each; 10 minutes: shop samples 3,000, admin 15,000.
	code, stdout, stderr, res := runSimCmd(t, "", "-f", rulesFile, "--requests-per-day", "8640000", "--share", "shop:1", "--share", "admin:1",
		"--fleet", "4", "--service", "shop-cart", "--service", "admin", "--duration", "10m", "--interval", "10s",
		"--start", "2026-12-02T17:00:00Z", "--budget", "1000", "--budget-service", "shop-*")
	if code != 0 || res == nil {
		t.Fatalf("exit %d, stderr %q, stdout %q", code, stderr, stdout)
	}
	if got := res["spent_traces"].(float64); got < 2995 || got > 3005 {
		t.Errorf("spent_traces = %v, want 3,000 (shop's only)", got)
	}
	if got := res["traces"].(float64); got < 17990 || got > 18010 {
		t.Errorf("traces = %v, want 18,000", got)
	}
	fleet, ok := res["fleet"].(map[string]any)
	if !ok || fleet["instances"].(float64) != 4 || fleet["reports"].(float64) < 4*55 {
		t.Errorf("fleet = %v, want 4 instances reporting every 10 s", res["fleet"])
	}
	for _, want := range []string{"Simulated 10m0s from 2026-12-02 17:00 UTC", "Fleet model: 4 SDK instances in 2 services"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
}
