package compat

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsxray "github.com/aws/aws-sdk-go-v2/service/xray"
	"github.com/aws/aws-sdk-go-v2/service/xray/types"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/internal/fleet"
	"github.com/tracesampling/controlplane/internal/sampling"
	"github.com/tracesampling/controlplane/internal/store/memstore"
	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/internal/xraycore"
	"github.com/tracesampling/controlplane/pkg/clocktest"
)

// editor takes every request as an editor's (the guard's part, which
// auth_test.go checks with real keys).
type editor struct{}

func (editor) Verify(ctx context.Context, _ *http.Request, _ []byte, _ *xray.Signature) (context.Context, error) {
	return auth.NewContext(ctx, &auth.Principal{Name: "ci", Role: auth.RoleEditor, Kind: auth.KindAccessKey}), nil
}

// TestBoostSeenByAWSSDK: the AWS SDK for Go v2's X-Ray client against the
// X-Ray API on the real core (embedded store, a clock the test moves):
// a rule made with a SamplingRateBoost through the client, ten calm minutes
// of statistics and boost documents from four clients, then the anomalous
// share jumps tenfold: the SDK decodes a SamplingBoost in the rule's target
// document, above the fixed rate, at most MaxRate, its BoostRateTTL at most
// a minute ahead. (The X-Ray SDK for Go, v1.8.5 as pinned, knows nothing of
// boosts: it neither sends boost documents nor reads SamplingBoost.)
func TestBoostSeenByAWSSDK(t *testing.T) {
	ctx := context.Background()
	clk := clocktest.New(time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC))
	log := slog.New(slog.DiscardHandler)
	st, err := memstore.New(memstore.Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cat := catalog.New(st, catalog.Options{Logger: log})
	if err := cat.Load(ctx); err != nil {
		t.Fatal(err)
	}
	rep := sampling.New(sampling.Options{Catalog: cat, Store: st, Interval: 10 * time.Second, Now: clk.Now, Logger: log})
	t.Cleanup(rep.Close)
	core, err := xraycore.New(xraycore.Options{Catalog: cat, Rules: edit.NewRules(st, edit.WithClock(clk.Now)), Sampling: rep,
		Fleet: fleet.New(cat, st, 10*time.Second, clk.Now), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	h, err := xray.NewHandler(core, xray.Options{Region: "eu-west-3", Account: "123456789012", Now: clk.Now, Logger: log, Verifier: editor{}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	client := awsxray.NewFromConfig(aws.Config{
		Region: "eu-west-3",
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "not-a-secret", Source: "test"}, nil
		}),
		HTTPClient: srv.Client(),
		Retryer:    func() aws.Retryer { return aws.NopRetryer{} },
	}, func(o *awsxray.Options) { o.BaseEndpoint = aws.String(srv.URL) })

	r := checkoutRule()
	r.ReservoirSize, r.FixedRate = 0, 0.005
	r.SamplingRateBoost = &types.SamplingRateBoost{MaxRate: 0.25, CooldownWindowMinutes: 5}
	if _, err := client.CreateSamplingRule(ctx, &awsxray.CreateSamplingRuleInput{SamplingRule: r}); err != nil {
		t.Fatal(err)
	}

	const clients, requests = 4, 500 // per client and 10 s
	var (
		boosts = map[time.Time]float64{} // BoostRateTTL → highest rate
		carry  [clients]float64
	)
	for step := range 14 * 6 * clients {
		clk.Add(10 * time.Second / clients)
		now := clk.Now()
		share := 0.005
		if step >= 10*6*clients {
			share = 0.05
		}
		i := step % clients
		carry[i] += requests * share
		anomalies := math.Floor(carry[i])
		carry[i] -= anomalies
		id := fmt.Sprintf("%024x", i+1)
		out, err := client.GetSamplingTargets(ctx, &awsxray.GetSamplingTargetsInput{
			SamplingStatisticsDocuments: []types.SamplingStatisticsDocument{{ClientID: aws.String(id), RuleName: aws.String("checkout"),
				RequestCount: requests, SampledCount: 2, Timestamp: aws.Time(now)}},
			SamplingBoostStatisticsDocuments: []types.SamplingBoostStatisticsDocument{{RuleName: aws.String("checkout"), ServiceName: aws.String("shop-eu"),
				TotalCount: requests, AnomalyCount: int32(anomalies), Timestamp: aws.Time(now)}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.UnprocessedStatistics)+len(out.UnprocessedBoostStatistics) > 0 || len(out.SamplingTargetDocuments) != 1 {
			t.Fatalf("step %d: %+v", step, out)
		}
		b := out.SamplingTargetDocuments[0].SamplingBoost
		if b == nil {
			continue
		}
		if step < 10*6*clients {
			t.Fatalf("a boost before the rise, at step %d: %+v", step, b)
		}
		if !(b.BoostRate > 0.005 && b.BoostRate <= 0.25) || b.BoostRateTTL == nil || !b.BoostRateTTL.After(now) || b.BoostRateTTL.Sub(now) > time.Minute {
			t.Errorf("step %d at %v: SamplingBoost{BoostRate: %v, BoostRateTTL: %v}", step, now, b.BoostRate, b.BoostRateTTL)
			continue
		}
		boosts[*b.BoostRateTTL] = math.Max(boosts[*b.BoostRateTTL], b.BoostRate)
	}
	if len(boosts) != 1 {
		t.Errorf("the SDK saw %d boosts, want 1: %v", len(boosts), boosts)
	}
}
