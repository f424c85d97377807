package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/redistest"
	"github.com/tracesampling/controlplane/internal/server"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// ruleSize is how big the rules of a generated rules file are.
type ruleSize struct {
	name string
	// entry returns rule i of generation gen as a YAML list entry: each
	// generation changes every rule's fixed rate and description.
	entry func(i, gen int) string
	// requestBytes is the server's --max-request-bytes the set needs.
	requestBytes int
}

// realisticRule is a rule of a few hundred bytes, as teams write them.
func realisticRule(i, gen int) string {
	return fmt.Sprintf(`  - name: route-%04d
    priority: %d
    fixed_rate: %g
    reservoir_size: %d
    service_name: "shop-*"
    http_method: GET
    url_path: "/api/v1/items/%d/*"
    attributes: {tier: gold}
    description: "investigate slow item pages, generation %d"
    labels: {team: payments, env: prod}
`, i, 1+i%rules.MaxPriority, float64(1+(i+gen)%100)/1000, 1+i%10, i, gen)
}

// largestFileRule is a rule at maximum field sizes, description and labels
// included, every character four bytes of UTF-8 where a field allows any:
// some 20 kB in a request.
func largestFileRule(i, gen int) string {
	wide := func(n int) string { return strings.Repeat("\U0010FFFD", n) }
	var b strings.Builder
	fmt.Fprintf(&b, "  - name: %s\n", fmt.Sprintf("%0*d", rules.MaxNameLen, i))
	fmt.Fprintf(&b, "    priority: %d\n    fixed_rate: %g\n    reservoir_size: %d\n", 1+i%rules.MaxPriority, float64(1+(i+gen)%100)/1000, rules.MaxReservoirSize)
	fmt.Fprintf(&b, "    service_name: %q\n    service_type: %q\n", wide(rules.MaxServiceNameLen), wide(rules.MaxServiceTypeLen))
	fmt.Fprintf(&b, "    host: %q\n    http_method: %q\n    url_path: %q\n    resource_arn: %q\n",
		wide(rules.MaxHostLen), wide(rules.MaxHTTPMethodLen), wide(rules.MaxURLPathLen), wide(rules.MaxResourceARNLen))
	b.WriteString("    attributes:\n")
	for k := range rules.MaxAttributes {
		fmt.Fprintf(&b, "      %q: %q\n", fmt.Sprintf("%02d", k)+wide(rules.MaxAttributeLen-2), wide(rules.MaxAttributeLen))
	}
	fmt.Fprintf(&b, "    description: %q\n", fmt.Sprintf("%06d", gen)+wide(rules.MaxDescriptionLen-6))
	b.WriteString("    labels:\n")
	for k := range rules.MaxLabels {
		fmt.Fprintf(&b, "      %s: %q\n", fmt.Sprintf("%02d", k)+strings.Repeat("k", rules.MaxLabelKeyLen-2), wide(rules.MaxLabelValueLen))
	}
	return b.String()
}

var ruleSizes = []ruleSize{
	{name: "realistic", entry: realisticRule, requestBytes: server.DefaultMaxRecvMsgBytes},
	{name: "maximum", entry: largestFileRule, requestBytes: 64 << 20},
}

// writeRules writes a rules file of n rules of generation gen.
func writeRules(tb testing.TB, dir string, size ruleSize, n, gen int) string {
	tb.Helper()
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := range n {
		b.WriteString(size.entry(i, gen))
	}
	path := filepath.Join(dir, fmt.Sprintf("%s-%d-%d.yaml", size.name, n, gen))
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// startRedisControlPlane serves the RuleService over a redisstore on a real
// redis-server, taking requests of up to requestBytes.
func startRedisControlPlane(tb testing.TB, requestBytes int) string {
	tb.Helper()
	rs := redistest.Start(tb)
	st, err := redisstore.New(context.Background(), rs.Client(tb), redisstore.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	srv := server.New(server.Options{Rules: st, Logger: slog.New(slog.DiscardHandler), MaxRecvMsgBytes: requestBytes})
	_, addr := servetest.Serve(tb, srv)
	return addr
}

// applyFile runs `rules apply -f file`, with --prune if asked.
func applyFile(tb testing.TB, addr, file string, prune bool) string {
	tb.Helper()
	args := []string{"rules", "apply", "-f", file, "--server", addr, "--timeout", "2m"}
	if prune {
		args = append(args, "--prune")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr strings.Builder
	if err := run(ctx, args, strings.NewReader(""), &stdout, &stderr); err != nil {
		tb.Fatalf("rules apply -f %s: %v\n%s", file, err, stderr.String())
	}
	out := stdout.String()
	return out[strings.LastIndex(strings.TrimSuffix(out, "\n"), "\n")+1:]
}

// BenchmarkRulesApply times `controlplane rules apply` end to end, the CLI
// and a server on loopback over a real Redis: reading the file, listing
// the server's rules, the diff, one BatchEditRules call, its checks and
// the Lua script. The largest set the store takes: 999 rules beside the
// Default rule, realistic (some 300 bytes each) and at maximum field sizes
// (some 20 kB each; the server then takes requests of up to 64 MiB).
//
//	create:  999 rules created in one apply
//	update:  999 rules updated in one apply (fixed rate and description)
//	delete:  999 rules pruned in one apply
//	10000-edits: 10 applies in a row (create, 8 updates, prune): 9,990 edits
func BenchmarkRulesApply(b *testing.B) {
	const n = rules.MaxRules - 1
	for _, size := range ruleSizes {
		addr := startRedisControlPlane(b, size.requestBytes)
		dir := b.TempDir()
		empty := filepath.Join(dir, "empty.yaml")
		if err := os.WriteFile(empty, []byte("rules: []\n"), 0o600); err != nil {
			b.Fatal(err)
		}
		gens := make([]string, 9)
		for g := range gens {
			gens[g] = writeRules(b, dir, size, n, g)
		}
		want := func(out, w string) {
			if out != w {
				b.Fatalf("apply summed up %q, want %q", out, w)
			}
		}
		created := fmt.Sprintf("%d created, 0 updated, 0 deleted, 0 unchanged\n", n)
		updated := fmt.Sprintf("0 created, %d updated, 0 deleted, 0 unchanged\n", n)
		deleted := fmt.Sprintf("0 created, 0 updated, %d deleted, 0 unchanged\n", n)
		b.Run(size.name+"/create", func(b *testing.B) {
			for b.Loop() {
				want(applyFile(b, addr, gens[0], false), created)
				b.StopTimer()
				applyFile(b, addr, empty, true)
				b.StartTimer()
			}
		})
		b.Run(size.name+"/update", func(b *testing.B) {
			applyFile(b, addr, gens[0], false)
			g := 0
			for b.Loop() {
				g = g%8 + 1
				want(applyFile(b, addr, gens[g], false), updated)
			}
			applyFile(b, addr, empty, true)
		})
		b.Run(size.name+"/delete", func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				applyFile(b, addr, gens[0], false)
				b.StartTimer()
				want(applyFile(b, addr, empty, true), deleted)
			}
		})
		b.Run(size.name+"/10000-edits", func(b *testing.B) {
			for b.Loop() {
				want(applyFile(b, addr, gens[0], false), created)
				for g := 1; g <= 8; g++ {
					want(applyFile(b, addr, gens[g], false), updated)
				}
				want(applyFile(b, addr, empty, true), deleted)
			}
		})
	}
}

// TestApplyLargeAnswers: the CLI applies, lists and applies again 260 rules
// at maximum field sizes (some 5 MB, over gRPC's default 4 MiB answer,
// which the CLI used to refuse: 1,000 such rules, the most a store holds,
// are some 20 MB) over a server that takes requests that large.
func TestApplyLargeAnswers(t *testing.T) {
	const n = 260
	size := ruleSizes[1]
	addr := startRedisControlPlane(t, size.requestBytes)
	file := writeRules(t, t.TempDir(), size, n, 0)
	if got, want := applyFile(t, addr, file, false), fmt.Sprintf("%d created, 0 updated, 0 deleted, 0 unchanged\n", n); got != want {
		t.Errorf("apply: %q, want %q", got, want)
	}
	res := runCLI(t, "", "rules", "list", "-o", "json", "--server", addr).mustOK(t)
	if len(res.stdout) <= 4<<20 {
		t.Fatalf("the listing is %d bytes, not over 4 MiB: the test does not test what it says", len(res.stdout))
	}
	if got := strings.Count(res.stdout, `"etag"`); got != n+1 {
		t.Errorf("list printed %d rules, want %d", got, n+1)
	}
	if got, want := applyFile(t, addr, file, false), fmt.Sprintf("0 created, 0 updated, 0 deleted, %d unchanged\n", n); got != want {
		t.Errorf("apply again: %q, want %q", got, want)
	}
}

// TestApplyTooLargeForTheServer: changes larger than the server takes in
// one request are refused whole, and apply says why.
func TestApplyTooLargeForTheServer(t *testing.T) {
	addr := startRedisControlPlane(t, 4<<10)
	file := writeRules(t, t.TempDir(), ruleSizes[0], 40, 0)
	res := runCLI(t, "", "rules", "apply", "-f", file, "--server", addr)
	if res.err == nil {
		t.Fatal("apply of 40 rules to a server that takes 4 KiB succeeded")
	}
	for _, want := range []string{"apply 40 changes (a request of ", "--max-request-bytes may be lower"} {
		if !strings.Contains(res.err.Error(), want) {
			t.Errorf("error %q does not say %q", res.err, want)
		}
	}
	if res.stderr != "apply failed: none of the 40 changes was made\n" {
		t.Errorf("stderr %q", res.stderr)
	}
}
