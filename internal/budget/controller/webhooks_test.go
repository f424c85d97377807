package controller_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/secrets"
)

// fakeResolver answers host names from a map, as DNS would.
type fakeResolver map[string]string

func (r fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return []netip.Addr{netip.MustParseAddr(a)}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// syncBuffer is a log that a test reads while the controller writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestWebhooksInsideTheNetwork: budget webhooks to loopback and to the
// cloud metadata service are refused when the budget is written, and one
// whose name resolves to such an address when the alert is delivered,
// without a connection to it; the operator's allow-list opens a receiver on
// loopback, which gets the alert signed with the budget's secret, sealed at
// rest meanwhile.
func TestWebhooksInsideTheNetwork(t *testing.T) {
	var recvMu sync.Mutex
	var received []string // "signature body"
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		recvMu.Lock()
		received = append(received, r.Header.Get(budget.SignatureHeader)+" "+string(b))
		recvMu.Unlock()
	}))
	t.Cleanup(receiver.Close)

	var dialled []string
	var dialMu sync.Mutex
	egress, err := budget.NewEgress(budget.EgressOptions{
		Allow:    []string{"127.0.0.1/32"}, // the receiver, as --webhook-allow opens it
		Resolver: fakeResolver{"metadata.test": "169.254.169.254", "home.test": "127.0.0.2"},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dialMu.Lock()
			dialled = append(dialled, addr)
			dialMu.Unlock()
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	box, err := secrets.NewBox(bytes.Repeat([]byte{9}, secrets.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	now := func() time.Time { return time.Date(2026, 11, 10, 12, 0, 0, 0, time.UTC) }
	st := newMemStore(t)
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx := ctxT(t)
	rep := startReplica(t, st, replicaOptions{Now: now, Logger: log, Secrets: box, Webhook: &budget.Webhook{Egress: egress, Attempts: 1}})
	budgets, sampling, cat, ctl := rep.budgets, rep.sampling, rep.catalog, rep.ctl

	// Refused when written, naming the channel; nothing is stored.
	for _, url := range []string{"http://169.254.169.254/latest/meta-data/", "http://[::ffff:169.254.169.254]/", "http://localhost:8080/hook"} {
		_, err := budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{
			Name: "shop", MonthlyAmountMicros: 5_000, Channels: []*pb.NotificationChannel{{WebhookUrl: url}},
		}})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(strings.Join(fieldViolations(t, err), " "), "budget.channels[0].webhook_url") {
			t.Errorf("a webhook to %s: %v, want INVALID_ARGUMENT on budget.channels[0].webhook_url", url, err)
		}
	}
	if page, err := st.Budgets(ctx, 10, ""); err != nil || len(page.Budgets) != 0 {
		t.Fatalf("refused budgets were stored: %+v, %v", page.Budgets, err)
	}

	// Names are checked where they lead, at delivery.
	_, err = budgets.CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: &pb.Budget{
		Name: "shop", MonthlyAmountMicros: 5_000, Scope: &pb.BudgetScope{ServiceNames: []string{"shop"}}, SpendThresholds: []float64{0.5},
		Channels: []*pb.NotificationChannel{
			{WebhookUrl: receiver.URL + "/hook", Secret: "s3cret"},
			{WebhookUrl: "http://metadata.test/latest/meta-data/", Secret: "s3cret"},
			{WebhookUrl: "http://home.test/hook"},
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	stored, err := st.Budget(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	for i, ch := range stored.Channels[:2] {
		if !secrets.IsSealed(ch.Secret) || strings.Contains(ch.Secret, "s3cret") {
			t.Errorf("channel %d's secret is stored as %q, not sealed", i, ch.Secret)
		}
	}
	if err := cat.LoadBudgets(ctx); err != nil {
		t.Fatal(err)
	}

	// 2,500 traces of a cap of 1,000: alerts fire (50 %, exhausted…).
	if _, err := sampling.GetSamplingTargets(ctx, &pb.GetSamplingTargetsRequest{ClientId: "c", ServiceName: "shop",
		Statistics: []*pb.SamplingStatistics{{RuleName: "Default", RequestCount: 50_000, SampledCount: 2_500}}}); err != nil {
		t.Fatal(err)
	}
	if err := ctl.Step(ctx, now()); err != nil {
		t.Fatal(err)
	}
	ctl.Wait()
	recvMu.Lock()
	if len(received) == 0 {
		t.Error("the allowed receiver got no alert")
	}
	for _, r := range received {
		sig, body, _ := strings.Cut(r, " ")
		if want := budget.Sign("s3cret", []byte(body)); sig != want {
			t.Errorf("the receiver got signature %q, want %q (the secret opened for delivery)", sig, want)
		}
	}
	recvMu.Unlock()
	dialMu.Lock()
	for _, a := range dialled {
		if !strings.HasPrefix(a, "127.0.0.1:") {
			t.Errorf("dialled %s", a)
		}
	}
	dialMu.Unlock()
	out := logs.String()
	for _, want := range []string{"169.254.169.254 is a link-local", "127.0.0.2 is a loopback address"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log does not say the delivery was refused because %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "s3cret") {
		t.Error("the log shows a webhook secret")
	}
}
