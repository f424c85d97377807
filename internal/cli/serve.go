package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/budget/controller"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/internal/expiry"
	"github.com/tracesampling/controlplane/internal/fleet"
	"github.com/tracesampling/controlplane/internal/jaeger"
	"github.com/tracesampling/controlplane/internal/sampling"
	"github.com/tracesampling/controlplane/internal/server"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/internal/store/redisstore"
	"github.com/tracesampling/controlplane/internal/tlsfiles"
	"github.com/tracesampling/controlplane/internal/ui"
	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/internal/xraycore"
)

// serveConfig is everything `serve` can be told, by flag or environment.
type serveConfig struct {
	grpcAddr    string
	httpAddr    string
	jaegerAddr  string
	xrayAddr    string
	xrayAccount string
	xrayClients int // X-Ray clients' claims (client and rule pairs) held
	redisURL    string
	redisPrefix string
	reshard     bool // lay a grown Cluster's shards out again by itself
	replicaWait time.Duration
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
	tlsPoll     time.Duration // how often to look for renewed TLS files; 0: tlsfiles.PollEvery (tests shorten it)
	access      accessConfig
	auditKeep   int // audit entries the log of all rules keeps; 0: the store's default

	// Bounds on what clients can make a replica hold (see server.Options).
	maxStreams        int
	maxConns          int
	maxStreamsPerConn int
	maxRequestBytes   int
	maxHeaderBytes    int
	windowBytes       int
	keepaliveMinTime  time.Duration
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

func serveFlags() (*pflag.FlagSet, *serveConfig) {
	c := &serveConfig{}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.StringVar(&c.grpcAddr, "grpc-addr", ":7070", "gRPC listen address")
	fs.StringVar(&c.httpAddr, "http-addr", ":7071", "HTTP listen address for /healthz, /readyz, /metrics and the dashboard at /ui (empty: off)")
	fs.StringVar(&c.jaegerAddr, "jaeger-addr", ":5778", "HTTP listen address of Jaeger's remote sampling protocol, GET /sampling?service= (empty: off; its gRPC form is on --grpc-addr)")
	fs.StringVar(&c.xrayAddr, "xray-addr", ":2000", "HTTP listen address of the AWS X-Ray sampling API, for X-Ray SDKs and daemons (AWS_XRAY_DAEMON_ADDRESS=host:2000; empty: off)")
	fs.StringVar(&c.xrayAccount, "xray-account", xray.DefaultAccount, "AWS `account` (12 digits) that the X-Ray API's rule ARNs name, with --xray-region")
	fs.IntVar(&c.xrayClients, "xray-max-clients", xraycore.DefaultMaxClients, "X-Ray clients (client and rule pairs) whose last report a replica remembers, to retract it from the fleet's split when the next comes (X-Ray clients echo no receipts)")
	fs.StringVar(&c.redisURL, "redis-url", "", "Redis URL: redis://, rediss://, redis+sentinel://, redis+cluster:// (empty: embedded store)")
	fs.StringVar(&c.redisPrefix, "redis-prefix", "tsc", "prefix of every Redis key, to share one Redis between control planes")
	fs.BoolVar(&c.reshard, "redis-reshard", true, "on a Redis Cluster, lay the report path's shards out again, one per master, when a master has held none for two reads a minute apart (a Cluster grown by add-node and rebalance; docs/SHARDING.md); false: only warn, and reshard with 'controlplane redis reshard'")
	fs.DurationVar(&c.replicaWait, "redis-replica-wait", redisstore.DefaultReplicaWait, "how long a rule or budget edit waits for the Redis master's online replicas to confirm it (WAIT) before it is acknowledged (0: no wait)")
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
	fs.IntVar(&c.maxStreams, "max-streams", server.DefaultMaxStreams, "calls (SDK streams and unary calls) open at once on the replica; more are refused with RESOURCE_EXHAUSTED")
	fs.IntVar(&c.maxConns, "max-connections", server.DefaultMaxConnections, "client connections open at once; more wait to be accepted until one closes")
	fs.IntVar(&c.maxStreamsPerConn, "max-streams-per-connection", server.DefaultMaxStreamsPerConnection, "calls open at once on one client connection (HTTP/2 max concurrent streams)")
	fs.IntVar(&c.maxRequestBytes, "max-request-bytes", server.DefaultMaxRecvMsgBytes, "largest request message; larger ones are refused with RESOURCE_EXHAUSTED")
	fs.IntVar(&c.maxHeaderBytes, "max-header-bytes", server.DefaultMaxHeaderBytes, "largest request metadata (HTTP/2 header list)")
	fs.IntVar(&c.windowBytes, "flow-control-window", server.DefaultStreamWindowBytes, "HTTP/2 flow-control window of each stream, in bytes (at least 65536; a connection's is 16 times it)")
	fs.DurationVar(&c.keepaliveMinTime, "keepalive-min-time", server.DefaultKeepaliveMinTime, "clients that send keepalive pings more often are disconnected")
	fs.IntVar(&c.auditKeep, "audit-log-entries", 0, fmt.Sprintf("audit entries the log of all rules keeps, the oldest dropped first (0: %d with the embedded store, %d with Redis); each rule's own history keeps at least its newest %d besides", memstore.DefaultMaxEvents, redisstore.DefaultMaxEvents, memstore.DefaultMaxRuleEvents))
	c.access.register(fs)
	return fs, c
}

// applyEnv sets every flag not given on the command line from its
// environment variable.
func applyEnv(fs *pflag.FlagSet, lookup func(string) (string, bool)) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
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
	sampling.BoostStore // the report path takes it from the ledger's store
	server.BudgetStore
	controller.Store
	catalog.Source
	tokenSource
	Ping(ctx context.Context) error
	Close() error
}

func openStore(ctx context.Context, c *serveConfig, log *slog.Logger) (backend, error) {
	if c.redisURL == "" {
		if c.dataDir == "" {
			log.Warn("embedded store without --data-dir: rules are NOT persisted and are lost when the process stops")
		}
		s, err := memstore.New(memstore.Options{DataDir: c.dataDir, MaxEvents: c.auditKeep})
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
	wait := c.replicaWait
	if wait <= 0 {
		wait = -1 // redisstore's "never wait"; its 0 is the default
	}
	// go-redis logs through one logger per process, which serve owns: its
	// line per failed dial goes to DEBUG, since the replica says once when
	// the store is unreachable and once when it is back.
	redis.SetLogger(redisstore.Logger(log))
	s, err := redisstore.New(ctx, client, redisstore.Options{Prefix: c.redisPrefix, ReplicaWait: wait, MaxEvents: int64(c.auditKeep)})
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

const serveLong = `Runs the control plane: gRPC (rules, budgets, sampling, status, Jaeger's
SamplingManager, health, reflection) on --grpc-addr; /healthz, /readyz,
/metrics and the dashboard /ui on --http-addr; Jaeger's GET /sampling on
--jaeger-addr; the AWS X-Ray sampling API on --xray-addr.

Every flag can also be set as an environment variable: --redis-url as
CONTROLPLANE_REDIS_URL, --grpc-addr as CONTROLPLANE_GRPC_ADDR, and so on. A
flag on the command line wins.`

func newServeCmd() *cobra.Command {
	fs, c := serveFlags()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "run the control plane",
		Long:  serveLong,
		Args:  argsBetween(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd.Context(), fs, c, cmd.ErrOrStderr())
		},
	}
	cmd.Flags().AddFlagSet(fs)
	return cmd
}

// runServe checks serve's configuration, flags then environment, and serves.
func runServe(ctx context.Context, fs *pflag.FlagSet, c *serveConfig, stderr io.Writer) error {
	if err := applyEnv(fs, os.LookupEnv); err != nil {
		return usageError(err)
	}
	if err := c.checkBounds(); err != nil {
		return usageError(err)
	}
	log, err := newLogger(stderr, c.logLevel, c.logFormat)
	if err != nil {
		return usageError(err)
	}
	return serve(ctx, c, log, nil)
}

// listening is where serve listens; empty for a port that is off.
type listening struct {
	GRPC, HTTP, Jaeger, XRay string
}

// serve runs the control plane until ctx ends. If ready is not nil it receives
// the bound addresses once every listener is up (tests use it to find ports
// chosen by the kernel).
func serve(ctx context.Context, c *serveConfig, log *slog.Logger, ready chan<- listening) error {
	creds, certs, err := c.serverCredentials(log)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, c, log)
	if err != nil {
		return err
	}
	defer st.Close()
	reg := prometheus.NewRegistry()
	acc, err := c.access.build(st, c.tlsClientCA != "", reg, log)
	if err != nil {
		return err
	}

	// Listen before building the server: server.New starts goroutines that
	// only srv.Stop ends, so no error return may come after it.
	glis, err := net.Listen("tcp", c.grpcAddr)
	if err != nil {
		return fmt.Errorf("--grpc-addr: %w", err)
	}
	// The HTTP ports, each optional: health, metrics and the dashboard;
	// Jaeger's remote sampling; X-Ray's sampling API.
	web := &httpPort{flag: "--http-addr", addr: c.httpAddr}
	jaegerPort := &httpPort{flag: "--jaeger-addr", addr: c.jaegerAddr}
	xrayPort := &httpPort{flag: "--xray-addr", addr: c.xrayAddr}
	ports := []*httpPort{web, jaegerPort, xrayPort}
	for i, p := range ports {
		if err := p.listen(); err != nil {
			glis.Close()
			for _, q := range ports[:i] {
				q.close()
			}
			return err
		}
	}

	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cat := catalog.New(st, catalog.Options{Logger: log})
	if err := cat.Load(ctx); err != nil {
		log.Warn("cannot load rules yet; will keep trying", "err", err)
	}
	jaegerSrv := jaeger.NewServer(catalogSource{cat: cat, now: time.Now}, jaeger.NewEstimator(jaeger.EstimatorOptions{}), jaeger.Options{Logger: log})
	ctl := controller.New(st, cat, controller.Options{
		Interval: c.interval, Logger: log, Registerer: reg,
		Webhook: &budget.Webhook{Egress: acc.egress}, Secrets: acc.box,
	})
	srv := server.New(server.Options{
		Services:         []func(grpc.ServiceRegistrar){jaegerSrv.RegisterGRPC},
		Rules:            st,
		Catalog:          cat,
		Ledger:           st,
		Budgets:          st,
		Decider:          ctl,
		Waker:            ctl,
		ReportInterval:   c.interval,
		Logger:           log,
		Registerer:       reg,
		MaxConnectionAge: c.maxConnAge,
		Credentials:      creds,
		Guard:            acc.guard,
		Tokens:           st,
		Secrets:          acc.box,
		Egress:           acc.egress,

		MaxStreams:              c.maxStreams,
		MaxConnections:          c.maxConns,
		MaxStreamsPerConnection: uint32(c.maxStreamsPerConn),
		MaxRecvMsgBytes:         c.maxRequestBytes,
		MaxHeaderBytes:          uint32(c.maxHeaderBytes),
		StreamWindowBytes:       int32(c.windowBytes),
		KeepaliveMinTime:        c.keepaliveMinTime,
	})
	readiness := server.NewReadiness(srv, reg)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	running := 1
	go func() { errc <- srv.Serve(glis) }()
	dashboard := ui.Handler(ui.Options{
		Fleet: fleet.New(cat, st, c.interval, nil), Catalog: cat, Store: st, History: ui.BudgetHistory{Store: st}, Logger: log,
	})
	// Every HTTP route passes the guard, as every gRPC method does.
	web.handler = acc.guardHTTP(server.HTTPHandler(readiness, reg, c.debug, dashboard))
	jaegerPort.handler = acc.guardHTTP(jaegerSrv.Handler())
	xrayPort.handler = acc.guardHTTP(xrayHandler(c, acc, cat, st, srv, reg, log))
	for _, p := range ports {
		if p.serve(errc) {
			running++
		}
	}
	reaper := expiry.New(st, cat, expiry.Options{Interval: c.interval, Logger: log, Registerer: reg})
	var bg sync.WaitGroup
	if certs != nil {
		certs.Register(reg)
		bg.Add(1)
		go func() {
			defer bg.Done()
			certs.Watch(ctx, cmp.Or(c.tlsPoll, tlsfiles.PollEvery))
		}()
	}
	if p, ok := st.(persistenceReader); ok {
		bg.Go(func() { warnPersistence(ctx, p, log, 2*time.Second) })
	}
	if sc, ok := st.(shardCoverer); ok {
		unsharded := prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "controlplane_redis_masters_without_shard",
			Help: "Redis Cluster masters that serve slots but hold none of the report path's shards (docs/SHARDING.md, Growing a Cluster).",
		})
		reg.MustRegister(unsharded)
		var rs resharder
		if r, ok := st.(resharder); ok && c.reshard {
			rs = r
		}
		bg.Go(func() { watchShards(ctx, sc, rs, unsharded, log, 2*time.Second, time.Minute) })
	}
	bg.Add(3)
	bg.Go(func() { _ = acc.guard.Run(ctx) })
	go func() {
		defer bg.Done()
		ctl.Run(ctx)
	}()
	bg.Go(func() { reaper.Run(ctx) })
	go func() {
		defer bg.Done()
		readiness.Run(ctx, st.Ping, rulesLoaded(cat), 2*time.Second)
	}()
	go func() {
		defer bg.Done()
		_ = cat.Run(ctx)
	}()
	if acc.guard.Protected() {
		log.Warn("protected mode: " + auth.ProtectedMessage)
	}
	bound := listening{GRPC: glis.Addr().String(), HTTP: web.bound(), Jaeger: jaegerPort.bound(), XRay: xrayPort.bound()}
	log.Info("control plane serving", "grpc_addr", bound.GRPC, "http_addr", bound.HTTP, "jaeger_addr", bound.Jaeger, "xray_addr", bound.XRay, "tls", creds != nil, "client_certs", c.tlsClientCA != "")
	if ready != nil {
		ready <- bound
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
	for _, p := range ports {
		p.shutdown(stopCtx)
	}
	for ; running > 0; running-- {
		if err := <-errc; err != nil && serveErr == nil {
			serveErr = err
		}
	}
	log.Info("stopped")
	return serveErr
}

// xrayHandler is the X-Ray sampling API on the replica's own parts: its
// report pipeline (the gRPC API's), rule edits through package edit, the
// catalog; each request's principal scopes what it sees (auth.ScopeXRay),
// and SigV4 signatures are verified against the keys `tokens create --aws`
// issues (the guard is the Verifier). checkBounds has checked everything
// that can fail here.
func xrayHandler(c *serveConfig, acc *access, cat *catalog.Catalog, st backend, srv *server.Server, reg prometheus.Registerer, log *slog.Logger) http.Handler {
	core, err := xraycore.New(xraycore.Options{
		Catalog: cat, Rules: edit.NewRules(st), Sampling: srv.Sampling(), Fleet: fleet.New(cat, st, c.interval, nil),
		MaxClients: c.xrayClients, Registerer: reg,
	})
	if err == nil {
		var h *xray.Handler
		if h, err = xray.NewHandler(auth.ScopeXRay(core, acc.guard.Limiter()), xray.Options{
			Region: c.access.xrayRegion, Account: c.xrayAccount, Verifier: acc.guard, Logger: log,
		}); err == nil {
			return h
		}
	}
	// Unreachable after checkBounds; answer rather than panic.
	log.Error("the X-Ray API is off", "err", err)
	return http.NotFoundHandler()
}

// checkBounds refuses bounds that are no bounds, or that the server would
// silently change.
func (c *serveConfig) checkBounds() error {
	var errs []error
	for _, b := range []struct {
		flag      string
		v, lo, hi int
	}{
		{"--max-streams", c.maxStreams, 1, math.MaxInt32},
		{"--max-connections", c.maxConns, 1, math.MaxInt32},
		{"--max-streams-per-connection", c.maxStreamsPerConn, 1, math.MaxInt32},
		{"--max-request-bytes", c.maxRequestBytes, 1, math.MaxInt32},
		{"--max-header-bytes", c.maxHeaderBytes, 1, math.MaxInt32},
		// gRPC ignores a smaller window; the connection's is 16 times it.
		{"--flow-control-window", c.windowBytes, 1 << 16, math.MaxInt32 / 16},
	} {
		if b.v < b.lo || b.v > b.hi {
			errs = append(errs, fmt.Errorf("%s: want %d to %d, got %d", b.flag, b.lo, b.hi, b.v))
		}
	}
	if c.interval < minReportInterval || c.interval > maxReportInterval {
		errs = append(errs, fmt.Errorf("--report-interval must be from %v to %v (see -h for why), got %v", minReportInterval, maxReportInterval, c.interval))
	}
	if c.keepaliveMinTime <= 0 {
		errs = append(errs, fmt.Errorf("--keepalive-min-time: want more than 0, got %v", c.keepaliveMinTime))
	}
	if c.xrayClients < 1 {
		errs = append(errs, fmt.Errorf("--xray-max-clients: want at least 1, got %d", c.xrayClients))
	}
	if err := xray.CheckARNParts(c.access.xrayRegion, c.xrayAccount); err != nil {
		errs = append(errs, fmt.Errorf("--xray-region, --xray-account: %w", err))
	}
	return errors.Join(errs...)
}

// persistenceReader is a store that can tell what its Redis keeps on disk.
type persistenceReader interface {
	Persistence(ctx context.Context) (redisstore.Persistence, error)
}

// warnPersistence reads what Redis keeps on disk as soon as it answers (every
// retry until then), and warns if it is nothing: rules, budgets and spend
// live only there. Where CONFIG is refused (managed Redis) it says that it
// cannot tell.
func warnPersistence(ctx context.Context, r persistenceReader, log *slog.Logger, retry time.Duration) {
	t := time.NewTicker(retry)
	defer t.Stop()
	for {
		p, err := r.Persistence(ctx)
		switch {
		case err == nil && p.None():
			log.Warn("Redis persists nothing (appendonly no, no save schedule): a Redis restart loses every rule, budget and spend; " +
				"turn on its append-only file (see the README, Redis persistence)")
			return
		case err == nil && !p.Known:
			log.Info("cannot read Redis's persistence settings (CONFIG GET refused) and its append-only file is off: " +
				"make sure Redis keeps its data (see the README, Redis persistence)")
			return
		case err == nil:
			log.Info("redis persistence", "appendonly", p.AppendOnly, "save", p.Save)
			return
		case !errors.Is(err, store.ErrUnavailable):
			log.Warn("cannot read Redis's persistence settings", "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// shardCoverer is a store that can tell how its shards lie over a Redis
// Cluster's masters.
type shardCoverer interface {
	ShardCoverage(ctx context.Context) (redisstore.Coverage, error)
}

// resharder lays a Cluster's shards out again (redisstore.Store.Reshard).
type resharder interface {
	Reshard(ctx context.Context, force bool) (redisstore.Reshard, error)
}

// watchShards reads, every interval (every retry until Redis first
// answers), which Cluster masters hold none of the report path's shards,
// sets gauge to their number, and warns when that set changes to one that
// is not empty: a master added to a Cluster gets no share of the report
// path until the shards are laid out again. With rs, it lays them out
// again once a master was without a shard on two reads in a row, and no
// slot moved between them (a rebalance that moves slots to a new master
// has ended, or paused), or at once if a reshard stopped half way: every
// replica may, one does (the others find it busy, or done).
func watchShards(ctx context.Context, sc shardCoverer, rs resharder, gauge prometheus.Gauge, log *slog.Logger, retry, every time.Duration) {
	warned, slots := "", ""
	wait := retry
	for {
		c, err := sc.ShardCoverage(ctx)
		switch {
		case err == nil && !c.Cluster:
			return
		case err == nil:
			wait = every
			gauge.Set(float64(len(c.Unsharded)))
			now := strings.Join(c.Unsharded, ",")
			switch {
			case now != warned:
				if now != "" {
					log.Warn("Redis Cluster masters hold no shard of the report path: they take none of its load (docs/SHARDING.md, Growing a Cluster)",
						"masters", c.Unsharded, "shards", len(c.Shards), "cluster_masters", len(c.Masters), "reshard", rs != nil)
				}
				warned = now
			case now != "" && rs != nil && c.Slots == slots:
				reshardNow(ctx, rs, sc, gauge, log)
			}
			if c.Stuck {
				log.Warn("a reshard of the Redis Cluster's shards stopped half way: the report path is fenced until one finishes it (docs/SHARDING.md, A reshard)", "reshard", rs != nil)
				if rs != nil {
					reshardNow(ctx, rs, sc, gauge, log)
				}
			}
			slots = c.Slots
		case !errors.Is(err, store.ErrUnavailable):
			log.Warn("cannot read how the report path's shards lie over the Redis Cluster", "err", err)
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// reshardNow lays the shards out again and says what it did.
func reshardNow(ctx context.Context, rs resharder, sc shardCoverer, gauge prometheus.Gauge, log *slog.Logger) {
	res, err := rs.Reshard(ctx, false)
	switch {
	case errors.Is(err, redisstore.ErrReshardBusy):
		log.Debug("another replica is laying the report path's shards out", "err", err)
		return
	case err != nil:
		log.Warn("cannot lay the report path's shards out again over the Redis Cluster", "err", err)
		return
	case res.From == res.To:
		return
	}
	log.Info("laid the report path's shards out again over the Redis Cluster's masters",
		"generation", res.To, "shards", res.Tags, "ledgers_moved", res.Ledgers, "seqs_moved", res.Seqs, "fenced", res.Fenced)
	if c, err := sc.ShardCoverage(ctx); err == nil {
		gauge.Set(float64(len(c.Unsharded)))
	}
}

// errNoRules: the replica has not read the rules yet (it started while the
// store was away).
var errNoRules = errors.New("no rules loaded yet")

// rulesLoaded says whether a replica is ready: it has loaded the rules at
// least once, so that a load balancer sends it no SDK before it has rules to
// give. A store outage later does not undo it (see server.Readiness). What
// readiness means is decided here only.
func rulesLoaded(cat *catalog.Catalog) func(context.Context) error {
	return func(context.Context) error {
		if cat.Current().Version == 0 {
			return errNoRules
		}
		return nil
	}
}

// serverCredentials returns the gRPC server's TLS credentials and the files
// they come from, or nil for plaintext.
func (c *serveConfig) serverCredentials(log *slog.Logger) (credentials.TransportCredentials, *tlsfiles.Files, error) {
	if c.tlsCert == "" && c.tlsKey == "" {
		if c.tlsClientCA != "" {
			return nil, nil, usageError(errors.New("--tls-client-ca needs --tls-cert and --tls-key"))
		}
		return nil, nil, nil
	}
	if c.tlsCert == "" || c.tlsKey == "" {
		return nil, nil, usageError(errors.New("--tls-cert and --tls-key go together"))
	}
	files, err := tlsfiles.New(c.tlsCert, c.tlsKey, c.tlsClientCA, log)
	if err != nil {
		return nil, nil, err
	}
	return credentials.NewTLS(files.ServerConfig()), files, nil
}
