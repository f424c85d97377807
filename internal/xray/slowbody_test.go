package xray_test

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/xray"
)

// TestSlowBody: a client that sends its headers and then trickles (here:
// stops sending) its body is answered with InvalidRequestException once
// the body timeout passes, instead of holding the connection for as long
// as it likes (slowloris). The test only waits for the answer; its own
// deadline is a guard against hanging, far above the timeout.
func TestSlowBody(t *testing.T) {
	e := newEnv(t, xray.Options{BodyTimeout: 50 * time.Millisecond})
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("POST /GetSamplingRules HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("X-Amzn-Errortype") != "InvalidRequestException" || !strings.Contains(b.String(), "did not arrive") {
		t.Errorf("stalled body: %d %s %s", resp.StatusCode, resp.Header.Get("X-Amzn-Errortype"), b.String())
	}
	// A prompt client on the same server is served as before.
	e.post("/GetSamplingRules", "{}").ok(t)
}
