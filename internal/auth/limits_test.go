package auth_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/promtest"
)

func principal(name string) *auth.Principal {
	return &auth.Principal{Name: name, Role: auth.RoleEditor, Kind: auth.KindToken}
}

func limitOf(t *testing.T, err error) *auth.LimitError {
	t.Helper()
	var le *auth.LimitError
	if !errors.As(err, &le) || !errors.Is(err, auth.ErrLimited) {
		t.Fatalf("error %v, want a *LimitError", err)
	}
	return le
}

func TestEditRate(t *testing.T) {
	clk := newClock()
	var refused []string
	l := auth.NewLimiter(auth.Limits{EditsPerSecond: 2, EditBurst: 3}, clk.Now, func(limit string) { refused = append(refused, limit) })
	a, b := principal("a"), principal("b")
	for i := range 3 {
		if err := l.Allow(a, auth.ClassEdit); err != nil {
			t.Fatalf("edit %d of a burst of 3: %v", i+1, err)
		}
	}
	le := limitOf(t, l.Allow(a, auth.ClassEdit))
	if le.Limit != "edits" || le.RetryAfter != 500*time.Millisecond {
		t.Errorf("refusal %+v, want edits, retry after 500ms", le)
	}
	if err := l.Allow(b, auth.ClassEdit); err != nil {
		t.Errorf("another principal was limited: %v", err)
	}
	if err := l.Allow(a, auth.ClassNone); err != nil {
		t.Errorf("a read was limited: %v", err)
	}
	clk.Add(500 * time.Millisecond)
	if err := l.Allow(a, auth.ClassEdit); err != nil {
		t.Errorf("after the retry delay: %v", err)
	}
	limitOf(t, l.Allow(a, auth.ClassEdit))
	if fmt.Sprint(refused) != "[edits edits]" {
		t.Errorf("refusals counted %v", refused)
	}
}

func TestCostlyRate(t *testing.T) {
	clk := newClock()
	l := auth.NewLimiter(auth.Limits{CostlyPerSecond: 0.5, CostlyBurst: 1}, clk.Now, nil)
	a := principal("a")
	if err := l.Allow(a, auth.ClassCostly); err != nil {
		t.Fatal(err)
	}
	if le := limitOf(t, l.Allow(a, auth.ClassCostly)); le.Limit != "costly" || le.RetryAfter != 2*time.Second {
		t.Errorf("refusal %+v, want costly after 2s", le)
	}
	// Edits have their own bucket.
	if err := l.Allow(a, auth.ClassEdit); err != nil {
		t.Errorf("an edit after a costly call: %v", err)
	}
}

func TestStreamsPerPrincipal(t *testing.T) {
	l := auth.NewLimiter(auth.Limits{StreamsPerPrincipal: 2}, nil, nil)
	a := principal("a")
	r1, err := l.OpenStream(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.OpenStream(a); err != nil {
		t.Fatal(err)
	}
	if le := limitOf(t, func() error { _, err := l.OpenStream(a); return err }()); le.Limit != "streams" {
		t.Errorf("refusal %+v", le)
	}
	r1()
	r1() // releasing twice frees one stream only
	if _, err := l.OpenStream(a); err != nil {
		t.Errorf("after a release: %v", err)
	}
	limitOf(t, func() error { _, err := l.OpenStream(a); return err }())
}

func TestClientIDs(t *testing.T) {
	clk := newClock()
	l := auth.NewLimiter(auth.Limits{ClientIDsPerPrincipal: 2, ClientIDTTL: time.Minute, MaxClientIDs: 3}, clk.Now, nil)
	a, b := principal("a"), principal("b")
	for _, id := range []string{"c1", "c2", "c1", "c2"} {
		if err := l.ClientID(a, id); err != nil {
			t.Fatalf("client %s: %v", id, err)
		}
	}
	clk.Add(10 * time.Second)
	if err := l.ClientID(a, "c2"); err != nil { // seen again: kept longer
		t.Fatal(err)
	}
	le := limitOf(t, l.ClientID(a, "c3"))
	if le.Limit != "client_ids" || le.RetryAfter != 50*time.Second {
		t.Errorf("refusal %+v, want client_ids after 50s (when c1 expires)", le)
	}
	// The global bound: b gets one more, then the replica is full.
	if err := l.ClientID(b, "d1"); err != nil {
		t.Fatal(err)
	}
	if le := limitOf(t, l.ClientID(b, "d2")); le.Limit != "client_ids" {
		t.Errorf("refusal %+v", le)
	}
	clk.Add(50 * time.Second)
	if err := l.ClientID(a, "c3"); err != nil {
		t.Errorf("after c1 expired: %v", err)
	}
	clk.Add(time.Minute)
	if err := l.ClientID(b, "d2"); err != nil {
		t.Errorf("after the others expired: %v", err)
	}
}

// TestPrincipalsBounded: principals a client can make up (anonymous
// peers' addresses) do not grow the limiter without bound.
func TestPrincipalsBounded(t *testing.T) {
	clk := newClock()
	l := auth.NewLimiter(auth.Limits{MaxPrincipals: 2, EditBurst: 1, EditsPerSecond: 0.001}, clk.Now, nil)
	a, b, c := principal("a"), principal("b"), principal("c")
	release, err := l.OpenStream(a)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Allow(b, auth.ClassEdit); err != nil {
		t.Fatal(err)
	}
	limitOf(t, l.Allow(b, auth.ClassEdit))
	// c pushes b out (a holds a stream); b comes back with a fresh bucket.
	if err := l.Allow(c, auth.ClassEdit); err != nil {
		t.Fatal(err)
	}
	if err := l.Allow(b, auth.ClassEdit); err != nil {
		t.Errorf("a forgotten principal: %v", err)
	}
	// With every slot holding a stream, a new principal is refused.
	relB, err := l.OpenStream(b)
	if err != nil {
		t.Fatal(err)
	}
	if le := limitOf(t, l.Allow(c, auth.ClassEdit)); le.Limit != "principals" {
		t.Errorf("refusal %+v", le)
	}
	release()
	relB()
	if err := l.Allow(c, auth.ClassEdit); err != nil {
		t.Errorf("after the streams closed: %v", err)
	}
}

// TestLimitStatus: a refusal is RESOURCE_EXHAUSTED with RetryInfo, and is
// counted.
func TestLimitStatus(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, auth.Options{Registerer: reg, Limits: auth.Limits{EditBurst: 1, EditsPerSecond: 0.25}})
	ctx := t.Context()
	if _, err := e.guard.Check(ctx, bearer(adminSecret), editCall); err != nil {
		t.Fatal(err)
	}
	_, err := e.guard.Check(ctx, bearer(adminSecret), editCall)
	st := status.Convert(auth.GRPCStatus(err))
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("status %v, want ResourceExhausted", st)
	}
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() != 4*time.Second {
		t.Errorf("details %v, want RetryInfo of 4s", st.Details())
	}
	if code, after := auth.HTTPStatus(err); code != 429 || after != 4 {
		t.Errorf("HTTP %d, Retry-After %d; want 429, 4", code, after)
	}
	if got := promtest.Value(t, reg, "controlplane_limit_refusals_total", "limit", "edits"); got != 1 {
		t.Errorf("controlplane_limit_refusals_total{limit=edits} = %v, want 1", got)
	}
}

// TestLocalAdminUnlimited: protected mode's local admin is the machine
// itself (a load generator simulating a fleet on it): no per-principal
// limit applies; a token of the same role is limited.
func TestLocalAdminUnlimited(t *testing.T) {
	l := auth.NewLimiter(auth.Limits{EditsPerSecond: 1, EditBurst: 1, StreamsPerPrincipal: 1, ClientIDsPerPrincipal: 1}, newClock().Now, nil)
	local := &auth.Principal{Name: "local", Role: auth.RoleAdmin, Kind: auth.KindLocal}
	for i := range 3 {
		if err := l.Allow(local, auth.ClassEdit); err != nil {
			t.Errorf("local edit %d: %v", i, err)
		}
		if _, err := l.OpenStream(local); err != nil {
			t.Errorf("local stream %d: %v", i, err)
		}
		if err := l.ClientID(local, fmt.Sprint("c", i)); err != nil {
			t.Errorf("local client ID %d: %v", i, err)
		}
	}
	admin := &auth.Principal{Name: "root", Role: auth.RoleAdmin, Kind: auth.KindToken}
	_ = l.Allow(admin, auth.ClassEdit)
	limitOf(t, l.Allow(admin, auth.ClassEdit))
}
