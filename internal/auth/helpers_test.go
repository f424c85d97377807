package auth_test

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/secrets"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/pkg/clocktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// t0 is the tests' clock start.
var t0 = time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC)

type clock = clocktest.Clock

func newClock() *clock { return clocktest.New(t0) }

// adminSecret is the configured admin token of the tests' guards.
const adminSecret = "0123456789abcdef0123456789abcdef"

var (
	loopback = netip.MustParseAddr("127.0.0.1")
	remote   = netip.MustParseAddr("203.0.113.7") // TEST-NET-3: never dialled
)

// tokenStore is what the tests need of a store.
type tokenStore interface {
	store.TokenStore
	auth.TokenSource
}

func newMemStore(t testing.TB, clk *clock) *memstore.Store {
	t.Helper()
	s, err := memstore.New(memstore.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func testBox(t testing.TB) *secrets.Box {
	t.Helper()
	b, err := secrets.NewBox(bytes.Repeat([]byte{7}, secrets.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// env is a guard on a memstore with a configured admin token.
type env struct {
	clk   *clock
	store tokenStore
	guard *auth.Guard
}

func newEnv(t testing.TB, opts auth.Options) *env {
	t.Helper()
	clk := newClock()
	st := newMemStore(t, clk)
	if opts.Tokens == nil {
		opts.Tokens = st
	}
	if opts.Static == nil {
		opts.Static = []auth.StaticToken{{Name: "root", Role: auth.RoleAdmin, Secret: adminSecret}}
	}
	if opts.Now == nil {
		opts.Now = clk.Now
	}
	if opts.Box == nil {
		opts.Box = testBox(t)
	}
	g, err := auth.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &env{clk: clk, store: st, guard: g}
}

// issue creates a token in the env's store and returns its secret (and
// access key ID for an AWS key).
func (e *env) issue(t testing.TB, spec auth.TokenSpec) auth.Issued {
	t.Helper()
	iss, err := auth.Issue(spec, testBox(t), e.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.CreateToken(context.Background(), iss.Record); err != nil {
		t.Fatal(err)
	}
	// The guard runs no Run here: its cache looks at the store again on a
	// miss once its clock has moved past the miss recheck interval.
	e.clk.Add(time.Second)
	return iss
}

func bearer(secret string) auth.Credentials {
	return auth.Credentials{Authorization: []string{"Bearer " + secret}, Peer: remote}
}

func httptestBody(s string) io.ReadCloser { return io.NopCloser(strings.NewReader(s)) }
