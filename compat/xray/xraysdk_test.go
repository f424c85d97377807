package compat

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-xray-sdk-go/daemoncfg"
	"github.com/aws/aws-xray-sdk-go/strategy/sampling"

	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/internal/xray/xraytest"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// TestXRaySDKForGo points the X-Ray SDK for Go's centralized sampler at the
// X-Ray API, as AWS_XRAY_DAEMON_ADDRESS would: it must load the rules
// (a request of the rule's service gets the rule's decision), report its
// counts with its 24-hex ClientID, and take the quota it is given: once its
// first target arrived it samples from the quota and no longer borrows,
// which it would if it read ReservoirQuotaTTL as already past.
//
// The SDK polls targets every 10 s on the wall clock and cannot be told
// otherwise, so this test takes about 25 s; it waits on reports, never on
// a time.
func TestXRaySDKForGo(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for two of the SDK's 10-second target polls")
	}
	ctx := context.Background()
	core, err := xraytest.New(time.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { core.Close() })
	reports := make(chan xray.Report, 100)
	core.Observe = func(r xray.Report) {
		select {
		case reports <- r:
		default:
		}
	}
	for _, r := range []rules.Rule{
		{Name: "never", Priority: 1, FixedRate: 0, ReservoirSize: 0, ServiceName: "compat-never"},
		{Name: "quota", Priority: 2, FixedRate: 0, ReservoirSize: 5, ServiceName: "compat-quota"},
	} {
		if _, err := core.CreateRule(ctx, xray.Rule{Rule: r}, nil); err != nil {
			t.Fatal(err)
		}
	}
	h, err := xray.NewHandler(core, xray.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	s, err := sampling.NewCentralizedStrategy()
	if err != nil {
		t.Fatal(err)
	}
	ep, err := daemoncfg.GetDaemonEndpointsFromString(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	s.LoadDaemonEndpoints(ep)

	decide := func(service string) *sampling.Decision {
		return s.ShouldTrace(&sampling.Request{Host: "shop.example", Method: "GET", URL: "/", ServiceName: service, ServiceType: "AWS::EC2::Instance"})
	}
	// Traffic for the quota rule, about 20 requests a second, until the
	// test ends; the SDK reports it every 10 s.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				decide("compat-quota")
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })

	deadline := time.After(2 * time.Minute)
	// The rules arrive: the "never" rule decides for its service.
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		d := decide("compat-never")
		if d.Rule != nil && *d.Rule == "never" {
			if d.Sample {
				t.Errorf("rule never (fixed rate 0, no reservoir) sampled")
			}
			break
		}
		select {
		case <-deadline:
			t.Fatal("the SDK never applied the rules it was served")
		case <-poll.C:
		}
	}

	// The first report of the quota rule has borrowed traces (no quota
	// yet); the one after it only quota.
	var seen int
	for seen < 2 {
		select {
		case <-deadline:
			t.Fatalf("%d reports of the quota rule in two minutes", seen)
		case r := <-reports:
			if len(r.ClientID) != 24 {
				t.Errorf("ClientID %q", r.ClientID)
			}
			for _, st := range r.Statistics {
				if st.Rule != "quota" || st.Requests == 0 {
					continue
				}
				seen++
				t.Logf("report %d: %+v", seen, st)
				if seen == 2 && (st.Borrowed != 0 || st.Sampled == 0) {
					t.Errorf("after its quota arrived the SDK sampled %d and borrowed %d", st.Sampled, st.Borrowed)
				}
			}
		}
	}
}
