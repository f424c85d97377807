package faults

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// impairment is what the proxy does to the link between the replicas and
// Redis. The zero value passes bytes through untouched.
//
// Network emulation (netem) would be the real thing, but the kernels this
// runs on (CI runners, containers) often lack the sch_netem module, so the
// proxy emulates at the TCP level what a bad network does to a TCP
// connection: it adds latency, it stalls the stream for a retransmission
// timeout where a segment was lost (and everything behind it waits: TCP
// delivers in order), and it resets connections.
type impairment struct {
	// delay is added to every chunk of bytes, in each direction.
	delay time.Duration
	// loss is the chance that a chunk was "lost" on the way, and stall how
	// long TCP takes to retransmit it: the chunk and all behind it wait.
	loss  float64
	stall time.Duration
	// cutEvery resets one open connection (both sides, with RST) this
	// often; 0 never.
	cutEvery time.Duration
}

// proxy forwards TCP connections from a loopback port to target, impaired
// as told. Its methods are safe for concurrent use.
type proxy struct {
	lis    net.Listener
	target string
	imp    atomic.Pointer[impairment]
	cuts   atomic.Int64

	mu     sync.Mutex
	links  map[*link]struct{}
	closed bool
	wg     sync.WaitGroup
	stop   chan struct{}
}

// link is one proxied connection.
type link struct {
	client, server net.Conn
	once           sync.Once
}

// reset closes both sides at once, with RST rather than FIN where it can,
// as a broken network path or a middlebox timing out would.
func (l *link) reset() {
	l.once.Do(func() {
		for _, c := range []net.Conn{l.client, l.server} {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = c.Close()
		}
	})
}

func newProxy(target string) (*proxy, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{lis: lis, target: target, links: map[*link]struct{}{}, stop: make(chan struct{})}
	p.imp.Store(&impairment{})
	p.wg.Add(2)
	go p.accept()
	go p.cutter()
	return p, nil
}

func (p *proxy) addr() string { return p.lis.Addr().String() }

// set changes the impairment of every open connection and of those to come.
func (p *proxy) set(imp impairment) { p.imp.Store(&imp) }

// close stops accepting, resets every connection and waits for the proxy's
// goroutines.
func (p *proxy) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.stop)
	_ = p.lis.Close()
	for l := range p.links {
		l.reset()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return // closed
		}
		s, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			// Redis is down: the client sees its connection close, as it
			// would see a refused one.
			_ = c.Close()
			continue
		}
		l := &link{client: c, server: s}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			l.reset()
			return
		}
		p.links[l] = struct{}{}
		p.wg.Add(4)
		p.mu.Unlock()
		go p.pipe(l, c, s)
		go p.pipe(l, s, c)
	}
}

// chunk is bytes read from one side, due for the other at due.
type chunk struct {
	data []byte
	due  time.Time
}

// pipe copies src to dst through a queue, so that delay adds latency
// without cutting throughput. It runs two goroutines, each counted in p.wg.
func (p *proxy) pipe(l *link, src, dst net.Conn) {
	q := make(chan chunk, 256)
	go func() {
		defer p.wg.Done()
		defer close(q)
		rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				imp := p.imp.Load()
				due := time.Now().Add(imp.delay)
				if imp.loss > 0 && rng.Float64() < imp.loss {
					due = due.Add(imp.stall)
				}
				q <- chunk{data: append([]byte(nil), buf[:n]...), due: due}
			}
			if err != nil {
				return
			}
		}
	}()
	defer p.wg.Done()
	defer func() {
		p.drop(l)
		// Drain the queue so that the reader, perhaps blocked on it, sees
		// its connection closed and ends.
		for range q {
		}
	}()
	for c := range q {
		if d := time.Until(c.due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-p.stop:
				t.Stop()
				return
			}
		}
		if _, err := dst.Write(c.data); err != nil {
			return
		}
	}
}

// drop ends a link once either direction ends: a half-open connection is
// of no use to a Redis client.
func (p *proxy) drop(l *link) {
	l.reset()
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// cutter resets a random open connection every cutEvery, while that is set.
func (p *proxy) cutter() {
	defer p.wg.Done()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-p.stop:
			return
		case now := <-t.C:
			every := p.imp.Load().cutEvery
			if every <= 0 || now.Sub(last) < every {
				continue
			}
			last = now
			p.cutOne()
		}
	}
}

func (p *proxy) cutOne() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for l := range p.links { // map order is random enough
		p.cuts.Add(1) // before: the client may see the cut at once
		l.reset()
		return
	}
}
