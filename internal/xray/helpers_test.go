package xray_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/internal/xray/xraytest"
	"github.com/tracesampling/controlplane/pkg/clocktest"
)

// t0 is the tests' clock start: 2025-01-02 03:04:05.678 UTC.
var t0 = time.Date(2025, 1, 2, 3, 4, 5, 678e6, time.UTC)

type clock = clocktest.Clock

type env struct {
	t     *testing.T
	clock *clock
	core  *xraytest.Core
	h     *xray.Handler
	srv   *httptest.Server
}

func newEnv(t *testing.T, opts xray.Options) *env {
	t.Helper()
	c := clocktest.New(t0)
	core, err := xraytest.New(c.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { core.Close() })
	opts.Now = c.Now
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	h, err := xray.NewHandler(core, opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &env{t: t, clock: c, core: core, h: h, srv: srv}
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// post sends body (a string, or anything json.Marshal takes) to path.
func (e *env) post(path string, body any, header ...string) reply {
	e.t.Helper()
	var b []byte
	switch v := body.(type) {
	case string:
		b = []byte(v)
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			e.t.Fatal(err)
		}
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, e.srv.URL+path, bytes.NewReader(b))
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	r := reply{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if err := json.Unmarshal(raw, &r.body); err != nil {
		e.t.Fatalf("POST %s: answer is not a JSON object: %v: %s", path, err, raw)
	}
	return r
}

// ok fails the test unless the reply is a 200.
func (r reply) ok(t *testing.T) reply {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d, want 200: %s", r.status, r.raw)
	}
	return r
}

// errType returns the error type of a non-200 reply, after checking that
// the body and the x-amzn-ErrorType header agree.
func (r reply) errType(t *testing.T) string {
	t.Helper()
	if r.status == http.StatusOK {
		t.Fatalf("status 200, want an error: %s", r.raw)
	}
	typ, _ := r.body["__type"].(string)
	if h := r.header.Get("X-Amzn-Errortype"); h != typ {
		t.Errorf("x-amzn-ErrorType %q, body __type %q", h, typ)
	}
	if msg, _ := r.body["Message"].(string); msg == "" {
		t.Errorf("error without a Message: %s", r.raw)
	}
	return typ
}

// fullRule is a valid CreateSamplingRule rule.
func fullRule(name string) map[string]any {
	return map[string]any{
		"RuleName":      name,
		"ResourceARN":   "*",
		"Priority":      10,
		"FixedRate":     0.25,
		"ReservoirSize": 10,
		"ServiceName":   "shop-*",
		"ServiceType":   "*",
		"Host":          "*",
		"HTTPMethod":    "POST",
		"URLPath":       "/checkout*",
		"Version":       1,
		"Attributes":    map[string]string{"tier": "gold"},
	}
}

func (e *env) create(rule map[string]any) {
	e.t.Helper()
	e.post("/CreateSamplingRule", map[string]any{"SamplingRule": rule}).ok(e.t)
}

// version is the store's rules version, to show a refused call changed
// nothing.
func (e *env) version() int64 {
	e.t.Helper()
	v, err := e.core.Store.RulesVersion(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}
