package compat

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsxray "github.com/aws/aws-sdk-go-v2/service/xray"
	"github.com/aws/aws-sdk-go-v2/service/xray/types"
	"github.com/aws/smithy-go"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/secrets"
	"github.com/tracesampling/controlplane/internal/xray"
	"github.com/tracesampling/controlplane/internal/xray/xraytest"
	"github.com/tracesampling/controlplane/pkg/clocktest"
)

// TestSigV4AccessKeys: the AWS SDK for Go v2's X-Ray client, signing with
// access keys the control plane issued (`tokens create … --aws`), against
// the handler behind the access-control middleware. The SDK signs with the
// wall clock, so the guard uses it too.
func TestSigV4AccessKeys(t *testing.T) {
	c := clocktest.New(t0)
	core, err := xraytest.New(c.Now)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { core.Close() })
	box, err := secrets.NewBox(bytes.Repeat([]byte{1}, secrets.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	guard, err := auth.New(auth.Options{
		Tokens: core.Store, Box: box, SigV4Region: "eu-west-3",
		Static: []auth.StaticToken{{Name: "root", Role: auth.RoleAdmin, Secret: "0123456789abcdef0123456789abcdef"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := xray.NewHandler(core, xray.Options{Region: "eu-west-3", Account: "123456789012", Verifier: guard, Now: c.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(guard.Middleware(h))
	t.Cleanup(srv.Close)
	issue := func(name string, role auth.Role) auth.Issued {
		iss, err := auth.Issue(auth.TokenSpec{Name: name, Role: role, AWS: true}, box, c.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := core.Store.CreateToken(context.Background(), iss.Record); err != nil {
			t.Fatal(err)
		}
		return iss
	}
	client := func(id, secret string) *awsxray.Client {
		return awsxray.NewFromConfig(aws.Config{
			Region: "eu-west-3",
			Credentials: aws.NewCredentialsCache(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
				return aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, nil
			})),
			HTTPClient: srv.Client(),
			Retryer:    func() aws.Retryer { return aws.NopRetryer{} },
		}, func(o *awsxray.Options) { o.BaseEndpoint = aws.String(srv.URL) })
	}
	editor, sdk := issue("ci", auth.RoleEditor), issue("daemon", auth.RoleSDK)
	ctx := t.Context()
	rule := &types.SamplingRule{RuleName: aws.String("shop"), Priority: aws.Int32(10), FixedRate: 0.1, ReservoirSize: 1,
		ServiceName: aws.String("shop"), ServiceType: aws.String("*"), Host: aws.String("*"), HTTPMethod: aws.String("*"),
		URLPath: aws.String("*"), ResourceARN: aws.String("*"), Version: aws.Int32(1)}
	if _, err := client(editor.AccessKeyID, editor.Secret).CreateSamplingRule(ctx, &awsxray.CreateSamplingRuleInput{SamplingRule: rule}); err != nil {
		t.Fatalf("an editor key: %v", err)
	}
	if _, err := client(sdk.AccessKeyID, sdk.Secret).GetSamplingRules(ctx, &awsxray.GetSamplingRulesInput{}); err != nil {
		t.Fatalf("an sdk key reading rules: %v", err)
	}
	if _, err := client(editor.AccessKeyID, editor.Secret).GetSamplingRules(ctx, &awsxray.GetSamplingRulesInput{}); err != nil {
		t.Fatalf("an editor key reading rules (aws xray get-sampling-rules): %v", err)
	}
	page, err := core.Store.RuleEvents(ctx, "shop", 10, "")
	if err != nil || len(page.Events) != 1 || page.Events[0].Actor != "aws:ci" {
		t.Errorf("audit events %+v (%v), want one by aws:ci", page.Events, err)
	}
	for _, tc := range []struct {
		name, code string
		call       func() error
	}{
		{"an sdk key creating", "AccessDeniedException", func() error {
			_, err := client(sdk.AccessKeyID, sdk.Secret).DeleteSamplingRule(ctx, &awsxray.DeleteSamplingRuleInput{RuleName: aws.String("shop")})
			return err
		}},
		{"a wrong secret", "InvalidSignatureException", func() error {
			_, err := client(editor.AccessKeyID, sdk.Secret).GetSamplingRules(ctx, &awsxray.GetSamplingRulesInput{})
			return err
		}},
		{"an unknown key", "UnrecognizedClientException", func() error {
			_, err := client("TSCKAAAAAAAAAAAAAAAA", sdk.Secret).GetSamplingRules(ctx, &awsxray.GetSamplingRulesInput{})
			return err
		}},
	} {
		var ae smithy.APIError
		if err := tc.call(); !errors.As(err, &ae) || ae.ErrorCode() != tc.code {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
		}
	}
}
