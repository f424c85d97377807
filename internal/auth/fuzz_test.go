package auth_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/tracesampling/controlplane/internal/auth"
)

// FuzzCredentials: no authorization header, path or body makes the guard
// panic or let an unauthenticated request through to a non-public route.
func FuzzCredentials(f *testing.F) {
	for _, s := range []string{
		"", "Bearer ", "Bearer " + adminSecret, "bearer tsc_", "Basic YTpi",
		"AWS4-HMAC-SHA256 Credential=TSCKAAAAAAAAAAAAAAAA/20261110/us-east-1/xray/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + strings.Repeat("0", 64),
		"AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request, SignedHeaders=, Signature=x",
		"AWS4-HMAC-SHA256 ,,,,=", "AWS4-X", "Bearer tsc_" + strings.Repeat("a", 58),
	} {
		for _, p := range []string{"/GetSamplingRules", "/metrics", "/sampling", "/x", "/debug/pprof/"} {
			f.Add(s, p, "{}")
		}
	}
	e := newEnv(f, auth.Options{})
	reached := ""
	h := e.guard.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached = r.URL.Path }))
	f.Fuzz(func(t *testing.T, authorization, path, body string) {
		_, _ = e.guard.Check(t.Context(), auth.Credentials{Authorization: []string{authorization}}, readCall)
		r := &http.Request{
			Method: http.MethodPost, URL: &url.URL{Path: path, RawQuery: "service=shop"}, Host: "controlplane:2000",
			Header: http.Header{"Authorization": {authorization}, "X-Amz-Date": {"20261110T120000Z"}},
			Body:   http.NoBody, RemoteAddr: "203.0.113.7:4242",
		}
		if body != "" {
			r.Body = httptestBody(body)
			r.ContentLength = int64(len(body))
		}
		reached = ""
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		rule, ok := auth.RouteRule(path)
		if reached != "" && (!ok || rule.Need != auth.Public && !strings.Contains(authorization, adminSecret)) {
			t.Fatalf("authorization %q reached %q (%d)", authorization, path, w.Code)
		}
	})
}
