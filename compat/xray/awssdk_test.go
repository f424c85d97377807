package compat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsxray "github.com/aws/aws-sdk-go-v2/service/xray"
	"github.com/aws/aws-sdk-go-v2/service/xray/types"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/internal/xray/xraytest"
	"github.com/tracesampling/controlplane/pkg/clocktest"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 678e6, time.UTC)

type env struct {
	clock  *clocktest.Clock
	core   *xraytest.Core
	client *awsxray.Client
}

// newEnv serves the X-Ray API on a loopback port and returns the AWS SDK's
// X-Ray client for it, signing with a static key and never retrying (so
// that each error reaches the test as the SDK surfaces it).
func newEnv(t *testing.T) *env {
	t.Helper()
	c := clocktest.New(t0)
	core, err := xraytest.New(c.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { core.Close() })
	h, err := xray.NewHandler(core, xray.Options{Region: "eu-west-3", Account: "123456789012", Now: c.Now, Logger: slog.New(slog.DiscardHandler)})
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
	return &env{clock: c, core: core, client: client}
}

const arnPrefix = "arn:aws:xray:eu-west-3:123456789012:sampling-rule/"

func checkoutRule() *types.SamplingRule {
	return &types.SamplingRule{
		RuleName:          aws.String("checkout"),
		ResourceARN:       aws.String("*"),
		Priority:          aws.Int32(10),
		FixedRate:         0.25,
		ReservoirSize:     10,
		ServiceName:       aws.String("shop-*"),
		ServiceType:       aws.String("*"),
		Host:              aws.String("*"),
		HTTPMethod:        aws.String("POST"),
		URLPath:           aws.String("/checkout*"),
		Version:           aws.Int32(1),
		Attributes:        map[string]string{"tier": "gold"},
		SamplingRateBoost: &types.SamplingRateBoost{MaxRate: 0.5, CooldownWindowMinutes: 5},
	}
}

// ignoreSDK leaves out the SDK's unexported fields and result metadata.
var ignoreSDK = cmpopts.IgnoreUnexported(
	types.SamplingRule{}, types.SamplingRuleRecord{}, types.SamplingRateBoost{}, types.Tag{},
	types.SamplingTargetDocument{}, types.SamplingBoost{}, types.UnprocessedStatistics{}, types.SamplingStatisticSummary{},
)

func TestRuleLifecycle(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.clock.Add(time.Second)
	created, err := e.client.CreateSamplingRule(ctx, &awsxray.CreateSamplingRuleInput{
		SamplingRule: checkoutRule(),
		Tags:         []types.Tag{{Key: aws.String("team"), Value: aws.String("payments")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := checkoutRule()
	want.RuleARN = aws.String(arnPrefix + "checkout")
	createdAt := t0.Add(time.Second)
	wantRecord := &types.SamplingRuleRecord{SamplingRule: want, CreatedAt: &createdAt, ModifiedAt: &createdAt}
	if diff := cmp.Diff(wantRecord, created.SamplingRuleRecord, ignoreSDK); diff != "" {
		t.Errorf("CreateSamplingRule (-want +got):\n%s", diff)
	}

	e.clock.Add(time.Second)
	updated, err := e.client.UpdateSamplingRule(ctx, &awsxray.UpdateSamplingRuleInput{SamplingRuleUpdate: &types.SamplingRuleUpdate{
		RuleARN: aws.String(arnPrefix + "checkout"), FixedRate: aws.Float64(0.5), HTTPMethod: aws.String("PUT"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	want.FixedRate, want.HTTPMethod = 0.5, aws.String("PUT")
	modifiedAt := t0.Add(2 * time.Second)
	wantRecord.ModifiedAt = &modifiedAt
	if diff := cmp.Diff(wantRecord, updated.SamplingRuleRecord, ignoreSDK); diff != "" {
		t.Errorf("UpdateSamplingRule (-want +got):\n%s", diff)
	}

	listed, err := e.client.GetSamplingRules(ctx, &awsxray.GetSamplingRulesInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(listed.SamplingRuleRecords) != 2 || listed.NextToken != nil {
		t.Fatalf("GetSamplingRules: %d records, NextToken %v", len(listed.SamplingRuleRecords), listed.NextToken)
	}
	if diff := cmp.Diff(wantRecord, &listed.SamplingRuleRecords[0], ignoreSDK); diff != "" {
		t.Errorf("GetSamplingRules[0] (-want +got):\n%s", diff)
	}
	def := listed.SamplingRuleRecords[1].SamplingRule
	if aws.ToString(def.RuleName) != "Default" || aws.ToInt32(def.Priority) != 10000 || aws.ToInt32(def.Version) != 1 || def.SamplingRateBoost != nil {
		t.Errorf("Default rule listed as %+v", def)
	}
	// The paginator stops after the one page.
	pages := 0
	for p := awsxray.NewGetSamplingRulesPaginator(e.client, &awsxray.GetSamplingRulesInput{}); p.HasMorePages(); pages++ {
		if _, err := p.NextPage(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if pages != 1 {
		t.Errorf("%d pages", pages)
	}

	deleted, err := e.client.DeleteSamplingRule(ctx, &awsxray.DeleteSamplingRuleInput{RuleName: aws.String("checkout")})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantRecord, deleted.SamplingRuleRecord, ignoreSDK); diff != "" {
		t.Errorf("DeleteSamplingRule (-want +got):\n%s", diff)
	}
	listed, err = e.client.GetSamplingRules(ctx, &awsxray.GetSamplingRulesInput{})
	if err != nil || len(listed.SamplingRuleRecords) != 1 {
		t.Errorf("after the delete: %v rules, %v", len(listed.SamplingRuleRecords), err)
	}

	// The SDK signed every call, but nothing verified it: the audit log
	// names no key it cannot vouch for.
	page, err := e.core.Store.RuleEvents(ctx, "checkout", 10, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range page.Events {
		if ev.Actor != "anonymous" {
			t.Errorf("%s by %q", ev.Action, ev.Actor)
		}
	}
}

func TestTags(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.client.CreateSamplingRule(ctx, &awsxray.CreateSamplingRuleInput{
		SamplingRule: checkoutRule(), Tags: []types.Tag{{Key: aws.String("b"), Value: aws.String("2")}},
	}); err != nil {
		t.Fatal(err)
	}
	arn := aws.String(arnPrefix + "checkout")
	if _, err := e.client.TagResource(ctx, &awsxray.TagResourceInput{ResourceARN: arn, Tags: []types.Tag{
		{Key: aws.String("a"), Value: aws.String("1")}, {Key: aws.String("c"), Value: aws.String("3")},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.UntagResource(ctx, &awsxray.UntagResourceInput{ResourceARN: arn, TagKeys: []string{"c"}}); err != nil {
		t.Fatal(err)
	}
	got, err := e.client.ListTagsForResource(ctx, &awsxray.ListTagsForResourceInput{ResourceARN: arn})
	if err != nil {
		t.Fatal(err)
	}
	want := []types.Tag{{Key: aws.String("a"), Value: aws.String("1")}, {Key: aws.String("b"), Value: aws.String("2")}}
	if diff := cmp.Diff(want, got.Tags, ignoreSDK); diff != "" {
		t.Errorf("ListTagsForResource (-want +got):\n%s", diff)
	}
}

// TestErrors checks that every error reaches the AWS SDK as the type it
// models for the call, with the message.
func TestErrors(t *testing.T) {
	ctx := context.Background()
	badRule := checkoutRule()
	badRule.FixedRate = 2
	for _, tc := range []struct {
		name  string
		setup func(*env)
		call  func(*awsxray.Client) error
		check func(error) bool
	}{
		{
			name: "invalid rule",
			call: func(c *awsxray.Client) error {
				_, err := c.CreateSamplingRule(ctx, &awsxray.CreateSamplingRuleInput{SamplingRule: badRule})
				return err
			},
			check: func(err error) bool { var e *types.InvalidRequestException; return errors.As(err, &e) },
		},
		{
			name: "update of a rule that does not exist",
			call: func(c *awsxray.Client) error {
				_, err := c.UpdateSamplingRule(ctx, &awsxray.UpdateSamplingRuleInput{SamplingRuleUpdate: &types.SamplingRuleUpdate{RuleName: aws.String("nope"), FixedRate: aws.Float64(0.1)}})
				return err
			},
			check: func(err error) bool { var e *types.InvalidRequestException; return errors.As(err, &e) },
		},
		{
			name: "delete the Default rule",
			call: func(c *awsxray.Client) error {
				_, err := c.DeleteSamplingRule(ctx, &awsxray.DeleteSamplingRuleInput{RuleName: aws.String("Default")})
				return err
			},
			check: func(err error) bool { var e *types.InvalidRequestException; return errors.As(err, &e) },
		},
		{
			name: "bad ClientID",
			call: func(c *awsxray.Client) error {
				_, err := c.GetSamplingTargets(ctx, &awsxray.GetSamplingTargetsInput{SamplingStatisticsDocuments: []types.SamplingStatisticsDocument{
					{ClientID: aws.String("xyz"), RuleName: aws.String("Default"), Timestamp: aws.Time(t0)},
				}})
				return err
			},
			check: func(err error) bool { var e *types.InvalidRequestException; return errors.As(err, &e) },
		},
		{
			name:  "rule limit",
			setup: func(e *env) { e.core.MaxRules = 1 },
			call: func(c *awsxray.Client) error {
				_, err := c.CreateSamplingRule(ctx, &awsxray.CreateSamplingRuleInput{SamplingRule: checkoutRule()})
				return err
			},
			check: func(err error) bool { var e *types.RuleLimitExceededException; return errors.As(err, &e) },
		},
		{
			name: "tags of a rule that does not exist",
			call: func(c *awsxray.Client) error {
				_, err := c.ListTagsForResource(ctx, &awsxray.ListTagsForResourceInput{ResourceARN: aws.String(arnPrefix + "nope")})
				return err
			},
			check: func(err error) bool {
				var e *types.ResourceNotFoundException
				return errors.As(err, &e) && aws.ToString(e.ResourceName) == arnPrefix+"nope"
			},
		},
		{
			name: "too many tags",
			call: func(c *awsxray.Client) error {
				tags := make([]types.Tag, 50)
				for i := range tags {
					tags[i] = types.Tag{Key: aws.String(fmt.Sprintf("k%d", i)), Value: aws.String("v")}
				}
				if _, err := c.TagResource(ctx, &awsxray.TagResourceInput{ResourceARN: aws.String(arnPrefix + "Default"), Tags: tags}); err != nil {
					return fmt.Errorf("the first 50: %w", err)
				}
				_, err := c.TagResource(ctx, &awsxray.TagResourceInput{ResourceARN: aws.String(arnPrefix + "Default"), Tags: []types.Tag{{Key: aws.String("one-more"), Value: aws.String("v")}}})
				return err
			},
			check: func(err error) bool { var e *types.TooManyTagsException; return errors.As(err, &e) },
		},
		{
			name:  "throttled",
			setup: func(e *env) { e.core.Fail = func(string) error { return xray.ErrThrottled } },
			call: func(c *awsxray.Client) error {
				_, err := c.GetSamplingRules(ctx, &awsxray.GetSamplingRulesInput{})
				return err
			},
			check: func(err error) bool { var e *types.ThrottledException; return errors.As(err, &e) },
		},
		{
			name:  "store unavailable",
			setup: func(e *env) { e.core.Fail = func(string) error { return store.ErrUnavailable } },
			call: func(c *awsxray.Client) error {
				_, err := c.GetSamplingTargets(ctx, &awsxray.GetSamplingTargetsInput{SamplingStatisticsDocuments: []types.SamplingStatisticsDocument{}})
				return err
			},
			check: func(err error) bool {
				var e smithy.APIError
				return errors.As(err, &e) && e.ErrorCode() == "ServiceUnavailableException" && e.ErrorFault() == smithy.FaultUnknown
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if tc.setup != nil {
				tc.setup(e)
			}
			err := tc.call(e.client)
			if err == nil || !tc.check(err) {
				t.Fatalf("error %v (%T)", err, errors.Unwrap(err))
			}
			var api smithy.APIError
			if !errors.As(err, &api) || api.ErrorMessage() == "" {
				t.Errorf("no API error message: %v", err)
			}
		})
	}
}

func TestSamplingTargets(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	if _, err := e.client.CreateSamplingRule(ctx, &awsxray.CreateSamplingRuleInput{SamplingRule: checkoutRule()}); err != nil {
		t.Fatal(err)
	}
	const client = "0123456789abcdef01234567"
	out, err := e.client.GetSamplingTargets(ctx, &awsxray.GetSamplingTargetsInput{
		SamplingStatisticsDocuments: []types.SamplingStatisticsDocument{
			{ClientID: aws.String(client), RuleName: aws.String("checkout"), RequestCount: 100, SampledCount: 10, BorrowCount: 1, Timestamp: aws.Time(t0)},
			{ClientID: aws.String(client), RuleName: aws.String("gone"), RequestCount: 1, Timestamp: aws.Time(t0)},
		},
		SamplingBoostStatisticsDocuments: []types.SamplingBoostStatisticsDocument{
			{RuleName: aws.String("checkout"), ServiceName: aws.String("shop-eu"), TotalCount: 100, AnomalyCount: 7, SampledAnomalyCount: 2, Timestamp: aws.Time(t0)},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &awsxray.GetSamplingTargetsOutput{
		LastRuleModification: aws.Time(t0),
		SamplingTargetDocuments: []types.SamplingTargetDocument{{
			RuleName: aws.String("checkout"), FixedRate: 0.25, ReservoirQuota: aws.Int32(10),
			ReservoirQuotaTTL: aws.Time(t0.Add(20 * time.Second)), Interval: aws.Int32(10),
			SamplingBoost: &types.SamplingBoost{BoostRate: 0.5, BoostRateTTL: aws.Time(t0.Add(time.Minute))},
		}},
		UnprocessedStatistics:      []types.UnprocessedStatistics{{RuleName: aws.String("gone"), ErrorCode: aws.String("400"), Message: aws.String(`UNKNOWN_RULE: no rule "gone"`)}},
		UnprocessedBoostStatistics: []types.UnprocessedStatistics{},
	}
	if diff := cmp.Diff(want, out, ignoreSDK, cmpopts.IgnoreFields(awsxray.GetSamplingTargetsOutput{}, "ResultMetadata"), cmpopts.IgnoreUnexported(awsxray.GetSamplingTargetsOutput{})); diff != "" {
		t.Errorf("GetSamplingTargets (-want +got):\n%s", diff)
	}

	sums, err := e.client.GetSamplingStatisticSummaries(ctx, &awsxray.GetSamplingStatisticSummariesInput{})
	if err != nil {
		t.Fatal(err)
	}
	wantSums := []types.SamplingStatisticSummary{{RuleName: aws.String("checkout"), Timestamp: aws.Time(t0), RequestCount: 100, SampledCount: 10, BorrowCount: 1}}
	if diff := cmp.Diff(wantSums, sums.SamplingStatisticSummaries, ignoreSDK); diff != "" {
		t.Errorf("GetSamplingStatisticSummaries (-want +got):\n%s", diff)
	}
}
