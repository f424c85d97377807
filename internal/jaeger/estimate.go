package jaeger

import (
	"sync"
	"time"
)

// Defaults of EstimatorOptions.
const (
	DefaultWindow     = time.Minute
	DefaultMaxPollers = 100_000
)

// EstimatorOptions configure an Estimator. Zero values take the defaults.
type EstimatorOptions struct {
	// Window is the clients' poll interval: a poller counts for one to two
	// windows after its last poll. Default one minute, the interval of the
	// OpenTelemetry Go, Java and Python samplers.
	Window time.Duration
	// MaxPollers bounds the pollers tracked over all services (about 100
	// bytes each). Default 100,000.
	MaxPollers int
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Estimator counts a service's instances as the distinct pollers seen for it
// in the last one to two windows, since Jaeger clients report no counts. It
// is in memory, per replica, and safe for concurrent use.
//
// Each service keeps two generations of pollers, the current window's and the
// one before; a poll moves its poller into the current one, and a window's
// end drops the older one. A poll costs one map look-up, and every service
// not polled for a window is swept once per window.
//
// Memory is bounded by MaxPollers. A client can make the table grow (every
// new address and service name is an entry), so once it is full a new poller
// is not recorded until old ones expire: it still counts itself, but not its
// unrecorded peers, so a fleet that big is under-counted and its instances'
// lower bounds come out larger than R ÷ instances.
type Estimator struct {
	window time.Duration
	max    int
	now    func() time.Time

	mu       sync.Mutex
	services map[string]*generations
	n        int // pollers tracked, over all services
	swept    time.Time
}

type generations struct {
	start     time.Time // when cur began
	cur, prev map[string]struct{}
}

// NewEstimator returns an empty estimator.
func NewEstimator(opts EstimatorOptions) *Estimator {
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.MaxPollers <= 0 {
		opts.MaxPollers = DefaultMaxPollers
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Estimator{window: opts.Window, max: opts.MaxPollers, now: opts.Now, services: map[string]*generations{}, swept: opts.Now()}
}

// Seen records a poll of service by poller and returns the service's
// estimated instance count, this poller included (at least 1).
func (e *Estimator) Seen(service, poller string) int {
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if now.Sub(e.swept) >= e.window {
		e.sweep(now)
	}
	g := e.services[service]
	if g == nil {
		if e.n >= e.max {
			return 1
		}
		g = &generations{start: now, cur: map[string]struct{}{}}
		e.services[service] = g
	}
	e.rotate(g, now)
	if _, ok := g.cur[poller]; !ok {
		switch _, old := g.prev[poller]; {
		case old:
			delete(g.prev, poller)
			g.cur[poller] = struct{}{}
		case e.n < e.max:
			g.cur[poller] = struct{}{}
			e.n++
		default:
			return len(g.cur) + len(g.prev) + 1
		}
	}
	return len(g.cur) + len(g.prev)
}

// Tracked returns how many pollers are held, over all services.
func (e *Estimator) Tracked() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

// rotate ends g's current window if it is over.
func (e *Estimator) rotate(g *generations, now time.Time) {
	switch age := now.Sub(g.start); {
	case age < e.window:
		return
	case age < 2*e.window:
		e.n -= len(g.prev)
		g.prev = g.cur
	default:
		e.n -= len(g.prev) + len(g.cur)
		g.prev = nil
	}
	g.cur = map[string]struct{}{}
	g.start = now
}

// sweep rotates every service and forgets those with no poller left.
func (e *Estimator) sweep(now time.Time) {
	for name, g := range e.services {
		e.rotate(g, now)
		if len(g.cur)+len(g.prev) == 0 {
			delete(e.services, name)
		}
	}
	e.swept = now
}
