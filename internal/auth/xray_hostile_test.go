package auth_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/internal/xray/xraytest"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// TestSigV4Hostile: forged, replayed and mis-scoped SigV4 requests against
// the guard in front of the X-Ray API (docs/RELIABILITY.md, "The X-Ray port
// under hostile input"). A replay inside the skew window is accepted, as
// AWS accepts it: the signature binds the body, path and time, not a nonce.
func TestSigV4Hostile(t *testing.T) {
	e := newHTTPEnv(t, auth.Options{})
	sdk := e.issue(t, auth.TokenSpec{Name: "daemon", Role: auth.RoleSDK, AWS: true})
	editor := e.issue(t, auth.TokenSpec{Name: "ci", Role: auth.RoleEditor, AWS: true})
	now := e.clk.Now()
	sign := func(path, service, payloadHash, body string, when time.Time, mutate func(*http.Request)) *http.Request {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if payloadHash == "" {
			sum := sha256.Sum256([]byte(body))
			payloadHash = hex.EncodeToString(sum[:])
		} else {
			req.Header.Set("X-Amz-Content-Sha256", payloadHash)
		}
		creds := aws.Credentials{AccessKeyID: editor.AccessKeyID, SecretAccessKey: editor.Secret}
		if err := v4.NewSigner().SignHTTP(t.Context(), creds, req, payloadHash, service, "us-east-1", when); err != nil {
			t.Fatal(err)
		}
		if mutate != nil {
			mutate(req)
		}
		return req
	}
	presigned := func() *http.Request {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, e.srv.URL+"/GetSamplingRules", strings.NewReader("{}"))
		sum := sha256.Sum256([]byte("{}"))
		u, _, err := v4.NewSigner().PresignHTTP(t.Context(), aws.Credentials{AccessKeyID: sdk.AccessKeyID, SecretAccessKey: sdk.Secret},
			req, hex.EncodeToString(sum[:]), "xray", "us-east-1", now)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, u, strings.NewReader("{}"))
		return p
	}
	update := `{"SamplingRuleUpdate":{"RuleName":"Default","FixedRate":0.05}}`
	before, err := e.core.Store.RulesVersion(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		req           *http.Request
		code          int
		errType, text string
	}{
		{"signed for another service", sign("/GetSamplingRules", "execute-api", "", "{}", now, nil), 403, "InvalidSignatureException", `service "xray"`},
		{"signed for the query string", presigned(), 403, "MissingAuthenticationTokenException", "credentials"},
		{"unsigned payload", sign("/UpdateSamplingRule", "xray", "UNSIGNED-PAYLOAD", update, now, nil), 403, "InvalidSignatureException", "does not match"},
		{"clock 14 minutes behind", sign("/GetSamplingRules", "xray", "", "{}", now.Add(-14*time.Minute), nil), 200, "", ""},
		{"clock 16 minutes ahead", sign("/GetSamplingRules", "xray", "", "{}", now.Add(16*time.Minute), nil), 403, "InvalidSignatureException", "expired"},
		{"another path", sign("/GetSamplingRules", "xray", "", update, now, func(r *http.Request) { r.URL.Path = "/UpdateSamplingRule" }), 403, "InvalidSignatureException", "does not match"},
		{"another host", sign("/GetSamplingRules", "xray", "", "{}", now, func(r *http.Request) { r.Host = "other.example" }), 403, "InvalidSignatureException", "does not match"},
		{"X-Amz-Date moved", sign("/GetSamplingRules", "xray", "", "{}", now, func(r *http.Request) {
			r.Header.Set("X-Amz-Date", now.Add(time.Second).Format("20060102T150405Z"))
		}), 403, "InvalidSignatureException", "does not match"},
		{"x-amz-date not signed", sign("/GetSamplingRules", "xray", "", "{}", now, func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), ";x-amz-date", "", 1))
		}), 403, "InvalidSignatureException", "x-amz-date"},
		{"two Authorization headers", sign("/GetSamplingRules", "xray", "", "{}", now, func(r *http.Request) {
			r.Header.Add("Authorization", "Bearer x")
		}), 403, "UnrecognizedClientException", "one Authorization"},
		{"signature of another key", sign("/GetSamplingRules", "xray", "", "{}", now, func(r *http.Request) {
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), editor.AccessKeyID, sdk.AccessKeyID, 1))
		}), 403, "InvalidSignatureException", "does not match"},
		{"a body over the limit", sign("/GetSamplingRules", "xray", "", `{"x":"`+strings.Repeat("a", 300<<10)+`"}`, now, nil), 403, "AccessDeniedException", "over"},
	} {
		code, typ, msg := xrayAnswer(t, e.srv.Client(), tc.req)
		if code != tc.code || typ != tc.errType || !strings.Contains(msg, tc.text) {
			t.Errorf("%s: %d %s %q, want %d %s with %q", tc.name, code, typ, msg, tc.code, tc.errType, tc.text)
		}
	}
	if after, err := e.core.Store.RulesVersion(t.Context()); err != nil || after != before {
		t.Errorf("rules version %d (%v) after refused edits, want %d (nothing changed)", after, err, before)
	}

	// A replay within the window applies the same edit again (X-Ray's
	// update is a set, so the rule is as the signer asked); after the
	// window it is refused.
	for i, step := range []struct {
		advance time.Duration
		code    int
	}{{0, 200}, {time.Minute, 200}, {15*time.Minute + time.Second, 403}} {
		e.clk.Add(step.advance)
		req := sign("/UpdateSamplingRule", "xray", "", update, now, nil)
		if code, typ, msg := xrayAnswer(t, e.srv.Client(), req); code != step.code {
			t.Errorf("replay %d: %d %s %q, want %d", i, code, typ, msg, step.code)
		}
	}
}

// TestSigV4SlowBody: the middleware reads a signed request's body to verify
// it; one that stalls is refused once BodyTimeout passes rather than
// holding the connection (slowloris). The test waits for the answer only;
// its own deadline guards against hanging.
func TestSigV4SlowBody(t *testing.T) {
	e := newHTTPEnv(t, auth.Options{BodyTimeout: 50 * time.Millisecond})
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	head := "POST /GetSamplingRules HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nX-Amz-Date: 20250101T000000Z\r\n" +
		"Authorization: AWS4-HMAC-SHA256 Credential=TSCKAAAAAAAAAAAAAAAA/20250101/us-east-1/xray/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("0", 64) + "\r\n\r\n{"
	if _, err := conn.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled signed body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Amzn-Errortype") != "AccessDeniedException" {
		t.Errorf("stalled signed body: %d %s", resp.StatusCode, resp.Header.Get("X-Amzn-Errortype"))
	}
}

// TestAnonymousXRay: what a peer of an anonymous sampling network may do
// on the X-Ray port without credentials (list the rules its scope sees,
// report for them, as at most ClientIDsPerPrincipal client IDs), and what
// it may not (summaries, tags, any edit); credentials that fail are
// refused, never taken for anonymous.
func TestAnonymousXRay(t *testing.T) {
	e := newEnv(t, auth.Options{
		AnonymousSampling: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, // httptest.NewRequest's peer
		AnonymousServices: []string{"shop-*"},
		Limits:            auth.Limits{ClientIDsPerPrincipal: 2},
	})
	core, err := xraytest.New(e.clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = core.Close() })
	for _, r := range []rules.Rule{
		{Name: "shop", Priority: 1, FixedRate: 0.1, ServiceName: "shop-cart"},
		{Name: "pay", Priority: 2, FixedRate: 0.1, ServiceName: "payments"},
	} {
		if _, err := core.CreateRule(t.Context(), xray.Rule{Rule: r.Normalize()}, nil); err != nil {
			t.Fatal(err)
		}
	}
	h, err := xray.NewHandler(auth.ScopeXRay(core, e.guard.Limiter()), xray.Options{Verifier: e.guard, Now: e.clk.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := e.guard.Middleware(h)
	post := func(path, body, authorization string) (int, string, string) {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
			req.Header.Set("X-Amz-Date", e.clk.Now().UTC().Format("20060102T150405Z"))
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec.Code, rec.Header().Get("X-Amzn-Errortype"), rec.Body.String()
	}
	doc := func(client, rule string) string {
		return `{"SamplingStatisticsDocuments":[{"ClientID":"` + client + `","RuleName":"` + rule + `","RequestCount":10,"SampledCount":1,"BorrowCount":0,"Timestamp":1}]}`
	}
	const arn = "arn:aws:xray:us-east-1:000000000000:sampling-rule/shop"
	forged := "AWS4-HMAC-SHA256 Credential=TSCKAAAAAAAAAAAAAAAA/" + e.clk.Now().UTC().Format("20060102") + "/us-east-1/xray/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("0", 64)
	for _, tc := range []struct {
		name, path, body, authorization string
		code                            int
		errType, text                   string
	}{
		{"lists rules", "/GetSamplingRules", `{}`, "", 200, "", `"RuleName":"shop"`},
		{"reports", "/SamplingTargets", doc("0123456789abcdef01234567", "shop"), "", 200, "", `"ReservoirQuota"`},
		{"reports out of scope", "/SamplingTargets", doc("0123456789abcdef01234567", "pay"), "", 200, "", "OUT_OF_SCOPE"},
		{"a second client", "/SamplingTargets", doc("0123456789abcdef01234568", "shop"), "", 200, "", ""},
		{"a third client", "/SamplingTargets", doc("0123456789abcdef01234569", "shop"), "", 429, "ThrottledException", "client IDs"},
		{"summaries", "/SamplingStatisticSummaries", `{}`, "", 403, "AccessDeniedException", ""},
		{"tags", "/ListTagsForResource", `{"ResourceARN":"` + arn + `"}`, "", 403, "AccessDeniedException", ""},
		{"creates", "/CreateSamplingRule", `{}`, "", 403, "AccessDeniedException", ""},
		{"updates", "/UpdateSamplingRule", `{"SamplingRuleUpdate":{"RuleName":"shop","FixedRate":1}}`, "", 403, "AccessDeniedException", ""},
		{"deletes", "/DeleteSamplingRule", `{"RuleName":"shop"}`, "", 403, "AccessDeniedException", ""},
		{"tags a rule", "/TagResource", `{"ResourceARN":"` + arn + `","Tags":[{"Key":"a","Value":"b"}]}`, "", 403, "AccessDeniedException", ""},
		{"untags a rule", "/UntagResource", `{"ResourceARN":"` + arn + `","TagKeys":["a"]}`, "", 403, "AccessDeniedException", ""},
		{"a forged signature", "/GetSamplingRules", `{}`, forged, 403, "UnrecognizedClientException", ""},
		{"a wrong token", "/GetSamplingRules", `{}`, "Bearer " + auth.TokenPrefix + "nope", 403, "UnrecognizedClientException", ""},
	} {
		code, typ, body := post(tc.path, tc.body, tc.authorization)
		if code != tc.code || typ != tc.errType || !strings.Contains(body, tc.text) {
			t.Errorf("anonymous %s: %d %s %s, want %d %s with %q", tc.name, code, typ, body, tc.code, tc.errType, tc.text)
		}
	}
	if _, _, body := post("/GetSamplingRules", `{}`, ""); strings.Contains(body, `"pay"`) {
		t.Errorf("anonymous samplers scoped to shop-* list rule pay: %s", body)
	}
}
