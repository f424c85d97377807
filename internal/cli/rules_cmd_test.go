package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/output"
	"github.com/tracesampling/controlplane/internal/server"
	"github.com/tracesampling/controlplane/internal/servetest"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/rules"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestMain(m *testing.M) {
	if args := os.Getenv(serveProcessEnv); args != "" {
		os.Exit(runServeProcess(args)) // a memory test's server
	}
	goleak.VerifyTestMain(m)
}

// cliNow is the test servers' clock, so times and etags in output are exact.
func cliNow() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }

// cliServer is a real control plane (RuleService over an in-memory store) on
// a loopback port, and a plain gRPC client of it to check what the CLI did.
type cliServer struct {
	addr string
	api  pb.RuleServiceClient
}

func newCLIStore(t *testing.T) *memstore.Store {
	t.Helper()
	st, err := memstore.New(memstore.Options{Now: cliNow})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// startCLIServer serves rs, or a fresh memstore when rs is nil.
func startCLIServer(t *testing.T, rs server.RuleStore) *cliServer {
	t.Helper()
	if rs == nil {
		rs = newCLIStore(t)
	}
	srv := server.New(server.Options{Rules: rs, Now: cliNow, Logger: slog.New(slog.DiscardHandler)})
	conn, addr := servetest.Serve(t, srv)
	return &cliServer{addr: addr, api: pb.NewRuleServiceClient(conn)}
}

type cliResult struct {
	stdout, stderr string
	err            error
	code           int
}

// rules runs `controlplane rules ARGS... --server ADDR` with stdin.
func (s *cliServer) cli(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	return runCLI(t, stdin, append(append([]string{"rules"}, args...), "--server", s.addr)...)
}

func runCLI(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, args, strings.NewReader(stdin), &stdout, &stderr)
	return cliResult{stdout: stdout.String(), stderr: stderr.String(), err: err, code: exitCode(err)}
}

// mustOK fails the test unless the command succeeded.
func (r cliResult) mustOK(t *testing.T) cliResult {
	t.Helper()
	if r.err != nil {
		t.Fatalf("command failed (exit %d): %v\nstdout:\n%s\nstderr:\n%s", r.code, r.err, r.stdout, r.stderr)
	}
	return r
}

// list returns the server's rules as a plain client sees them.
func (s *cliServer) list(t *testing.T) *pb.ListRulesResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.api.ListRules(ctx, &pb.ListRulesRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func (s *cliServer) get(t *testing.T, name string) *pb.Rule {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.api.GetRule(ctx, &pb.GetRuleRequest{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetRule()
}

func ruleNames(rs []*pb.Rule) []string {
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.GetName()
	}
	return names
}

// golden compares got with testdata/NAME, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func TestListOutputs(t *testing.T) {
	s := startCLIServer(t, nil)
	s.cli(t, "", "apply", "-f", "testdata/rules.yaml").mustOK(t)

	golden(t, "list.table.golden", s.cli(t, "", "list").mustOK(t).stdout)
	golden(t, "list.yaml.golden", s.cli(t, "", "list", "-o", "yaml").mustOK(t).stdout)
	golden(t, "list.json.golden", s.cli(t, "", "list", "-o", "json").mustOK(t).stdout)
	golden(t, "get.table.golden", s.cli(t, "", "get", "checkout").mustOK(t).stdout)
	// -o wide adds what the table leaves out, the etag that --etag takes
	// among it.
	golden(t, "list.wide.golden", s.cli(t, "", "list", "-o", "wide").mustOK(t).stdout)
	golden(t, "get.wide.golden", s.cli(t, "", "get", "checkout", "-o", "wide").mustOK(t).stdout)

	// Page by page gives the same rules as one page.
	if one, paged := s.cli(t, "", "list").stdout, s.cli(t, "", "list", "--page-size", "1").mustOK(t).stdout; one != paged {
		t.Errorf("--page-size 1 lists\n%s\nwant\n%s", paged, one)
	}
	// The filter is passed through.
	out := s.cli(t, "", "list", "--filter", "service=shop-api AND labels.team=payments").mustOK(t).stdout
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], "checkout ") {
		t.Errorf("filtered list:\n%s\nwant the header and checkout", out)
	}
}

func TestJSONOutputReadsBack(t *testing.T) {
	s := startCLIServer(t, nil)
	s.cli(t, "", "apply", "-f", "testdata/rules.yaml").mustOK(t)

	out := s.cli(t, "", "list", "-o", "json").mustOK(t).stdout
	if !json.Valid([]byte(out)) {
		t.Fatalf("list -o json is not JSON:\n%s", out)
	}
	var got pb.ListRulesResponse
	if err := output.UnmarshalJSON([]byte(out), &got); err != nil {
		t.Fatalf("list -o json does not parse as a ListRulesResponse: %v", err)
	}
	want := &pb.ListRulesResponse{Rules: s.list(t).GetRules()}
	if d := cmp.Diff(want, &got, protocmp.Transform()); d != "" {
		t.Errorf("list -o json (-want +got):\n%s", d)
	}
	if again := s.cli(t, "", "list", "-o", "json").stdout; again != out {
		t.Errorf("list -o json is not stable:\n%s\nthen\n%s", out, again)
	}

	out = s.cli(t, "", "get", "checkout", "-o", "json").mustOK(t).stdout
	var rule pb.Rule
	if err := output.UnmarshalJSON([]byte(out), &rule); err != nil {
		t.Fatalf("get -o json: %v\n%s", err, out)
	}
	if d := cmp.Diff(s.get(t, "checkout"), &rule, protocmp.Transform()); d != "" {
		t.Errorf("get -o json (-want +got):\n%s", d)
	}
	out = s.cli(t, "", "history", "-o", "json").mustOK(t).stdout
	var events pb.ListRuleEventsResponse
	if err := output.UnmarshalJSON([]byte(out), &events); err != nil || len(events.GetEvents()) != 4 {
		t.Errorf("history -o json: %v, %d events, want 4 (Default + 3 creates)", err, len(events.GetEvents()))
	}
}

func TestYAMLOutputRoundTrips(t *testing.T) {
	s := startCLIServer(t, nil)
	s.cli(t, "", "apply", "-f", "testdata/rules_edited.yaml").mustOK(t)
	before := s.list(t)

	out := s.cli(t, "", "list", "-o", "yaml").mustOK(t).stdout
	res := s.cli(t, out, "apply", "-f", "-").mustOK(t)
	if want := "= 4 unchanged\n0 created, 0 updated, 0 deleted, 4 unchanged\n"; res.stdout != want {
		t.Errorf("applying list -o yaml printed\n%s\nwant\n%s", res.stdout, want)
	}
	one := s.cli(t, "", "get", "checkout", "-o", "yaml").mustOK(t).stdout
	res = s.cli(t, one, "apply", "-f", "-").mustOK(t)
	if !strings.HasPrefix(res.stdout, "= 1 unchanged\n") {
		t.Errorf("applying get -o yaml printed\n%s", res.stdout)
	}
	if d := cmp.Diff(before, s.list(t), protocmp.Transform()); d != "" {
		t.Errorf("applying the server's own rules changed them (-before +after):\n%s", d)
	}
}

func TestCreateUpdateDelete(t *testing.T) {
	s := startCLIServer(t, nil)
	s.cli(t, "", "create", "--name", "login", "--priority", "5", "--fixed-rate", "0.1", "--reservoir", "2",
		"--http-method", "POST", "--url-path", "/login*", "--attr", "tier=gold", "--attr", "region=eu",
		"--label", "team=identity", "--description", "sign-ins").mustOK(t)
	want := &pb.Rule{
		Name: "login", Priority: 5, FixedRate: 0.1, ReservoirSize: 2,
		ServiceName: "*", ServiceType: "*", Host: "*", HttpMethod: "POST", UrlPath: "/login*", ResourceArn: "*",
		Attributes: map[string]string{"tier": "gold", "region": "eu"}, Labels: map[string]string{"team": "identity"},
		Description: "sign-ins", Etag: "1",
	}
	got := s.get(t, "login")
	got.CreateTime, got.UpdateTime = nil, nil
	if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
		t.Fatalf("created (-want +got):\n%s", d)
	}

	// The update mask is exactly the flags given: the rest stays.
	out := s.cli(t, "", "update", "login", "--fixed-rate", "0.3", "--attr", "", "-o", "yaml").mustOK(t).stdout
	want.FixedRate, want.Attributes, want.Etag = 0.3, nil, "2"
	got = s.get(t, "login")
	got.CreateTime, got.UpdateTime = nil, nil
	if d := cmp.Diff(want, got, protocmp.Transform()); d != "" {
		t.Errorf("after update (-want +got):\n%s", d)
	}
	if !strings.Contains(out, "fixed_rate: 0.3\n") || strings.Contains(out, "attributes") {
		t.Errorf("update -o yaml printed\n%s", out)
	}
	// Zero is a value like any other when its flag is given.
	s.cli(t, "", "update", "login", "--reservoir", "0", "--etag", "2").mustOK(t)
	if got := s.get(t, "login"); got.GetReservoirSize() != 0 || got.GetFixedRate() != 0.3 {
		t.Errorf("after --reservoir 0: %v", got)
	}

	res := s.cli(t, "", "delete", "login", "--etag", "3").mustOK(t)
	if res.stdout != "deleted rule \"login\"\n" {
		t.Errorf("delete printed %q", res.stdout)
	}
	if names := ruleNames(s.list(t).GetRules()); len(names) != 1 || names[0] != "Default" {
		t.Errorf("after delete: %v", names)
	}
}

// Tags and the boost are set, replaced and removed by their flags, each in
// the update mask only when given.
func TestTagAndBoostFlags(t *testing.T) {
	s := startCLIServer(t, nil)
	s.cli(t, "", "create", "--name", "pay", "--priority", "5", "--tag", "Stage=prod", "--tag", "Owner=",
		"--boost-max-rate", "0.8", "--boost-cooldown", "1h").mustOK(t)
	got := s.get(t, "pay")
	want := &pb.Rule{Tags: map[string]string{"Stage": "prod", "Owner": ""}, SamplingRateBoost: &pb.SamplingRateBoost{MaxRate: 0.8, CooldownWindowMinutes: 60}}
	if d := cmp.Diff(want, &pb.Rule{Tags: got.GetTags(), SamplingRateBoost: got.GetSamplingRateBoost()}, protocmp.Transform()); d != "" {
		t.Fatalf("created rule's tags and boost (-want +got):\n%s", d)
	}
	steps := []struct {
		args []string
		tags map[string]string
		want *pb.SamplingRateBoost
	}{
		{[]string{"--fixed-rate", "0.1"}, map[string]string{"Stage": "prod", "Owner": ""}, want.GetSamplingRateBoost()},
		{[]string{"--tag", "Stage=dev"}, map[string]string{"Stage": "dev"}, want.GetSamplingRateBoost()},
		{[]string{"--boost-max-rate", "0", "--boost-cooldown", "0s"}, map[string]string{"Stage": "dev"}, &pb.SamplingRateBoost{}},
		{[]string{"--no-boost", "--tag", ""}, nil, nil},
	}
	for _, st := range steps {
		s.cli(t, "", append([]string{"update", "pay"}, st.args...)...).mustOK(t)
		got := s.get(t, "pay")
		if d := cmp.Diff(&pb.Rule{Tags: st.tags, SamplingRateBoost: st.want}, &pb.Rule{Tags: got.GetTags(), SamplingRateBoost: got.GetSamplingRateBoost()}, protocmp.Transform()); d != "" {
			t.Errorf("after update %q, tags and boost (-want +got):\n%s", st.args, d)
		}
	}
}

func TestCreateFromFile(t *testing.T) {
	s := startCLIServer(t, nil)
	res := s.cli(t, "", "create", "-f", "testdata/rules.yaml").mustOK(t)
	if names := ruleNames(s.list(t).GetRules()); strings.Join(names, " ") != "health checkout search Default" {
		t.Errorf("after create -f: %v", names)
	}
	if !strings.Contains(res.stdout, "checkout") || !strings.Contains(res.stdout, "search") {
		t.Errorf("create -f printed\n%s", res.stdout)
	}
	// Creating them again stops at the first, which exists.
	res = s.cli(t, "", "create", "-f", "testdata/rules.yaml")
	if res.code != exitConflict || !strings.Contains(res.stderr, "not created: checkout, health, search") || !strings.Contains(res.stderr, "'rules apply -f FILE'") {
		t.Errorf("second create -f: exit %d, %v\n%s", res.code, res.err, res.stderr)
	}
	// A file with the Default rule is refused before anything is sent.
	res = s.cli(t, "", "create", "-f", "testdata/rules_edited.yaml")
	if res.code != exitInvalid || !strings.Contains(res.err.Error(), `rule "Default" (#4): the Default rule always exists`) {
		t.Errorf("create -f with Default: exit %d, %v", res.code, res.err)
	}
}

func TestExitCodes(t *testing.T) {
	s := startCLIServer(t, nil)
	s.cli(t, "", "apply", "-f", "testdata/rules.yaml").mustOK(t)
	// Make checkout's etag 2, so that "1" is stale.
	s.cli(t, "", "update", "checkout", "--description", "edited").mustOK(t)

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := closed.Addr().String()
	closed.Close()

	for _, tc := range []struct {
		name    string
		args    []string
		want    int
		message string // in the error
	}{
		{"get", []string{"get", "checkout"}, exitOK, ""},
		{"get unknown", []string{"get", "nope"}, exitNotFound, `rule "nope": not found`},
		{"update unknown", []string{"update", "nope", "--fixed-rate", "0.1"}, exitNotFound, "not found"},
		{"update stale etag", []string{"update", "checkout", "--fixed-rate", "0.1", "--etag", "1"}, exitConflict, `has etag "2", not "1"`},
		{"delete stale etag", []string{"delete", "checkout", "--etag", "1"}, exitConflict, "revision conflict"},
		{"delete Default", []string{"delete", "Default"}, exitConflict, "Default rule"},
		{"narrow Default", []string{"update", "Default", "--service-name", "shop"}, exitConflict, "cannot change service_name"},
		{"create existing", []string{"create", "--name", "checkout", "--priority", "3", "--fixed-rate", "0.1"}, exitConflict, "already exists"},
		{"create existing, said once", []string{"create", "--name", "checkout", "--priority", "3", "--fixed-rate", "0.1"}, exitConflict, `^create rule "checkout": already exists$`},
		{"create invalid", []string{"create", "--name", "bad", "--priority", "0", "--fixed-rate", "1.5"}, exitInvalid,
			"invalid argument\n  rule.priority: must be between 1 and 9999, got 0\n  rule.fixed_rate: must be between 0 and 1, got 1.5"},
		{"update invalid", []string{"update", "checkout", "--fixed-rate", "-1"}, exitInvalid, "\n  rule.fixed_rate: must be between 0 and 1, got -1"},
		{"bad filter", []string{"list", "--filter", "colour=red"}, exitInvalid, "unknown field"},
		{"server down", []string{"list", "--server", down}, exitUnavailable, "cannot reach the control plane at " + down},
		{"tls to a plaintext server", []string{"list", "--tls"}, exitUnavailable, "the server speaks plaintext: leave out --tls"},
		{"server down apply", []string{"apply", "-f", "testdata/rules.yaml", "--server", down}, exitUnavailable, "cannot reach"},
		{"missing file", []string{"apply", "-f", "testdata/nope.yaml"}, exitInvalid, "nope.yaml"},
		{"unknown command", []string{"frob"}, exitUsage, `unknown command "frob"`},
		{"no command", []string{}, exitUsage, "no command"},
		{"unknown flag", []string{"list", "--bogus"}, exitUsage, ""},
		{"get without name", []string{"get"}, exitUsage, "exactly one rule name"},
		{"update without fields", []string{"update", "checkout"}, exitUsage, "nothing to change"},
		{"bad attr", []string{"create", "--name", "x", "--attr", "novalue"}, exitUsage, ""},
		{"apply without file", []string{"apply"}, exitUsage, "-f FILE is required"},
		{"bad output", []string{"list", "-o", "xml"}, exitUsage, "want table, wide, json or yaml"},
		{"create file and flags", []string{"create", "-f", "testdata/rules.yaml", "--name", "x"}, exitUsage, "not both"},
		{"boost without cooldown", []string{"create", "--name", "x", "--priority", "3", "--boost-max-rate", "0.5"}, exitUsage, "give both, or neither"},
		{"boost cooldown in seconds", []string{"update", "checkout", "--boost-max-rate", "0.5", "--boost-cooldown", "90s"}, exitUsage, "want whole minutes"},
		{"boost and no boost", []string{"update", "checkout", "--no-boost", "--boost-max-rate", "0.5", "--boost-cooldown", "1m"}, exitUsage, "not both"},
		{"boost invalid", []string{"update", "checkout", "--boost-max-rate", "2", "--boost-cooldown", "25h"}, exitInvalid,
			"\n  rule.sampling_rate_boost.max_rate: must be between 0 and 1, got 2\n  rule.sampling_rate_boost.cooldown_window_minutes: must be whole minutes between 0 and 1440, got 1500"},
		{"boost on Default", []string{"update", "Default", "--boost-max-rate", "0.5", "--boost-cooldown", "1m"}, exitConflict, "cannot change sampling_rate_boost"},
		{"reserved tag", []string{"update", "checkout", "--tag", "aws:x=y"}, exitInvalid, "rule.tags.aws:x: the tag key prefix aws: is reserved"},
		{"help", []string{"list", "-h"}, exitOK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// --server goes first, so that one in tc.args wins.
			args := []string{"rules"}
			if len(tc.args) > 0 {
				args = append(append(args, tc.args[0], "--server", s.addr), tc.args[1:]...)
			}
			res := runCLI(t, "", args...)
			if res.code != tc.want {
				t.Fatalf("exit code %d, want %d; err %v\nstderr:\n%s", res.code, tc.want, res.err, res.stderr)
			}
			if exact, ok := strings.CutPrefix(tc.message, "^"); ok {
				if want := strings.TrimSuffix(exact, "$"); res.err == nil || res.err.Error() != want {
					t.Errorf("error %q, want %q", res.err, want)
				}
			} else if tc.message != "" && (res.err == nil || !strings.Contains(res.err.Error(), tc.message)) {
				t.Errorf("error %q does not contain %q", res.err, tc.message)
			}
		})
	}
}

func TestHistory(t *testing.T) {
	s := startCLIServer(t, nil)
	s.cli(t, "", "apply", "-f", "testdata/rules.yaml").mustOK(t)
	s.cli(t, "", "apply", "-f", "testdata/rules_edited.yaml", "--prune").mustOK(t)

	out := s.cli(t, "", "history").mustOK(t).stdout
	golden(t, "history.table.golden", out)

	out = s.cli(t, "", "history", "checkout", "--limit", "1").mustOK(t).stdout
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "update  checkout") {
		t.Errorf("history checkout --limit 1:\n%s", out)
	}
	out = s.cli(t, "", "history", "-o", "yaml", "--limit", "2").mustOK(t).stdout
	if !strings.HasPrefix(out, "events:\n") || strings.Count(out, "rule_name:") != 2 {
		t.Errorf("history -o yaml:\n%s", out)
	}
}

func TestRulesHelp(t *testing.T) {
	res := runCLI(t, "", "rules", "--help").mustOK(t)
	for _, want := range []string{"apply", "history", "CONTROLPLANE_SERVER", "CONTROLPLANE_ENDPOINT", "Exit codes"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("rules --help lacks %q:\n%s", want, res.stdout)
		}
	}
	// A command's help is the output asked for: on stdout, exit 0, in each
	// spelling.
	for _, help := range []string{"-h", "--help", "-help"} {
		res = runCLI(t, "", "rules", "apply", help)
		if res.code != exitOK || !strings.Contains(res.stdout, "--prune") || !strings.Contains(res.stdout, "never pruned") || res.stderr != "" {
			t.Errorf("apply %s: exit %d\nstdout:\n%s\nstderr:\n%s", help, res.code, res.stdout, res.stderr)
		}
	}
	if res := runCLI(t, "", "help", "rules", "get").mustOK(t); !strings.Contains(res.stdout, "rules get NAME") {
		t.Errorf("help rules get:\n%s", res.stdout)
	}
}

// TestFlagsAnywhere: flags go before or after the arguments, with one dash
// or two for a long flag (the syntax of Go's flag package, which the CLI
// took before), and -- ends them.
func TestFlagsAnywhere(t *testing.T) {
	s := startCLIServer(t, nil)
	s.cli(t, "", "apply", "-f", "testdata/rules.yaml").mustOK(t)
	want := s.cli(t, "", "get", "checkout", "-o", "yaml").mustOK(t).stdout
	for _, args := range [][]string{
		{"rules", "get", "-o", "yaml", "checkout", "--server", s.addr},
		{"rules", "--server", s.addr, "get", "checkout", "--output=yaml"},
		{"rules", "get", "checkout", "-o=yaml", "-server", s.addr},
		{"rules", "get", "-server=" + s.addr, "-output", "yaml", "--", "checkout"},
	} {
		if got := runCLI(t, "", args...).mustOK(t).stdout; got != want {
			t.Errorf("%q printed\n%s\nwant\n%s", args, got, want)
		}
	}
	// After --, a name that looks like a flag is a name.
	res := runCLI(t, "", "rules", "get", "--server", s.addr, "--", "-o")
	if res.code != exitNotFound || !strings.Contains(res.err.Error(), `rule "-o"`) {
		t.Errorf("get -- -o: exit %d, %v", res.code, res.err)
	}
}

// TestCompletion: the completion command prints a shell's script, and a
// rule name completes from the server's rules.
func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		res := runCLI(t, "", "completion", shell).mustOK(t)
		if !strings.Contains(res.stdout, "controlplane") {
			t.Errorf("completion %s printed\n%s", shell, res.stdout)
		}
	}
	s := startCLIServer(t, nil)
	s.cli(t, "", "apply", "-f", "testdata/rules.yaml").mustOK(t)
	res := runCLI(t, "", "__complete", "rules", "get", "--server", s.addr, "").mustOK(t)
	if got := strings.Fields(strings.Split(res.stdout, ":")[0]); !slices.Equal(got, []string{"health", "checkout", "search", "Default"}) {
		t.Errorf("rule names completed: %q", res.stdout)
	}
	res = runCLI(t, "", "__complete", "rules", "list", "-o", "").mustOK(t)
	if got := strings.Fields(strings.Split(res.stdout, ":")[0]); !slices.Equal(got, []string{"table", "wide", "json", "yaml"}) {
		t.Errorf("-o completed: %q", res.stdout)
	}
}

// TestServerFromEnvironment: --server defaults to CONTROLPLANE_SERVER, else
// CONTROLPLANE_ENDPOINT (the SDK's variable), and a flag beats both.
func TestServerFromEnvironment(t *testing.T) {
	s := startCLIServer(t, nil)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := closed.Addr().String()
	closed.Close()
	for _, tc := range []struct {
		name           string
		server, endpnt string
		args           []string
		want           int
	}{
		{"CONTROLPLANE_SERVER", s.addr, "", nil, exitOK},
		{"CONTROLPLANE_ENDPOINT", "", s.addr, nil, exitOK},
		{"CONTROLPLANE_ENDPOINT's first of several", "", s.addr + "," + down, nil, exitOK},
		{"CONTROLPLANE_SERVER wins", s.addr, down, nil, exitOK},
		{"the flag wins", down, down, []string{"--server", s.addr}, exitOK},
		{"really from there", down, "", nil, exitUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CONTROLPLANE_SERVER", tc.server)
			t.Setenv("CONTROLPLANE_ENDPOINT", tc.endpnt)
			res := runCLI(t, "", append([]string{"rules", "list", "--timeout", "5s"}, tc.args...)...)
			if res.code != tc.want {
				t.Errorf("exit %d, want %d: %v", res.code, tc.want, res.err)
			}
		})
	}
}

// downStore is a store that is unreachable: every read fails as a Redis
// outage does.
type downStore struct{ *memstore.Store }

func (downStore) Snapshot(context.Context) (store.Snapshot, error) {
	return store.Snapshot{}, fmt.Errorf("redis: %w", store.ErrUnavailable)
}

func (downStore) Rule(context.Context, string) (rules.Rule, error) {
	return rules.Rule{}, fmt.Errorf("redis: %w", store.ErrUnavailable)
}

// TestStoreDownIsNotServerDown: UNAVAILABLE from a server that answered says
// the store is down, not that the server cannot be reached; the exit code
// is the same.
func TestStoreDownIsNotServerDown(t *testing.T) {
	s := startCLIServer(t, downStore{newCLIStore(t)})
	for _, args := range [][]string{{"list"}, {"get", "checkout"}} {
		res := s.cli(t, "", args...)
		msg := fmt.Sprint(res.err)
		if res.code != exitUnavailable || strings.Contains(msg, "cannot reach") ||
			!strings.Contains(msg, "the control plane at "+s.addr+" answered, but its store is unavailable") {
			t.Errorf("%q: exit %d, %q; want %d saying the store is down", args, res.code, msg, exitUnavailable)
		}
	}
}
