package auth_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/tracesampling/controlplane/internal/auth"
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
