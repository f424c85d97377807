package compat

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/internal/xray/xraytest"
)

// nodeSDK is the X-Ray SDK for Node.js (aws-xray-sdk-core, js/) running
// js/check.js, which answers one JSON line per command.
type nodeSDK struct {
	t      *testing.T
	in     io.WriteCloser
	out    *bufio.Scanner
	stderr *bytes.Buffer
}

func (n *nodeSDK) do(cmd map[string]any, answer any) {
	n.t.Helper()
	line, err := json.Marshal(cmd)
	if err != nil {
		n.t.Fatal(err)
	}
	if _, err := fmt.Fprintf(n.in, "%s\n", line); err != nil {
		n.t.Fatal(err)
	}
	if !n.out.Scan() {
		n.t.Fatalf("node said nothing to %s (%v); stderr:\n%s", line, n.out.Err(), n.stderr)
	}
	if err := json.Unmarshal(n.out.Bytes(), answer); err != nil {
		n.t.Fatalf("node answered %q to %s: %v", n.out.Text(), line, err)
	}
}

// nodeState is what the SDK holds for one rule (js/check.js's "state").
type nodeState struct {
	Rules       []string
	LastUpdated float64
	Quota       *float64
	TTL         *float64
	Rate        *float64
}

// nodeReport is one /SamplingTargets call the SDK made and its answer, as
// the recording proxy saw them.
type nodeReport struct {
	In struct {
		SamplingStatisticsDocuments []struct {
			RuleName, ClientID                      string
			RequestCount, SampledCount, BorrowCount int64
		}
	}
	Out struct {
		SamplingTargetDocuments []struct {
			RuleName          string
			ReservoirQuota    *int64
			ReservoirQuotaTTL *float64
		}
	}
}

// recordingProxy forwards the X-Ray API at target and sends each
// /SamplingTargets exchange to reports, so that the test sees what the SDK
// reported and was told whatever core answers.
func recordingProxy(t *testing.T, target string, reports chan<- nodeReport) *httptest.Server {
	t.Helper()
	u, err := url.Parse("http://" + target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path != "/SamplingTargets" {
			return nil
		}
		out, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		resp.Body = io.NopCloser(bytes.NewReader(out))
		var r nodeReport
		in, _ := resp.Request.GetBody()
		if err := json.NewDecoder(in).Decode(&r.In); err != nil {
			return err
		}
		if err := json.Unmarshal(out, &r.Out); err != nil {
			return err
		}
		select {
		case reports <- r:
		default:
		}
		return nil
	}
	// The request body is read twice: by the proxy and, after, here.
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		rp.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// xrayEdit POSTs an X-Ray rule call with the token (none if empty).
func xrayEdit(t *testing.T, addr, path, token, body string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: %s %s", path, resp.Status, b)
	}
}

// TestXRaySDKForNode is the motivating case of issue 13: the AWS X-Ray SDK
// for Node.js, unmodified, pointed at the X-Ray API with
// AWS_XRAY_DAEMON_ADDRESS. It must load the rules and decide by them, report
// its counts with a 24-hex ClientID, take the quota it is given, and follow a
// live edit of a rule's fixed rate from its next targets. It runs against a
// real serve and against the in-memory core of package xraytest, through a
// proxy that records what the SDK reports and is told.
//
// It also pins down two quirks of this SDK (aws-xray-sdk-core 3.12.0,
// middleware/sampling/service_connector.js), which behave the same against
// AWS's own X-Ray service: it reads ReservoirQuotaTTL and
// LastRuleModification, epoch seconds on the wire, with JavaScript's
// new Date(n), which takes milliseconds, and divides by 1,000. So its quota
// expires, to its mind, in January 1970: it keeps the quota but never takes
// from it, borrowing one trace a second instead (as long as the rule has a
// reservoir) and sampling the rest at the fixed rate, which it does take
// from every target; and LastRuleModification never looks newer than its
// rules, so rule edits other than the fixed rate reach it with its 5-minute
// rules poll only. If an upgrade of the SDK fixes this, the test says so.
// (Like the X-Ray SDK for Go, it counts the traces it borrowed in BorrowCount
// and leaves them out of SampledCount.)
//
// The SDK polls targets every 10 s on the wall clock and cannot be told
// otherwise, so this test takes about 35 s (the two runs in parallel); it
// waits on reports, never on a time.
func TestXRaySDKForNode(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for three of the SDK's 10-second target polls")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("Node.js is not installed; the Node.js check needs it")
	}
	if _, err := os.Stat(filepath.Join("js", "node_modules", "aws-xray-sdk-core")); err != nil {
		t.Fatalf("the JS packages are missing: run scripts/install-deps (%v)", err)
	}
	t.Run("serve", func(t *testing.T) {
		t.Parallel()
		s := startServe(t)
		nodeAgainst(t, node, s.xrayAddr, adminToken)
	})
	t.Run("xraytest", func(t *testing.T) {
		t.Parallel()
		core, err := xraytest.New(time.Now)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { core.Close() })
		h, err := xray.NewHandler(core, xray.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		nodeAgainst(t, node, strings.TrimPrefix(srv.URL, "http://"), "")
	})
}

// nodeAgainst runs the Node.js SDK against the X-Ray API at addr, making
// and editing rules with token.
func nodeAgainst(t *testing.T, node, addr, token string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, r := range []string{
		`{"RuleName": "node-never", "Priority": 1, "FixedRate": 0, "ReservoirSize": 0, "ServiceName": "node-never"}`,
		`{"RuleName": "node-quota", "Priority": 2, "FixedRate": 0, "ReservoirSize": 5, "ServiceName": "node-quota"}`,
		`{"RuleName": "node-edit", "Priority": 3, "FixedRate": 0, "ReservoirSize": 0, "ServiceName": "node-edit"}`,
	} {
		rule := strings.TrimSuffix(r, "}") + `, "ResourceARN": "*", "ServiceType": "*", "Host": "*", "HTTPMethod": "*", "URLPath": "*", "Version": 1}`
		xrayEdit(t, addr, "/CreateSamplingRule", token, `{"SamplingRule": `+rule+`}`)
	}
	reports := make(chan nodeReport, 100)
	proxy := recordingProxy(t, addr, reports)

	cmd := exec.CommandContext(ctx, node, "check.js")
	cmd.Dir = "js"
	cmd.Env = append(os.Environ(), "AWS_XRAY_DAEMON_ADDRESS="+strings.TrimPrefix(proxy.URL, "http://"), "AWS_XRAY_CONTEXT_MISSING=IGNORE_ERROR")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sdk := &nodeSDK{t: t, in: stdin, out: bufio.NewScanner(stdout), stderr: &stderr}
	defer func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("node: %v; stderr:\n%s", err, strings.TrimSpace(stderr.String()))
		}
	}()
	state := func(rule string) nodeState {
		var s nodeState
		sdk.do(map[string]any{"op": "state", "rule": rule}, &s)
		return s
	}

	// The first decision starts the SDK's pollers; its rules arrive at
	// once. Until then it decides by its local rules.
	var d struct{ Decisions []any }
	sdk.do(map[string]any{"op": "decide", "service": "node-never", "n": 1}, &d)
	for s := state("node-never"); !slices.Contains(s.Rules, "node-edit"); s = state("node-never") {
		select {
		case <-ctx.Done():
			t.Fatalf("the SDK never loaded the rules it was served: it holds %v", s.Rules)
		case <-time.After(20 * time.Millisecond):
		}
	}
	sdk.do(map[string]any{"op": "decide", "service": "node-never", "n": 50}, &d)
	for _, v := range d.Decisions {
		if v != false {
			t.Fatalf("rule node-never (fixed rate 0, no reservoir) decided %v", d.Decisions)
		}
	}

	// Live traffic, 20 requests a second for each rule, reported every
	// 10 s.
	var ok struct{ OK bool }
	sdk.do(map[string]any{"op": "traffic", "services": []string{"node-quota", "node-edit"}, "everyMs": 50}, &ok)
	type counts struct{ requests, sampled, borrowed int64 }
	// next waits for a report with node-quota's requests, and returns the
	// counts by rule and the quota and TTL the answer gave node-quota.
	next := func() (map[string]counts, *int64, *float64) {
		t.Helper()
		for {
			select {
			case <-ctx.Done():
				t.Fatal("no report from the SDK in time")
			case r := <-reports:
				byRule := map[string]counts{}
				for _, s := range r.In.SamplingStatisticsDocuments {
					if len(s.ClientID) != 24 || strings.Trim(s.ClientID, "0123456789abcdef") != "" {
						t.Errorf("ClientID %q, want 24 hex digits", s.ClientID)
					}
					byRule[s.RuleName] = counts{s.RequestCount, s.SampledCount, s.BorrowCount}
				}
				if byRule["node-quota"].requests == 0 {
					continue
				}
				for _, d := range r.Out.SamplingTargetDocuments {
					if d.RuleName == "node-quota" {
						return byRule, d.ReservoirQuota, d.ReservoirQuotaTTL
					}
				}
				t.Fatalf("no target for node-quota in the answer to %+v", byRule)
			}
		}
	}

	// Report 1: the quota rule has borrowed (no quota yet). Its answer is
	// the SDK's quota, at most the reservoir, this being the only client.
	first, quota, ttl := next()
	t.Logf("report 1: %+v", first)
	if q := first["node-quota"]; q.borrowed == 0 || q.sampled != 0 {
		t.Errorf("report 1 of node-quota: %+v; want borrowed traces only (no quota yet, fixed rate 0), counted apart from sampled ones", q)
	}
	if quota == nil || *quota < 1 || *quota > 5 || ttl == nil {
		t.Fatalf("node-quota's target has no quota of 1 to 5 traces a second with a TTL")
	}
	t.Logf("node-quota's quota: %d a second until %.3f", *quota, *ttl)
	var s nodeState
	for s = state("node-quota"); s.Quota == nil; s = state("node-quota") {
		select {
		case <-ctx.Done():
			t.Fatal("the SDK never took its quota")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if *s.Quota != float64(*quota) {
		t.Errorf("the SDK holds quota %v for node-quota, was served %d", *s.Quota, *quota)
	}
	// The quirk: ReservoirQuotaTTL, epoch seconds, read as milliseconds
	// (whole ones: Date drops the fraction).
	if s.TTL == nil || math.Abs(*s.TTL*1000-*ttl) >= 1 {
		t.Errorf("the SDK holds TTL %v for a quota that expires at %.3f: it no longer reads it as %.0f/1000 (update this test and the README)", s.TTL, *ttl, *ttl)
	}
	lastUpdated := s.LastUpdated

	// A live edit of node-edit's fixed rate, through the X-Ray API as the
	// AWS CLI makes it.
	xrayEdit(t, addr, "/UpdateSamplingRule", token, `{"SamplingRuleUpdate": {"RuleName": "node-edit", "FixedRate": 1}}`)
	// Report 2's answer carries the new fixed rate; report 3 was decided
	// by it: every request sampled. Meanwhile the quota rule borrows one a
	// second, having taken its quota as expired.
	for i := 2; ; i++ {
		r, _, _ := next()
		t.Logf("report %d: %+v", i, r)
		if q := r["node-quota"]; q.borrowed == 0 || q.sampled != 0 {
			t.Errorf("report %d of node-quota: %+v; want borrowed traces only (the SDK takes its quota as expired)", i, q)
		}
		// Requests decided while the answer with the new rate was on its
		// way (one every 50 ms) may be unsampled.
		if e := r["node-edit"]; e.requests > 0 && e.sampled >= e.requests-2 {
			break
		}
		if i == 4 {
			t.Fatalf("report %d: the SDK still does not sample node-edit at its new fixed rate 1", i)
		}
	}
	if s := state("node-edit"); s.Rate == nil || *s.Rate != 1 {
		t.Errorf("the SDK holds fixed rate %v for node-edit, want 1", s.Rate)
	}
	// LastRuleModification (the edit's time) is read as milliseconds too:
	// no out-of-band rules fetch followed the edit.
	if s := state("node-edit"); s.LastUpdated != lastUpdated {
		t.Errorf("the SDK fetched the rules again after the edit (%v, was %v): it now reads LastRuleModification right (update this test and the README)", s.LastUpdated, lastUpdated)
	}
}
