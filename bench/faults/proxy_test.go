package faults

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// noLeaks checks, when the test ends, that every goroutine it started is
// gone. It is registered first, so that it runs after every other cleanup.
func noLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// echoServer echoes every connection on a loopback port until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	conns := make(chan net.Conn, 16)
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			conns <- c
			go func() { _, _ = io.Copy(c, c) }()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-done
		close(conns)
		for c := range conns {
			c.Close()
		}
	})
	return lis.Addr().String()
}

func TestProxyForwardsImpaired(t *testing.T) {
	noLeaks(t)
	tests := []struct {
		name string
		imp  impairment
	}{
		{"clear", impairment{}},
		{"delayed", impairment{delay: 5 * time.Millisecond}},
		{"lossy", impairment{loss: 0.5, stall: 5 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := newProxy(echoServer(t))
			if err != nil {
				t.Fatal(err)
			}
			defer p.close()
			p.set(tt.imp)
			c, err := net.Dial("tcp", p.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Many small writes: order and content must survive stalls.
			var want bytes.Buffer
			for i := range 200 {
				msg := []byte{byte(i), byte(i >> 8), 'x'}
				want.Write(msg)
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
			}
			got := make([]byte, want.Len())
			_ = c.SetReadDeadline(time.Now().Add(time.Minute))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want.Bytes()) {
				t.Error("the bytes came back changed or out of order")
			}
		})
	}
}

// TestProxyCuts: with cutEvery set, an open connection is reset, and the
// client sees its connection end.
func TestProxyCuts(t *testing.T) {
	noLeaks(t)
	p, err := newProxy(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	c, err := net.Dial("tcp", p.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	p.set(impairment{cutEvery: time.Millisecond})
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	_, err = c.Read(buf)
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("read after the cut: %v, want the connection reset or closed", err)
	}
	if p.cuts.Load() == 0 {
		t.Error("no cut counted")
	}
}

// TestProxyTargetDown: while the target refuses connections, a client's
// connection is closed at once rather than left hanging.
func TestProxyTargetDown(t *testing.T) {
	noLeaks(t)
	addr, err := freeAddr() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	p, err := newProxy(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	c, err := net.Dial("tcp", p.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(time.Minute))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read through a proxy to nothing succeeded")
	}
}
