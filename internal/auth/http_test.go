package auth_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/internal/xray/xraytest"
)

// httpEnv serves a mux behind the guard's middleware on loopback: the
// health routes, /metrics, /sampling, and the X-Ray API on an in-memory
// core whose handler verifies with the guard.
type httpEnv struct {
	*env
	srv  *httptest.Server
	core *xraytest.Core
	seen chan string // the actor the handler of /sampling and /metrics saw
}

func newHTTPEnv(t *testing.T, opts auth.Options) *httpEnv {
	t.Helper()
	e := &httpEnv{env: newEnv(t, opts), seen: make(chan string, 16)}
	core, err := xraytest.New(e.clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { core.Close() })
	e.core = core
	xh, err := xray.NewHandler(core, xray.Options{Verifier: e.guard, Now: e.clk.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, r *http.Request) {
		e.seen <- auth.Actor(r.Context())
		_, _ = w.Write([]byte("ok\n"))
	}
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /metrics", ok)
	mux.HandleFunc("GET /sampling", ok)
	mux.HandleFunc("GET /ui/", ok)
	mux.Handle("/", xh)
	e.srv = httptest.NewServer(e.guard.Middleware(mux))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *httpEnv) get(t *testing.T, path, secret string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestMiddleware(t *testing.T) {
	e := newHTTPEnv(t, auth.Options{Limits: auth.Limits{EditBurst: 1, EditsPerSecond: 0.5}})
	viewer := e.issue(t, auth.TokenSpec{Name: "prometheus", Role: auth.RoleViewer})
	sdk := e.issue(t, auth.TokenSpec{Name: "shop-sdk", Role: auth.RoleSDK, Services: []string{"shop-*"}})
	tests := []struct {
		name, path, secret string
		code               int
		actor              string
	}{
		{"health without credentials", "/healthz", "", 200, "anonymous"},
		{"metrics without credentials", "/metrics", "", 401, ""},
		{"metrics as a viewer", "/metrics", viewer.Secret, 200, "token:prometheus"},
		{"metrics as an sdk", "/metrics", sdk.Secret, 403, ""},
		{"jaeger in scope", "/sampling?service=shop-cart", sdk.Secret, 200, "token:shop-sdk"},
		{"jaeger out of scope", "/sampling?service=payments", sdk.Secret, 403, ""},
		{"jaeger without a service", "/sampling", sdk.Secret, 200, "token:shop-sdk"},
		{"jaeger as a viewer", "/sampling?service=shop-cart", viewer.Secret, 403, ""},
		{"an unknown route", "/admin", auth.NewTokenSecret(), 403, ""},
	}
	for _, tt := range tests {
		resp := e.get(t, tt.path, tt.secret)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tt.code {
			t.Errorf("%s: %d %s, want %d", tt.name, resp.StatusCode, body, tt.code)
			continue
		}
		if tt.code == 401 && resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: a 401 without WWW-Authenticate", tt.name)
		}
		if tt.code == 200 {
			if got := <-e.seen; got != tt.actor {
				t.Errorf("%s: the handler saw actor %q, want %q", tt.name, got, tt.actor)
			}
		}
	}
}

// signed returns an X-Ray request signed by the AWS SDK's signer at when,
// with body; tamper, if set, replaces the body after signing.
func (e *httpEnv) signed(t *testing.T, path, keyID, secret, region string, when time.Time, body, tamper string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	sum := sha256.Sum256([]byte(body))
	err = v4.NewSigner().SignHTTP(t.Context(), aws.Credentials{AccessKeyID: keyID, SecretAccessKey: secret},
		req, hex.EncodeToString(sum[:]), "xray", region, when)
	if err != nil {
		t.Fatal(err)
	}
	if tamper != "" {
		req.Body = io.NopCloser(strings.NewReader(tamper))
		req.ContentLength = int64(len(tamper))
	}
	return req
}

func xrayAnswer(t *testing.T, c *http.Client, req *http.Request) (int, string, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct {
		Type    string `json:"__type"`
		Message string
	}
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out.Type, out.Message
}

func TestSigV4(t *testing.T) {
	e := newHTTPEnv(t, auth.Options{})
	sdk := e.issue(t, auth.TokenSpec{Name: "daemon", Role: auth.RoleSDK, AWS: true})
	editor := e.issue(t, auth.TokenSpec{Name: "ci", Role: auth.RoleEditor, AWS: true})
	revoked := e.issue(t, auth.TokenSpec{Name: "old", Role: auth.RoleEditor, AWS: true})
	if _, err := e.store.RevokeToken(t.Context(), "old", "root"); err != nil {
		t.Fatal(err)
	}
	now := e.clk.Now()
	rule := `{"SamplingRule":{"RuleName":"shop","Priority":10,"FixedRate":0.1,"ReservoirSize":1,"ServiceName":"shop","ServiceType":"*","Host":"*","HTTPMethod":"*","URLPath":"*","ResourceARN":"*","Version":1}}`
	tests := []struct {
		name               string
		req                *http.Request
		code               int
		errType, errSubstr string
	}{
		{"sdk reads rules", e.signed(t, "/GetSamplingRules", sdk.AccessKeyID, sdk.Secret, "us-east-1", now, "{}", ""), 200, "", ""},
		{"editor creates a rule", e.signed(t, "/CreateSamplingRule", editor.AccessKeyID, editor.Secret, "us-east-1", now.Add(-14*time.Minute), rule, ""), 200, "", ""},
		{"sdk may not edit", e.signed(t, "/CreateSamplingRule", sdk.AccessKeyID, sdk.Secret, "us-east-1", now, rule, ""), 403, "AccessDeniedException", "editor role"},
		{"wrong secret", e.signed(t, "/GetSamplingRules", sdk.AccessKeyID, editor.Secret, "us-east-1", now, "{}", ""), 403, "InvalidSignatureException", "does not match"},
		{"expired date", e.signed(t, "/GetSamplingRules", sdk.AccessKeyID, sdk.Secret, "us-east-1", now.Add(-16*time.Minute), "{}", ""), 403, "InvalidSignatureException", "expired"},
		{"from the future", e.signed(t, "/GetSamplingRules", sdk.AccessKeyID, sdk.Secret, "us-east-1", now.Add(16*time.Minute), "{}", ""), 403, "InvalidSignatureException", "expired"},
		{"tampered body", e.signed(t, "/CreateSamplingRule", editor.AccessKeyID, editor.Secret, "us-east-1", now, rule, strings.Replace(rule, "0.1", "1.0", 1)), 403, "InvalidSignatureException", "does not match"},
		{"another region", e.signed(t, "/GetSamplingRules", sdk.AccessKeyID, sdk.Secret, "eu-west-1", now, "{}", ""), 403, "InvalidSignatureException", "us-east-1"},
		{"unknown key", e.signed(t, "/GetSamplingRules", "TSCKAAAAAAAAAAAAAAAA", sdk.Secret, "us-east-1", now, "{}", ""), 403, "UnrecognizedClientException", "unknown access key"},
		{"revoked key", e.signed(t, "/GetSamplingRules", revoked.AccessKeyID, revoked.Secret, "us-east-1", now, "{}", ""), 403, "UnrecognizedClientException", "revoked"},
	}
	unsigned, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, e.srv.URL+"/GetSamplingRules", strings.NewReader("{}"))
	tests = append(tests, struct {
		name               string
		req                *http.Request
		code               int
		errType, errSubstr string
	}{"unsigned", unsigned, 403, "MissingAuthenticationTokenException", "SigV4"})
	for _, tt := range tests {
		code, typ, msg := xrayAnswer(t, e.srv.Client(), tt.req)
		if code != tt.code || typ != tt.errType || !strings.Contains(msg, tt.errSubstr) {
			t.Errorf("%s: %d %s %q, want %d %s with %q", tt.name, code, typ, msg, tt.code, tt.errType, tt.errSubstr)
		}
	}
	// The audit log records the key's principal.
	page, err := e.core.Store.RuleEvents(t.Context(), "shop", 10, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 1 || page.Events[0].Actor != "aws:ci" {
		t.Errorf("audit events %+v, want one by aws:ci", page.Events)
	}
}

// TestVerifierAlone: the X-Ray handler with the guard as its Verifier but
// no middleware in front still refuses what the guard refuses.
func TestVerifierAlone(t *testing.T) {
	e := newHTTPEnv(t, auth.Options{})
	xh, err := xray.NewHandler(e.core, xray.Options{Verifier: e.guard, Now: e.clk.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	bare := httptest.NewServer(xh)
	defer bare.Close()
	sdk := e.issue(t, auth.TokenSpec{Name: "daemon", Role: auth.RoleSDK, AWS: true})
	now := e.clk.Now()
	at := func(req *http.Request) *http.Request {
		req.URL.Host = bare.Listener.Addr().String()
		req.Host = req.URL.Host
		return req
	}
	// Signed for the bare server's host.
	sign := func(path, secret, body string) *http.Request {
		req := at(httptest.NewRequestWithContext(context.Background(), http.MethodPost, bare.URL+path, bytes.NewReader([]byte(body))))
		req.RequestURI = ""
		sum := sha256.Sum256([]byte(body))
		if err := v4.NewSigner().SignHTTP(t.Context(), aws.Credentials{AccessKeyID: sdk.AccessKeyID, SecretAccessKey: secret}, req, hex.EncodeToString(sum[:]), "xray", "us-east-1", now); err != nil {
			t.Fatal(err)
		}
		return req
	}
	if code, typ, msg := xrayAnswer(t, bare.Client(), sign("/GetSamplingRules", sdk.Secret, "{}")); code != 200 {
		t.Errorf("a good signature: %d %s %s", code, typ, msg)
	}
	if code, typ, _ := xrayAnswer(t, bare.Client(), sign("/GetSamplingRules", "wrong"+sdk.Secret[5:], "{}")); code != 403 || typ != "InvalidSignatureException" {
		t.Errorf("a wrong secret: %d %s", code, typ)
	}
	if code, typ, _ := xrayAnswer(t, bare.Client(), sign("/DeleteSamplingRule", sdk.Secret, `{"RuleName":"x"}`)); code != 403 || typ != "AccessDeniedException" {
		t.Errorf("an sdk key deleting: %d %s", code, typ)
	}
	unsigned, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, bare.URL+"/GetSamplingRules", strings.NewReader("{}"))
	if code, typ, _ := xrayAnswer(t, bare.Client(), unsigned); code != 403 || typ != "AccessDeniedException" {
		t.Errorf("unsigned: %d %s", code, typ)
	}
}

// TestDashboardBasicAuth: a browser sends a token as the password of HTTP
// Basic authentication, which the dashboard asks for and takes; no other
// route takes it.
func TestDashboardBasicAuth(t *testing.T) {
	e := newHTTPEnv(t, auth.Options{})
	viewer := e.issue(t, auth.TokenSpec{Name: "ops", Role: auth.RoleViewer})
	get := func(path, user, password string) *http.Response {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" || password != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp := get("/ui/", "", "")
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(strings.Join(resp.Header.Values("WWW-Authenticate"), ","), "Basic ") {
		t.Errorf("/ui/ without credentials: %d, WWW-Authenticate %q; want 401 asking for Basic", resp.StatusCode, resp.Header.Values("WWW-Authenticate"))
	}
	if resp := get("/ui/", "anyone", viewer.Secret); resp.StatusCode != http.StatusOK {
		t.Errorf("/ui/ with the token as the Basic password: %d, want 200", resp.StatusCode)
	} else if got := <-e.seen; got != "token:ops" {
		t.Errorf("the dashboard saw actor %q, want token:ops", got)
	}
	if resp := get("/ui/", "anyone", "wrong"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/ui/ with a wrong password: %d, want 401", resp.StatusCode)
	}
	if resp := get("/metrics", "anyone", viewer.Secret); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/metrics with Basic credentials: %d, want 401: only the dashboard takes them", resp.StatusCode)
	}
	if resp := get("/metrics", "", ""); strings.Contains(strings.Join(resp.Header.Values("WWW-Authenticate"), ","), "Basic") {
		t.Errorf("/metrics asks for Basic credentials: %q", resp.Header.Values("WWW-Authenticate"))
	}
}
