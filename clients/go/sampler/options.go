package sampler

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/tracesampling/controlplane/pkg/rules"
)

// Option configures a Sampler.
type Option func(*config)

type config struct {
	endpoints     []string
	dialOptions   []grpc.DialOption
	creds         credentials.TransportCredentials
	service       string
	serviceType   string
	resource      *resource.Resource
	resourceAttrs map[string]string // WithResourceAttributes's
	// instance is the resource the sampler declares (finish): the
	// resource's attributes that fit the control plane's bounds, then
	// resourceAttrs.
	instance       map[string]string
	clientID       string
	interval       time.Duration
	log            *slog.Logger
	clock          Clock
	fallbackPerSec float64
	fallbackRate   float64
	firstRules     time.Duration // WithFirstRulesWait
	backoffBase    time.Duration
	backoffMax     time.Duration
	firstReport    time.Duration
	disableStreams bool
	manual         bool
	anomaly        func(sdktrace.ReadOnlySpan) bool // nil: DefaultAnomaly
}

// WithEndpoint sets the control plane's gRPC target: "host:port", or any
// gRPC name such as "dns:///controlplane.internal:7070". Every address the
// name resolves to is used, round robin: each stream goes to one, and when
// its replica fails, the next stream goes to another that is up. Default:
// the CONTROLPLANE_ENDPOINT environment variable (several endpoints
// separated by commas, as WithEndpoints), else "localhost:7070".
func WithEndpoint(target string) Option { return func(c *config) { c.endpoints = []string{target} } }

// WithEndpoints sets several control plane replicas' addresses
// ("host:port" each), used round robin as WithEndpoint's resolved
// addresses are: streams spread over the replicas, and move to one that is
// up when theirs fails.
func WithEndpoints(addrs ...string) Option {
	return func(c *config) { c.endpoints = append([]string(nil), addrs...) }
}

// WithTransportCredentials sets TLS (or other) credentials. Default: plaintext.
func WithTransportCredentials(tc credentials.TransportCredentials) Option {
	return func(c *config) { c.creds = tc }
}

// WithDialOptions adds gRPC dial options, e.g. per-RPC credentials or
// interceptors.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *config) { c.dialOptions = append(c.dialOptions, opts...) }
}

// WithService sets the service name and type that rules are resolved for.
// Default: the resource's service.name (OTEL_SERVICE_NAME) and no type.
func WithService(name, serviceType string) Option {
	return func(c *config) { c.service, c.serviceType = name, serviceType }
}

// WithResource takes the service name from an OpenTelemetry resource, when
// WithService is not given, and the resource attributes the sampler
// declares to the control plane: rules may match them (a rule's
// resource_attributes, such as deployment.environment.name=staging), so
// that the instances of a service in production and in staging, or of its
// latest release, get rules of their own. Default: resource.Default(),
// which reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES. Attributes
// the control plane would refuse are left out (keys over 64 characters,
// which no rule can name, and values over 256, such as long command
// lines); values that are not strings are declared in their string form
// (attribute.Value.String).
func WithResource(r *resource.Resource) Option { return func(c *config) { c.resource = r } }

// WithResourceAttributes adds resource attributes to those the resource
// gives (WithResource), replacing any of the same key, for rules'
// resource_attributes to match: deployment.environment.name=production,
// service.version=2.4.1. New fails if they break the control plane's
// bounds (rules.ValidateResource: at most 64 attributes, keys of 1-64
// characters, values of at most 256).
func WithResourceAttributes(attrs map[string]string) Option {
	return func(c *config) {
		if c.resourceAttrs == nil {
			c.resourceAttrs = map[string]string{}
		}
		for k, v := range attrs {
			c.resourceAttrs[k] = v
		}
	}
}

// WithClientID sets this instance's id, 1-64 characters. Each running
// instance needs its own: the control plane bills a client's reports once
// each by their number, so two instances sharing an id would lose each
// other's counts. (A process restarted with the same id is fine: its
// numbers start above the last ones.) Default: 12 random bytes in hex.
func WithClientID(id string) Option { return func(c *config) { c.clientID = id } }

// WithReportInterval overrides the report interval the control plane asks
// for. Default: the server's (10 s unless configured otherwise).
func WithReportInterval(d time.Duration) Option { return func(c *config) { c.interval = d } }

// WithLogger sets the logger for connection events. Default: slog.Default().
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// WithClock replaces the clock, for tests. With it, every decision reads the
// clock directly.
func WithClock(clk Clock) Option { return func(c *config) { c.clock = clk } }

// WithFallback sets the local default used before the first rules arrive and
// after the last ones expire: tracesPerSecond, then fixedRate of the rest.
// Default 1 and 0.05.
func WithFallback(tracesPerSecond, fixedRate float64) Option {
	return func(c *config) { c.fallbackPerSec, c.fallbackRate = tracesPerSecond, fixedRate }
}

// WithFirstRulesWait sets how long a new sampler waits for its first rules
// before the local default decides: until then it samples nothing of its
// own (a sampled parent is still followed). A fleet that starts together
// would otherwise take the local default's traces on every instance at
// once (1,000 instances: 1,000 traces in their first second, ten times a
// reservoir of 100) in the moment before rules that usually come within
// it. Default 1 s; 0 decides by the local default from the start.
func WithFirstRulesWait(d time.Duration) Option { return func(c *config) { c.firstRules = d } }

// WithUnaryOnly makes the sampler poll with unary calls instead of holding a
// stream, for environments that cannot keep a connection (functions).
func WithUnaryOnly() Option { return func(c *config) { c.disableStreams = true } }

// WithManualReports makes the sampler talk to the control plane only when
// Sync is called (and once more on Shutdown), with unary calls, never from
// a goroutine of its own: for a process that is frozen between pieces of
// work (a function on AWS Lambda or Cloud Run, where a background timer
// fires at a random point of the next invocation), which calls Sync at the
// end of each, and for tests that move a clock of their own.
func WithManualReports() Option { return func(c *config) { c.manual, c.disableStreams = true, true } }

func defaultConfig() config {
	return config{
		endpoints:      strings.Split(envOr("CONTROLPLANE_ENDPOINT", "localhost:7070"), ","),
		creds:          insecure.NewCredentials(),
		fallbackPerSec: 1,
		fallbackRate:   0.05,
		firstRules:     time.Second,
		backoffBase:    200 * time.Millisecond,
		backoffMax:     30 * time.Second,
		firstReport:    time.Second,
	}
}

func (c *config) finish() {
	r := c.resource
	if r == nil {
		r = resource.Default()
	}
	if c.service == "" {
		if v, ok := r.Set().Value(attribute.Key("service.name")); ok {
			c.service = v.AsString()
		}
	}
	c.instance = map[string]string{}
	for it := r.Iter(); it.Next(); {
		kv := it.Attribute()
		k, v := string(kv.Key), kv.Value.String()
		if len(rules.ValidateResource("", map[string]string{k: v})) == 0 {
			c.instance[k] = v
		}
	}
	for k, v := range c.resourceAttrs {
		c.instance[k] = v
	}
	if c.service == "" {
		c.service = "unknown_service"
	}
	if c.clientID == "" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		c.clientID = hex.EncodeToString(b[:])
	}
	if c.log == nil {
		c.log = slog.Default()
	}
}

// resolve returns the gRPC target to dial and the dial options that go
// with it: one endpoint is dialled as it is (gRPC resolves it); several get
// a resolver of their own that lists them.
func (c *config) resolve() (string, []grpc.DialOption, error) {
	addrs := make([]resolver.Address, 0, len(c.endpoints))
	for _, e := range c.endpoints {
		if e = strings.TrimSpace(e); e != "" {
			addrs = append(addrs, resolver.Address{Addr: e})
		}
	}
	switch len(addrs) {
	case 0:
		return "", nil, errors.New("no control plane endpoint")
	case 1:
		return addrs[0].Addr, nil, nil
	}
	// The scheme is this connection's alone (WithResolvers).
	r := manual.NewBuilderWithScheme("controlplane")
	r.InitialState(resolver.State{Addresses: addrs})
	return r.Scheme() + ":///replicas", []grpc.DialOption{grpc.WithResolvers(r)}, nil
}

// target names the endpoints, for logs.
func (c *config) target() string { return strings.Join(c.endpoints, ",") }

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
