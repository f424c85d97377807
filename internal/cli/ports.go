package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// httpPort is one of serve's optional HTTP listeners. Listening comes
// first, before the server that serve builds can fail, and the handler is
// set once it is built.
type httpPort struct {
	flag, addr string
	handler    http.Handler
	lis        net.Listener
	srv        *http.Server
}

// listen binds the port, if it is on.
func (p *httpPort) listen() error {
	if p.addr == "" {
		return nil
	}
	lis, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("%s: %w", p.flag, err)
	}
	p.lis = lis
	return nil
}

// serve starts serving the port, if it is on, sending what Serve returns to
// errc (nil after a shutdown); it reports whether it started.
func (p *httpPort) serve(errc chan<- error) bool {
	if p.lis == nil {
		return false
	}
	// A keep-alive connection left idle is closed after IdleTimeout:
	// without it net/http would hold it (and its goroutine) for as long as
	// the peer likes. Bodies have their own deadline where they are read.
	p.srv = &http.Server{Handler: p.handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() {
		if err := p.srv.Serve(p.lis); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("%s: %w", p.flag, err)
			return
		}
		errc <- nil
	}()
	return true
}

// bound is the address the port listens on, or "" when it is off.
func (p *httpPort) bound() string {
	if p.lis == nil {
		return ""
	}
	return p.lis.Addr().String()
}

// shutdown stops the port gracefully, or closes a listener never served.
func (p *httpPort) shutdown(ctx context.Context) {
	if p.srv != nil {
		_ = p.srv.Shutdown(ctx)
		return
	}
	p.close()
}

func (p *httpPort) close() {
	if p.lis != nil {
		p.lis.Close()
	}
}

// catalogSource gives the Jaeger endpoints the replica's current rules and
// the budget factors in force.
type catalogSource struct {
	cat *catalog.Catalog
	now func() time.Time
}

func (s catalogSource) Rules(ctx context.Context, service string) ([]rules.Rule, error) {
	v := s.cat.Current()
	if v.Version == 0 {
		// Started while the store was away: no rules to give yet.
		return nil, fmt.Errorf("no rules loaded yet: %w", store.ErrUnavailable)
	}
	return v.Rules, nil
}

func (s catalogSource) Factors(service string, r *rules.Rule) (fixedRate, reservoir float64) {
	return s.cat.CurrentBudgets().Factors(service, r, s.now())
}
