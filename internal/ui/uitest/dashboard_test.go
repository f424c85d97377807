package uitest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// interval is the control plane's report interval in the test: the budget
// controller decides this often too.
const interval = 2 * time.Second

// Each client reports every interval, claiming counts over a slightly
// shorter span, so that its rate is exactly requests/claimed whatever the
// scheduling delays (the server takes the shorter of the claimed span and
// the time since the last report).
const claimed = 1900 * time.Millisecond

// chromium finds the browser: Debian's chromium, which scripts/install-deps
// installs. Without one the test is skipped, except in CI (CI=true), where
// that is a failure.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium on PATH: scripts/install-deps installs it")
	}
	t.Skip("no chromium on PATH (scripts/install-deps installs it)")
	return ""
}

// outDir is where screenshots go: $UITEST_OUT, or out/ beside the test.
func outDir(t *testing.T) string {
	dir := os.Getenv("UITEST_OUT")
	if dir == "" {
		dir = "out"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// server is the real binary, serving on loopback ports the kernel chose.
type server struct {
	grpcAddr, httpAddr string
}

// startServer builds controlplane and runs `controlplane serve` with the
// embedded store until the test ends.
func startServer(t *testing.T) *server {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "controlplane")
	// Built in the main module (the repository root), with its go.sum.
	build := exec.Command("go", "build", "-o", bin, "./cmd/controlplane")
	// This module runs with GOWORK=off; the server builds in the root's workspace.
	build.Env = append(os.Environ(), "GOWORK=")
	build.Dir = filepath.Join("..", "..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--jaeger-addr=", "--xray-addr=",
		"--report-interval", interval.String(), "--log-format", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := make(chan map[string]any, 16)
	var drained sync.WaitGroup
	drained.Add(1)
	go func() {
		defer drained.Done()
		defer close(logs)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil {
				select {
				case logs <- rec:
				default: // only the first lines matter; never block the server
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		drained.Wait()
	})
	deadline := time.After(60 * time.Second)
	for {
		select {
		case rec, ok := <-logs:
			if !ok {
				t.Fatal("controlplane serve exited before serving")
			}
			if rec["msg"] == "control plane serving" {
				return &server{grpcAddr: rec["grpc_addr"].(string), httpAddr: rec["http_addr"].(string)}
			}
		case <-deadline:
			t.Fatal("controlplane serve did not say it was serving within 60 s")
		}
	}
}

// client is one SDK instance's reports for one rule, sent as an SDK sends
// them: every interval, with the receipt of its last target, sampling at the
// fixed rate the last target gave (budgets applied).
type client struct {
	id, service, rule  string
	requests           int64 // per report
	fixedRate, receipt string
	rate               float64
	// applied is the rules version the client says it applies; 0: it
	// does not say, as an SDK that predates it.
	applied atomic.Int64
}

func (c *client) report(ctx context.Context, sc pb.SamplingServiceClient) error {
	sampled := int64(math.Round(float64(c.requests) * c.rate))
	resp, err := sc.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{
		ClientId: c.id, ServiceName: c.service,
		Statistics:          []*pb.SamplingStatistics{{RuleName: c.rule, RequestCount: c.requests, SampledCount: sampled, Interval: durationpb.New(claimed), Receipt: c.receipt}},
		AppliedRulesVersion: c.applied.Load(),
	})
	if err != nil {
		return err
	}
	if len(resp.GetTargets()) != 1 || len(resp.GetRejected()) != 0 {
		return fmt.Errorf("client %s: answer %v", c.id, resp)
	}
	c.receipt = resp.GetTargets()[0].GetReceipt()
	c.rate = resp.GetTargets()[0].GetFixedRate()
	return nil
}

// TestDashboard drives the dashboard as a user would: rules, a budget and
// live traffic made through the API, then the page in a real Chromium —
// the rules in match order with their figures, the budget's burn-down chart
// with its spend, cap and enforcement, the alerts, and an explain answer.
func TestDashboard(t *testing.T) {
	browser := chromium(t)
	out := outDir(t)
	srv := startServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	conn, err := grpc.NewClient(srv.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rules := pb.NewRuleServiceClient(conn)
	for _, r := range []*pb.Rule{
		{Name: "checkout", Priority: 10, ServiceName: "checkout", HttpMethod: "POST", UrlPath: "/cart/*", FixedRate: 0.1, ReservoirSize: 10, Labels: map[string]string{"team": "payments"}},
		{Name: "search", Priority: 20, ServiceName: "search*", FixedRate: 0.5, Labels: map[string]string{"team": "search"}},
	} {
		if _, err := rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: r}); err != nil {
			t.Fatal(err)
		}
	}
	// A budget of 1.00 a month at 1,000.00 a million traces: the search
	// rule's 50 traces a second spend it within seconds, so the controller
	// starts enforcing at once.
	if _, err := pb.NewBudgetServiceClient(conn).CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{
		Name: "search-budget", MonthlyAmountMicros: 1_000_000, PricePerMillionMicros: 1_000_000_000,
		Scope: &pb.BudgetScope{RuleLabels: map[string]string{"team": "search"}},
	}}); err != nil {
		t.Fatal(err)
	}

	// Three instances of checkout at 100 requests a second each, sampling
	// 10 %; one of search at 100 a second, sampling its fixed rate. All run
	// the current rules but checkout-3, an SDK that does not say.
	list, err := rules.ListRules(ctx, &pb.ListRulesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	v := list.GetRulesVersion()
	per := int64(100 * claimed / time.Second)
	clients := []*client{
		{id: "checkout-1", service: "checkout", rule: "checkout", requests: per, rate: 0.1},
		{id: "checkout-2", service: "checkout", rule: "checkout", requests: per, rate: 0.1},
		{id: "checkout-3", service: "checkout", rule: "checkout", requests: per, rate: 0.1},
		{id: "search-1", service: "search-api", rule: "search", requests: per, rate: 0.5},
	}
	for _, c := range []*client{clients[0], clients[1], clients[3]} {
		c.applied.Store(v)
	}
	sc := pb.NewSamplingServiceClient(conn)
	// The rules reach the server's catalog within its poll; until then a
	// report of them is refused.
	for _, c := range clients {
		for {
			err := c.report(ctx, sc)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("first report: %v", err)
			}
			time.Sleep(100 * time.Millisecond) // polling the catalog's reload
		}
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var load sync.WaitGroup
	load.Add(1)
	go func() {
		defer load.Done()
		for loadCtx.Err() == nil {
			select {
			case <-loadCtx.Done():
				return
			case <-time.After(interval):
			}
			for _, c := range clients {
				if err := c.report(loadCtx, sc); err != nil && loadCtx.Err() == nil {
					t.Errorf("report: %v", err)
					return
				}
			}
		}
	}()
	defer func() {
		stopLoad()
		load.Wait()
	}()

	// The browser, fresh, with nothing of its own going to the network.
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(browser),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1800),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
	}
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()

	url := "http://" + srv.httpAddr + "/ui"
	if err := chromedp.Do(bctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS("#rules tbody tr"))); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}

	// The rules in match order, each with its fleet's figures, once the
	// page has refreshed with every instance's reports.
	type row struct {
		Position, Name, Requests, Sampled, Instances, Current, Reservoir, Quota, Fixed, Budgets string
	}
	want := []row{
		{"1", "checkout", "300", "30", "3", "2 of 3", "10", "10", "10 %", "none"},
		{"2", "search", "100", "", "1", "all", "0", "0", "50 %", "search-budget"},
		{"3", "Default", "0", "0", "0", "-", "1", "0", "5 %", "none"},
	}
	var got []row
	poll(t, bctx, "the rules table shows every instance's traffic", func() (bool, string) {
		var err error
		if got, err = chromedp.Run(bctx, chromedp.Evaluate[[]row](`[...document.querySelectorAll("#rules tbody tr")].map(tr => {
			const f = (name) => { const td = tr.querySelector('[data-field="' + name + '"]'); return td ? td.textContent : ""; };
			return {Position: f("position"), Name: f("name"), Requests: f("request_rate"), Sampled: f("sampled_rate"), Instances: f("instances"),
				Current: f("instances_current"), Reservoir: f("reservoir"), Quota: f("quota_granted"), Fixed: f("fixed_rate"), Budgets: tr.lastElementChild.textContent};
		})`)); err != nil {
			return false, err.Error()
		}
		if len(got) != len(want) {
			return false, fmt.Sprintf("%d rows: %+v", len(got), got)
		}
		for i := range want {
			w, g := want[i], got[i]
			w.Sampled, w.Budgets = g.Sampled, g.Budgets // checked below
			if w != g {
				return false, fmt.Sprintf("row %d is %+v, want %+v", i, g, w)
			}
		}
		return got[0].Sampled == want[0].Sampled && got[2].Sampled == want[2].Sampled && got[0].Budgets == want[0].Budgets, fmt.Sprintf("%+v", got)
	})
	if !strings.HasPrefix(got[1].Budgets, "search-budget") {
		t.Errorf("the search rule's budgets cell says %q, want search-budget first", got[1].Budgets)
	}
	current := func() (checkout, search, title string) {
		t.Helper()
		cells, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#rules tbody [data-field="instances_current"]')].map(td => td.textContent + "|" + (td.title || ""))`))
		if err != nil || len(cells) < 2 {
			t.Fatalf("the running-it cells: %v, %v", cells, err)
		}
		c, title, _ := strings.Cut(cells[0], "|")
		sr, _, _ := strings.Cut(cells[1], "|")
		return c, sr, title
	}
	if _, _, title := current(); title != fmt.Sprintf("1 instance behind rules version %d, which made the rule what it is", v-1) {
		t.Errorf("checkout's running-it cell explains %q", title)
	}

	// An edit of checkout: none of its instances runs it as it is until they
	// say they applied the new version; search's instance still does.
	if _, err := rules.UpdateRule(ctx, &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "checkout", Description: "edited"},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"description"}}}); err != nil {
		t.Fatal(err)
	}
	poll(t, bctx, "checkout's instances behind its edit", func() (bool, string) {
		c, sr, _ := current()
		return c == "none" && sr == "all", c + " " + sr
	})
	for _, c := range []*client{clients[0], clients[1]} {
		c.applied.Store(v + 1)
	}
	poll(t, bctx, "two of checkout's instances applied its edit", func() (bool, string) {
		c, sr, _ := current()
		return c == "2 of 3" && sr == "all", c + " " + sr
	})

	// The budget's card and chart: spend above zero, the 1.00 cap, and
	// enforcement started (its alert is listed too).
	type chartView struct {
		Spent, Cap, Forecast string
		SpentText, CapText   string
		Enforcement, Factors string
		CapLabel, Alerts     string
	}
	var chart chartView
	poll(t, bctx, "the budget's chart shows its spend and enforcement", func() (bool, string) {
		var err error
		if chart, err = chromedp.Run(bctx, chromedp.Evaluate[chartView](`(() => {
			const card = document.querySelector('[data-budget="search-budget"].budget');
			if (!card) return {Spent: "", Cap: "", Forecast: "", SpentText: "", CapText: "", Enforcement: "", Factors: "", CapLabel: "", Alerts: ""};
			const svg = card.querySelector("svg.burn");
			const dd = (name) => card.querySelector('[data-field="' + name + '"]').textContent;
			return {Spent: svg.dataset.spentMicros, Cap: svg.dataset.capMicros, Forecast: svg.dataset.forecastMicros,
				SpentText: dd("spent"), CapText: dd("cap"), Enforcement: dd("enforcement"), Factors: dd("factors"),
				CapLabel: svg.querySelector(".cap-label").textContent,
				Alerts: [...document.querySelectorAll("#alerts tbody tr")].map(tr => tr.textContent).join("\n")};
		})()`)); err != nil {
			return false, err.Error()
		}
		spent, _ := strconv.ParseFloat(chart.Spent, 64)
		return spent > 0 && chart.Enforcement != "no" && chart.Enforcement != "" && strings.Contains(chart.Alerts, "enforcement started"), fmt.Sprintf("%+v", chart)
	})
	if chart.Cap != "1000000" || chart.CapText != "$1.00" || chart.CapLabel != "cap $1.00" {
		t.Errorf("the chart's cap: %q micros, %q, label %q; want 1000000, $1.00, cap $1.00", chart.Cap, chart.CapText, chart.CapLabel)
	}
	if !strings.HasPrefix(chart.SpentText, "$") || !strings.HasPrefix(chart.Factors, "fixed ×") {
		t.Errorf("the card says spent %q, factors %q; want an amount and the factors in force", chart.SpentText, chart.Factors)
	}
	screenshot(t, bctx, filepath.Join(out, "dashboard.png"))

	// The explain form: a search request with an attribute skips checkout
	// (its service) and matches search, second in order.
	type answerView struct {
		Matched, Summary, Skipped string
	}
	if err := chromedp.Do(bctx,
		chromedp.SetValue(chromedp.CSS("#ex-service"), "search-api"),
		chromedp.SetValue(chromedp.CSS("#ex-method"), "GET"),
		chromedp.SetValue(chromedp.CSS("#ex-path"), "/search"),
		chromedp.SetValue(chromedp.CSS("#ex-attrs"), "tier=gold"),
		chromedp.Click(chromedp.CSS("#ex-submit")),
		chromedp.WaitVisible(chromedp.CSS(`#explain-result [data-field="matched"]`)),
	); err != nil {
		t.Fatal(err)
	}
	answer, err := chromedp.Run(bctx, chromedp.Evaluate[answerView](`({Matched: document.querySelector('#explain-result [data-field="matched"]').textContent,
			Summary: document.querySelector('#explain-result [data-field="summary"]').textContent,
			Skipped: [...document.querySelectorAll("#explain-skipped tbody tr")].map(tr => [...tr.children].map(td => td.textContent).join("|")).join("\n")})`))
	if err != nil {
		t.Fatal(err)
	}
	if answer.Matched != "Matches search (position 2)" || answer.Skipped != "1|checkout|service_name|checkout|search-api" || !strings.Contains(answer.Summary, `Rule "search" matches`) {
		t.Errorf("explain answer: %+v", answer)
	}
	screenshot(t, bctx, filepath.Join(out, "dashboard-explain.png"))

	// Bad input gets the server's reason, next to the form.
	if _, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`document.querySelector("#ex-service").value = "", true`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bctx,
		chromedp.Click(chromedp.CSS("#ex-submit")),
		chromedp.WaitVisible(chromedp.CSS("#explain-error")),
	); err != nil {
		t.Fatal(err)
	}
	problem, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS("#explain-error")))
	if err != nil {
		t.Fatal(err)
	}
	if problem != "service_name: is required" {
		t.Errorf("explain without a service says %q", problem)
	}
}

// poll evaluates check until it holds, for up to a minute: the page
// refreshes every 5 s and the controller decides every interval.
func poll(t *testing.T, ctx context.Context, what string, check func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last string
	for {
		ok, state := check()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("%s: not within a minute; last seen: %s", what, last)
		}
		time.Sleep(250 * time.Millisecond) // polling the page, not synchronising
	}
}

func screenshot(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
