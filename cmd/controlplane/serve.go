package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/credentials"

	"github.com/tracesampling/controlplane/internal/budget/controller"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/server"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
)

// serveConfig is everything `serve` can be told, by flag or environment.
type serveConfig struct {
	grpcAddr    string
	httpAddr    string
	redisURL    string
	redisPrefix string
	dataDir     string
	logLevel    string
	logFormat   string
	maxConnAge  time.Duration
	shutdown    time.Duration
	interval    time.Duration
	debug       bool
	tlsCert     string
	tlsKey      string
	tlsClientCA string
	tlsPoll     time.Duration // how often to look for renewed TLS files; 0: tlsPollEvery (tests shorten it)
}

// The bounds of --report-interval. Every SDK reports once an interval (a
// store write each), so below a second the writes grow with nothing to
// gain. A budget cuts a surge only once it is reported, decided and sent
// back, about three intervals; past a minute, what a surge spends before
// then is no longer small beside the month (docs/BUDGETS.md).
const (
	minReportInterval = time.Second
	maxReportInterval = time.Minute
)

// envPrefix: every serve flag --foo-bar can also be set as
// CONTROLPLANE_FOO_BAR; a flag on the command line wins.
const envPrefix = "CONTROLPLANE_"

func serveFlags(stderr io.Writer) (*flag.FlagSet, *serveConfig) {
	c := &serveConfig{}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.grpcAddr, "grpc-addr", ":7070", "gRPC listen address")
	fs.StringVar(&c.httpAddr, "http-addr", ":7071", "HTTP listen address for /healthz, /readyz and /metrics (empty: off)")
	fs.StringVar(&c.redisURL, "redis-url", "", "Redis URL: redis://, rediss://, redis+sentinel://, redis+cluster:// (empty: embedded store)")
	fs.StringVar(&c.redisPrefix, "redis-prefix", "tsc", "prefix of every Redis key, to share one Redis between control planes")
	fs.StringVar(&c.dataDir, "data-dir", "", "directory where the embedded store keeps rules across restarts (empty: not persisted)")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	fs.DurationVar(&c.maxConnAge, "max-connection-age", 30*time.Minute, "close client connections after this long so streams rebalance across replicas")
	fs.DurationVar(&c.interval, "report-interval", 10*time.Second, "how often SDKs report their counts and get new quotas, and budgets are decided: "+
		"from 1s (each report is a store write) to 1m (a surge costs about three intervals before budgets cut it: at 1m, a surge of 100x "+
		"the month's mean rate spends 0.7 % of the month; at 10m, 7 %)")
	fs.BoolVar(&c.debug, "debug-endpoints", false, "serve Go's pprof profiles under /debug/pprof/ on --http-addr (do not expose publicly)")
	fs.DurationVar(&c.shutdown, "shutdown-timeout", 20*time.Second, "how long a graceful stop waits for calls in flight")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM `file` of the gRPC server's TLS certificate chain (with --tls-key; empty: plaintext)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM `file` of the TLS certificate's private key")
	fs.StringVar(&c.tlsClientCA, "tls-client-ca", "", "PEM `file` of the CAs that client certificates must chain to; given, every client must present one (mutual TLS)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: controlplane serve [flags]\n\nEvery flag can also be set as an environment variable, e.g. --redis-url as %sREDIS_URL.\n\n", envPrefix)
		fs.PrintDefaults()
	}
	return fs, c
}

// applyEnv sets every flag not given on the command line from its
// environment variable.
func applyEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	set := givenFlags(fs)
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := lookup(name); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: want text or json, got %q", format)
}

// backend is what serve needs of a store.
type backend interface {
	server.RuleStore
	server.LedgerStore
	server.BudgetStore
	controller.Store
	catalog.Source
	Ping(ctx context.Context) error
	Close() error
}

func openStore(ctx context.Context, c *serveConfig, log *slog.Logger) (backend, error) {
	if c.redisURL == "" {
		if c.dataDir == "" {
			log.Warn("embedded store without --data-dir: rules are NOT persisted and are lost when the process stops")
		}
		s, err := memstore.New(memstore.Options{DataDir: c.dataDir})
		if err != nil {
			return nil, fmt.Errorf("open embedded store: %w", err)
		}
		log.Info("using the embedded store", "data_dir", c.dataDir)
		return s, nil
	}
	if c.dataDir != "" {
		log.Warn("--data-dir is ignored when --redis-url is set")
	}
	client, err := redisstore.NewClient(c.redisURL)
	if err != nil {
		return nil, usageError(fmt.Errorf("--redis-url: %w", err))
	}
	s, err := redisstore.New(ctx, client, redisstore.Options{Prefix: c.redisPrefix})
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("open redis store: %w", err)
	}
	log.Info("using redis", "url", redisstore.RedactURL(c.redisURL), "prefix", c.redisPrefix)
	return redisBackend{s, client}, nil
}

// redisBackend closes the client with the store: serve owns both.
type redisBackend struct {
	*redisstore.Store
	client redis.UniversalClient
}

func (b redisBackend) Close() error {
	return errors.Join(b.Store.Close(), b.client.Close())
}

func runServe(ctx context.Context, args []string, stderr io.Writer) error {
	fs, c := serveFlags(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &codedError{code: exitOK, err: errSilent} // the usage was the output
		}
		return usageError(err)
	}
	if fs.NArg() > 0 {
		return usageError(fmt.Errorf("serve takes no arguments, got %q", fs.Args()))
	}
	if err := applyEnv(fs, os.LookupEnv); err != nil {
		return usageError(err)
	}
	if c.interval < minReportInterval || c.interval > maxReportInterval {
		return usageError(fmt.Errorf("--report-interval must be from %v to %v (see -h for why), got %v", minReportInterval, maxReportInterval, c.interval))
	}
	log, err := newLogger(stderr, c.logLevel, c.logFormat)
	if err != nil {
		return usageError(err)
	}
	return serve(ctx, c, log, nil)
}

// serve runs the control plane until ctx ends. If ready is not nil it receives
// the bound addresses once both listeners are up (tests use it to find
// ports chosen by the kernel).
func serve(ctx context.Context, c *serveConfig, log *slog.Logger, ready chan<- [2]string) error {
	creds, certs, err := c.serverCredentials(log)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, c, log)
	if err != nil {
		return err
	}
	defer st.Close()

	// Listen before building the server: server.New starts goroutines that
	// only srv.Stop ends, so no error return may come after it.
	glis, err := net.Listen("tcp", c.grpcAddr)
	if err != nil {
		return fmt.Errorf("--grpc-addr: %w", err)
	}
	var hlis net.Listener
	if c.httpAddr != "" {
		if hlis, err = net.Listen("tcp", c.httpAddr); err != nil {
			glis.Close()
			return fmt.Errorf("--http-addr: %w", err)
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cat := catalog.New(st, catalog.Options{Logger: log})
	if err := cat.Load(ctx); err != nil {
		log.Warn("cannot load rules yet; will keep trying", "err", err)
	}
	srv := server.New(server.Options{
		Rules:            st,
		Catalog:          cat,
		Ledger:           st,
		Budgets:          st,
		ReportInterval:   c.interval,
		Logger:           log,
		Registerer:       reg,
		MaxConnectionAge: c.maxConnAge,
		Credentials:      creds,
	})
	readiness := server.NewReadiness(srv, reg)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	running := 1
	go func() { errc <- srv.Serve(glis) }()
	var hsrv *http.Server
	httpAddr := ""
	if hlis != nil {
		hsrv = &http.Server{Handler: server.HTTPHandler(readiness, reg, c.debug), ReadHeaderTimeout: 10 * time.Second}
		running++
		httpAddr = hlis.Addr().String()
		go func() {
			if err := hsrv.Serve(hlis); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
				return
			}
			errc <- nil
		}()
	}
	ctl := controller.New(st, cat, controller.Options{Interval: c.interval, Logger: log, Registerer: reg})
	var bg sync.WaitGroup
	if certs != nil {
		certs.register(reg)
		bg.Add(1)
		go func() {
			defer bg.Done()
			certs.watch(ctx, cmp.Or(c.tlsPoll, tlsPollEvery))
		}()
	}
	bg.Add(3)
	go func() {
		defer bg.Done()
		ctl.Run(ctx)
	}()
	go func() {
		defer bg.Done()
		readiness.Run(ctx, st.Ping, 2*time.Second)
	}()
	go func() {
		defer bg.Done()
		_ = cat.Run(ctx)
	}()
	log.Info("control plane serving", "grpc_addr", glis.Addr().String(), "http_addr", httpAddr, "tls", creds != nil, "client_certs", c.tlsClientCA != "")
	if ready != nil {
		ready <- [2]string{glis.Addr().String(), httpAddr}
	}

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case serveErr = <-errc:
		running--
		log.Error("listener failed, shutting down", "err", serveErr)
	}
	cancel()
	bg.Wait()
	stopCtx, stopCancel := context.WithTimeout(context.Background(), c.shutdown)
	defer stopCancel()
	srv.Stop(stopCtx)
	if hsrv != nil {
		_ = hsrv.Shutdown(stopCtx)
	}
	for ; running > 0; running-- {
		if err := <-errc; err != nil && serveErr == nil {
			serveErr = err
		}
	}
	log.Info("stopped")
	return serveErr
}

// serverCredentials returns the gRPC server's TLS credentials and the files
// they come from, or nil for plaintext.
func (c *serveConfig) serverCredentials(log *slog.Logger) (credentials.TransportCredentials, *tlsFiles, error) {
	if c.tlsCert == "" && c.tlsKey == "" {
		if c.tlsClientCA != "" {
			return nil, nil, usageError(errors.New("--tls-client-ca needs --tls-cert and --tls-key"))
		}
		return nil, nil, nil
	}
	if c.tlsCert == "" || c.tlsKey == "" {
		return nil, nil, usageError(errors.New("--tls-cert and --tls-key go together"))
	}
	files, err := newTLSFiles(c.tlsCert, c.tlsKey, c.tlsClientCA, log)
	if err != nil {
		return nil, nil, err
	}
	return credentials.NewTLS(files.serverConfig()), files, nil
}
