package budget_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/pkg/rules"
)

func TestCheckAddr(t *testing.T) {
	e, err := budget.NewEgress(budget.EgressOptions{Allow: []string{"10.20.0.0/16", "192.168.1.10"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr string
		why  string // "" = allowed
	}{
		{"127.0.0.1", "loopback"},
		{"127.3.2.1", "loopback"},
		{"::1", "loopback"},
		{"::ffff:127.0.0.1", "loopback"},
		{"169.254.169.254", "link-local"},
		{"fe80::1", "link-local"},
		{"fe80::1%eth0", "link-local"},
		{"fd00:ec2::254", "private"}, // AWS's IPv6 metadata address
		{"10.1.2.3", "private"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"192.168.0.1", "private"},
		{"100.64.0.1", "carrier-grade NAT"},
		{"0.0.0.0", "unspecified"},
		{"0.1.2.3", "unspecified"},
		{"::", "unspecified"},
		{"224.0.0.1", "multicast"},
		{"239.1.2.3", "multicast"},
		{"ff02::1", "multicast"},
		{"255.255.255.255", "broadcast"},
		{"240.0.0.1", "reserved"},
		{"64:ff9b::a9fe:a9fe", "link-local"}, // 169.254.169.254 through NAT64
		{"2002:7f00:1::", "loopback"},        // 127.0.0.1 through 6to4
		{"10.20.3.4", ""},                    // allow-listed network
		{"192.168.1.10", ""},                 // allow-listed address
		{"192.168.1.11", "private"},
		{"8.8.8.8", ""},
		{"2606:4700::1111", ""},
		{"172.32.0.1", ""},
		{"64:ff9b::808:808", ""},
	}
	for _, tt := range tests {
		err := e.CheckAddr(netip.MustParseAddr(tt.addr))
		switch {
		case tt.why == "" && err != nil:
			t.Errorf("%s: refused: %v", tt.addr, err)
		case tt.why != "" && (!errors.Is(err, budget.ErrBlockedAddress) || !strings.Contains(err.Error(), tt.why)):
			t.Errorf("%s: %v, want a refusal saying %q", tt.addr, err, tt.why)
		}
	}
}

func TestValidateWebhooks(t *testing.T) {
	e, err := budget.NewEgress(budget.EgressOptions{Allow: []string{"hooks.internal"}})
	if err != nil {
		t.Fatal(err)
	}
	urls := []struct {
		url string
		ok  bool
	}{
		{"https://hooks.slack.com/services/T0/B0/x", true},
		{"http://hooks.internal:8080/alert", true},
		{"http://metadata.test/", true}, // a name: checked when dialled
		{"http://127.0.0.1:9000/hook", false},
		{"http://169.254.169.254/latest/meta-data/", false},
		{"http://[::1]/", false},
		{"http://[::ffff:169.254.169.254]/", false},
		{"http://localhost:8080/", false},
		{"http://LocalHost./", false},
		{"http://api.localhost/", false},
		{"http://2130706433/", false},
		{"http://0x7f.1/", false},
		{"http://0177.0.0.1/", false},
		{"http://10.0.0.5/", false},
		{"ftp://example.com/", false},
	}
	b := &budget.Budget{}
	for _, u := range urls {
		b.Channels = append(b.Channels, budget.Channel{WebhookURL: u.url})
	}
	err = budget.ValidateWebhooks(b, e)
	var ve *rules.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("ValidateWebhooks = %v, want a *rules.ValidationError", err)
	}
	bad := map[string]string{}
	for _, v := range ve.Violations {
		bad[v.Field] = v.Description
	}
	for i, u := range urls {
		field := fmt.Sprintf("channels[%d].webhook_url", i)
		if _, refused := bad[field]; refused == u.ok {
			t.Errorf("%s (%s): refused=%v (%q)", field, u.url, refused, bad[field])
		}
	}
	if d := bad["channels[4].webhook_url"]; !strings.Contains(d, "169.254.169.254 is a link-local") || !strings.Contains(d, "--webhook-allow") {
		t.Errorf("the metadata refusal says %q", d)
	}
}

// fakeNet resolves test names and records what would be dialled, never
// dialling anything: a broken guard shows as a recorded address, not as
// traffic to 127.0.0.1 or 169.254.169.254.
type fakeNet struct {
	names  map[string][]string
	mu     sync.Mutex
	dialed []string
}

func (f *fakeNet) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range f.names[host] {
		out = append(out, netip.MustParseAddr(s))
	}
	if out == nil {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return out, nil
}

func (f *fakeNet) Dial(_ context.Context, _, address string) (net.Conn, error) {
	f.mu.Lock()
	f.dialed = append(f.dialed, address)
	f.mu.Unlock()
	return nil, errors.New("fakeNet: not dialling")
}

func alert() *budget.Alert {
	return &budget.Alert{ID: "1", Budget: "shop", Kind: budget.AlertSpend, Threshold: 0.8, Time: time.Date(2026, 11, 10, 0, 0, 0, 0, time.UTC), MonthStart: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
}

// TestDeliveryRefusedAfterResolution: names that resolve inside the
// network are refused at the dial, before any connection.
func TestDeliveryRefusedAfterResolution(t *testing.T) {
	fn := &fakeNet{names: map[string][]string{
		"metadata.test": {"169.254.169.254"},
		"evil.test":     {"127.0.0.1", "::1"},
		"mixed.test":    {"10.0.0.1", "198.51.100.7"},
	}}
	e, err := budget.NewEgress(budget.EgressOptions{Resolver: fn, Dial: fn.Dial})
	if err != nil {
		t.Fatal(err)
	}
	w := &budget.Webhook{Egress: e, Attempts: 1}
	for _, u := range []string{"http://metadata.test/latest/meta-data/", "http://evil.test:8080/", "http://127.0.0.1:9/", "http://[::ffff:169.254.169.254]/"} {
		err := w.Deliver(t.Context(), budget.Channel{WebhookURL: u}, alert())
		if !errors.Is(err, budget.ErrBlockedAddress) {
			t.Errorf("%s: %v, want ErrBlockedAddress", u, err)
		}
	}
	// A name with an inside and an outside address: only the outside one
	// is dialled.
	_ = w.Deliver(t.Context(), budget.Channel{WebhookURL: "http://mixed.test/"}, alert())
	if fmt.Sprint(fn.dialed) != "[198.51.100.7:80]" {
		t.Errorf("dialled %q, want only 198.51.100.7:80", fn.dialed)
	}
}

// TestRedirectRefused: a receiver the operator allow-listed cannot bounce
// a delivery inside the network by redirecting it. The receiver listens on
// 127.0.0.1 and is allowed by the test's explicit allow-list; the victim on
// 127.0.0.2 (loopback too, so nothing leaves the machine even if the guard
// failed) is not allowed, and must see no request.
func TestRedirectRefused(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	var victimHits atomic.Int32
	victim := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { victimHits.Add(1) }))
	victim.Listener.Close()
	victim.Listener = lis
	victim.Start()
	defer victim.Close()
	_, victimPort, _ := net.SplitHostPort(lis.Addr().String())

	var delivered atomic.Int32
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/to-victim-by-name":
			http.Redirect(w, r, "http://victim.test:"+victimPort+"/", http.StatusTemporaryRedirect)
		case "/to-victim-by-address":
			http.Redirect(w, r, "http://127.0.0.2:"+victimPort+"/", http.StatusFound)
		case "/to-itself":
			http.Redirect(w, r, "/ok", http.StatusTemporaryRedirect)
		case "/ok":
			delivered.Add(1)
		}
	}))
	defer receiver.Close()

	fn := &fakeNet{names: map[string][]string{"victim.test": {"127.0.0.2"}}}
	e, err := budget.NewEgress(budget.EgressOptions{Allow: []string{"127.0.0.1/32"}, Resolver: fn})
	if err != nil {
		t.Fatal(err)
	}
	w := &budget.Webhook{Egress: e, Attempts: 1}
	for _, path := range []string{"/to-victim-by-name", "/to-victim-by-address"} {
		err := w.Deliver(t.Context(), budget.Channel{WebhookURL: receiver.URL + path}, alert())
		if !errors.Is(err, budget.ErrBlockedAddress) {
			t.Errorf("%s: %v, want ErrBlockedAddress", path, err)
		}
	}
	if n := victimHits.Load(); n != 0 {
		t.Errorf("the victim got %d requests", n)
	}
	if err := w.Deliver(t.Context(), budget.Channel{WebhookURL: receiver.URL + "/to-itself"}, alert()); err != nil || delivered.Load() != 1 {
		t.Errorf("a redirect within the allowed receiver: %v, delivered %d", err, delivered.Load())
	}
	// Without the allow-list the receiver itself is refused.
	if err := (&budget.Webhook{Attempts: 1}).Deliver(t.Context(), budget.Channel{WebhookURL: receiver.URL + "/ok"}, alert()); !errors.Is(err, budget.ErrBlockedAddress) {
		t.Errorf("a loopback receiver with the default guard: %v", err)
	}
}
