package compat

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsxray "github.com/aws/aws-sdk-go-v2/service/xray"
	"github.com/aws/aws-sdk-go-v2/service/xray/types"
	"github.com/aws/aws-xray-sdk-go/daemoncfg"
	xraysampling "github.com/aws/aws-xray-sdk-go/strategy/sampling"
	"github.com/aws/smithy-go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/tracesampling/controlplane/clients/go/sampler"
	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/cli"
)

const adminToken = "compat-xray-admin-token-0123456789abcdef"

// served is one `controlplane serve`, run in this process through the CLI
// on loopback ports and the embedded store, as a user runs it: an admin
// token, a key that seals AWS keys' secrets, and anonymous sampling calls
// opened to loopback (X-Ray SDKs send no credentials).
type served struct {
	grpcAddr, xrayAddr string
	conn               *grpc.ClientConn
}

func startServe(t *testing.T) *served {
	t.Helper()
	dir := t.TempDir()
	tokenFile, keyFile := filepath.Join(dir, "admin-token"), filepath.Join(dir, "secrets.key")
	if err := os.WriteFile(tokenFile, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := cli.Run(ctx, []string{"serve", "--grpc-addr", "127.0.0.1:0", "--http-addr=", "--jaeger-addr=",
			"--xray-addr", "127.0.0.1:0", "--xray-account", "123456789012", "--redis-url=", "--data-dir=",
			"--admin-token-file", tokenFile, "--secrets-key-file", keyFile,
			"--anonymous-sampling-networks", "127.0.0.0/8", "--log-format", "json"}, nil, io.Discard, pw)
		pw.Close()
		done <- err
	}()
	// The start-up line names the bound addresses; the rest of the log goes
	// to the test's.
	s := &served{}
	addrs := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var rec struct {
				Msg      string `json:"msg"`
				GRPCAddr string `json:"grpc_addr"`
				XRayAddr string `json:"xray_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "control plane serving" && s.grpcAddr == "" {
				s.grpcAddr, s.xrayAddr = rec.GRPCAddr, rec.XRayAddr
				close(addrs)
				continue
			}
			t.Log(sc.Text())
		}
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case <-addrs:
	case err := <-done:
		t.Fatalf("serve returned before serving: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not start within 30 s")
	}
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s.conn = conn
	return s
}

// admin is a context whose gRPC calls carry the admin's token.
func admin(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+adminToken)
}

// awsKey issues an access key pair with `controlplane tokens create NAME
// --role ROLE --aws`, as the README says, and returns it.
func (s *served) awsKey(t *testing.T, name, role string) (id, secret string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if err := cli.Run(t.Context(), []string{"tokens", "create", name, "--role", role, "--aws", "--server", s.grpcAddr, "--token", adminToken}, nil, &stdout, &stderr); err != nil {
		t.Fatalf("tokens create: %v: %s", err, stderr.String())
	}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if v, ok := strings.CutPrefix(line, "AWS_ACCESS_KEY_ID="); ok {
			id = v
		}
		if v, ok := strings.CutPrefix(line, "AWS_SECRET_ACCESS_KEY="); ok {
			secret = v
		}
	}
	if id == "" || secret == "" {
		t.Fatalf("tokens create printed no key pair: %s", stdout.String())
	}
	return id, secret
}

// awsClient is the AWS SDK for Go v2's X-Ray client of serve's X-Ray port,
// signing with id and secret, without retries.
func (s *served) awsClient(id, secret string) *awsxray.Client {
	return awsxray.NewFromConfig(aws.Config{
		Region: "us-east-1",
		Credentials: aws.NewCredentialsCache(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: id, SecretAccessKey: secret}, nil
		})),
		Retryer: func() aws.Retryer { return aws.NopRetryer{} },
	}, func(o *awsxray.Options) { o.BaseEndpoint = aws.String("http://" + s.xrayAddr) })
}

// errorCode is the AWS error code of err, "" if it has none.
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// TestServeXRayAPI: the AWS SDK's X-Ray client against a real serve: the
// rule calls, with an issued key (SigV4 verified), on the same rules as the
// gRPC API (an edit through either is seen through the other, with one
// etag sequence and one audit log), and X-Ray's errors.
func TestServeXRayAPI(t *testing.T) {
	s := startServe(t)
	ctx := t.Context()
	rulesAPI := pb.NewRuleServiceClient(s.conn)
	// An admin's key: GetSamplingRules is a sampling call (the sdk role),
	// the rule calls an editor's.
	id, secret := s.awsKey(t, "xray-ci", "admin")
	c := s.awsClient(id, secret)

	created, err := c.CreateSamplingRule(ctx, &awsxray.CreateSamplingRuleInput{SamplingRule: &types.SamplingRule{
		RuleName: aws.String("checkout"), Priority: aws.Int32(10), FixedRate: 0.1, ReservoirSize: 2,
		ServiceName: aws.String("shop"), ServiceType: aws.String("*"), Host: aws.String("*"), HTTPMethod: aws.String("*"),
		URLPath: aws.String("/checkout/*"), ResourceARN: aws.String("*"), Version: aws.Int32(1),
	}})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if got := aws.ToString(created.SamplingRuleRecord.SamplingRule.RuleARN); got != "arn:aws:xray:us-east-1:123456789012:sampling-rule/checkout" {
		t.Errorf("RuleARN %s", got)
	}

	// The gRPC API sees the rule, and edits it.
	got, err := rulesAPI.GetRule(admin(ctx), &pb.GetRuleRequest{Name: "checkout"})
	if err != nil || got.GetRule().GetUrlPath() != "/checkout/*" || got.GetRule().GetReservoirSize() != 2 {
		t.Fatalf("GetRule: %v, %v", got, err)
	}
	first := got.GetRule().GetEtag()
	up, err := rulesAPI.UpdateRule(admin(ctx), &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "checkout", FixedRate: 0.5, Etag: first},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"fixed_rate"}}})
	if err != nil {
		t.Fatal(err)
	}
	listed, err := c.GetSamplingRules(ctx, &awsxray.GetSamplingRulesInput{})
	if err != nil {
		t.Fatal(err)
	}
	var seen *types.SamplingRule
	for _, r := range listed.SamplingRuleRecords {
		if aws.ToString(r.SamplingRule.RuleName) == "checkout" {
			seen = r.SamplingRule
		}
	}
	if seen == nil || seen.FixedRate != 0.5 {
		t.Fatalf("the X-Ray client does not see the gRPC edit: %+v", seen)
	}

	// An X-Ray edit, without an etag, moves the same etag sequence.
	if _, err := c.UpdateSamplingRule(ctx, &awsxray.UpdateSamplingRuleInput{SamplingRuleUpdate: &types.SamplingRuleUpdate{
		RuleName: aws.String("checkout"), ReservoirSize: aws.Int32(7)}}); err != nil {
		t.Fatal(err)
	}
	got, err = rulesAPI.GetRule(admin(ctx), &pb.GetRuleRequest{Name: "checkout"})
	if err != nil || got.GetRule().GetReservoirSize() != 7 || got.GetRule().GetFixedRate() != 0.5 || got.GetRule().GetEtag() == up.GetRule().GetEtag() {
		t.Fatalf("after the X-Ray update: %v (etag before %s), %v", got.GetRule(), up.GetRule().GetEtag(), err)
	}
	if _, err := rulesAPI.UpdateRule(admin(ctx), &pb.UpdateRuleRequest{Rule: &pb.Rule{Name: "checkout", FixedRate: 0.2, Etag: up.GetRule().GetEtag()},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"fixed_rate"}}}); status.Code(err) != codes.Aborted {
		t.Errorf("a gRPC update at the etag before the X-Ray edit: %v, want ABORTED", err)
	}

	// X-Ray's errors, as the AWS SDK surfaces them.
	for _, tc := range []struct {
		name, code string
		call       func() error
	}{
		{"the Default deleted", "InvalidRequestException", func() error {
			_, err := c.DeleteSamplingRule(ctx, &awsxray.DeleteSamplingRuleInput{RuleName: aws.String("Default")})
			return err
		}},
		{"the Default's URLPath", "InvalidRequestException", func() error {
			_, err := c.UpdateSamplingRule(ctx, &awsxray.UpdateSamplingRuleInput{SamplingRuleUpdate: &types.SamplingRuleUpdate{RuleName: aws.String("Default"), URLPath: aws.String("/x")}})
			return err
		}},
		{"a name taken", "InvalidRequestException", func() error {
			_, err := c.CreateSamplingRule(ctx, &awsxray.CreateSamplingRuleInput{SamplingRule: created.SamplingRuleRecord.SamplingRule})
			return err
		}},
		{"an unknown rule updated", "InvalidRequestException", func() error {
			_, err := c.UpdateSamplingRule(ctx, &awsxray.UpdateSamplingRuleInput{SamplingRuleUpdate: &types.SamplingRuleUpdate{RuleName: aws.String("nope"), FixedRate: aws.Float64(0.1)}})
			return err
		}},
		{"a reserved tag", "InvalidRequestException", func() error {
			_, err := c.TagResource(ctx, &awsxray.TagResourceInput{ResourceARN: created.SamplingRuleRecord.SamplingRule.RuleARN, Tags: []types.Tag{{Key: aws.String("aws:team"), Value: aws.String("shop")}}})
			return err
		}},
		{"another account's ARN", "ResourceNotFoundException", func() error {
			_, err := c.ListTagsForResource(ctx, &awsxray.ListTagsForResourceInput{ResourceARN: aws.String("arn:aws:xray:us-east-1:000000000000:sampling-rule/checkout")})
			return err
		}},
		{"a wrong secret", "InvalidSignatureException", func() error {
			_, err := s.awsClient(id, secret+"x").GetSamplingRules(ctx, &awsxray.GetSamplingRulesInput{})
			return err
		}},
		{"an unknown key", "UnrecognizedClientException", func() error {
			_, err := s.awsClient("TSCKAAAAAAAAAAAAAAAA", secret).GetSamplingRules(ctx, &awsxray.GetSamplingRulesInput{})
			return err
		}},
		{"an edit by an anonymous sampler (loopback is open to sampling calls only)", "AccessDeniedException", func() error {
			_, err := awsxray.NewFromConfig(aws.Config{Region: "us-east-1", Credentials: aws.AnonymousCredentials{}, Retryer: func() aws.Retryer { return aws.NopRetryer{} }},
				func(o *awsxray.Options) { o.BaseEndpoint = aws.String("http://" + s.xrayAddr) }).
				DeleteSamplingRule(ctx, &awsxray.DeleteSamplingRuleInput{RuleName: aws.String("checkout")})
			return err
		}},
	} {
		if err := tc.call(); errorCode(err) != tc.code {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
		}
	}

	// Tags are the rule's: set through X-Ray, read through gRPC.
	if _, err := c.TagResource(ctx, &awsxray.TagResourceInput{ResourceARN: created.SamplingRuleRecord.SamplingRule.RuleARN,
		Tags: []types.Tag{{Key: aws.String("team"), Value: aws.String("shop")}}}); err != nil {
		t.Fatal(err)
	}
	tags, err := c.ListTagsForResource(ctx, &awsxray.ListTagsForResourceInput{ResourceARN: created.SamplingRuleRecord.SamplingRule.RuleARN})
	if err != nil || len(tags.Tags) != 1 || aws.ToString(tags.Tags[0].Value) != "shop" {
		t.Errorf("ListTagsForResource: %v, %v", tags, err)
	}
	if got, err := rulesAPI.GetRule(admin(ctx), &pb.GetRuleRequest{Name: "checkout"}); err != nil || got.GetRule().GetTags()["team"] != "shop" {
		t.Errorf("the gRPC API's rule after TagResource: %v, %v", got.GetRule(), err)
	}

	// Deleted through X-Ray: gone for the gRPC API; the audit log names
	// the key's principal for the X-Ray edits (create, update, tag,
	// delete) and the admin for the gRPC one, in one history.
	if _, err := c.DeleteSamplingRule(ctx, &awsxray.DeleteSamplingRuleInput{RuleName: aws.String("checkout")}); err != nil {
		t.Fatal(err)
	}
	if _, err := rulesAPI.GetRule(admin(ctx), &pb.GetRuleRequest{Name: "checkout"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetRule after the X-Ray delete: %v", err)
	}
	events, err := rulesAPI.ListRuleEvents(admin(ctx), &pb.ListRuleEventsRequest{RuleName: "checkout"})
	if err != nil {
		t.Fatal(err)
	}
	var actors []string
	for _, e := range events.GetEvents() {
		actors = append(actors, e.GetActor())
	}
	if want := []string{"aws:xray-ci", "aws:xray-ci", "aws:xray-ci", "static:admin", "aws:xray-ci"}; strings.Join(actors, " ") != strings.Join(want, " ") {
		t.Errorf("audit log actors, newest first: %q, want %q", actors, want)
	}
}

// TestServeSharedReservoir: the X-Ray SDK for Go's centralized sampler
// (pointed at serve as AWS_XRAY_DAEMON_ADDRESS would) and this project's Go
// SDK run the same rule: both are counted in one fleet ledger, whose quotas
// stay within the rule's reservoir, and the X-Ray client, once its first
// target arrives, samples from its quota instead of borrowing. The X-Ray
// SDK polls targets every 10 s on the wall clock and cannot be told
// otherwise: the test takes about 30 s, waiting on the fleet's figures,
// never on a time.
func TestServeSharedReservoir(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the X-Ray SDK's 10-second target polls")
	}
	s := startServe(t)
	ctx := t.Context()
	const reservoir = 10
	if _, err := pb.NewRuleServiceClient(s.conn).CreateRule(admin(ctx), &pb.CreateRuleRequest{Rule: &pb.Rule{
		Name: "shared", Priority: 1, FixedRate: 0, ReservoirSize: reservoir, ServiceName: "compat-shared"}}); err != nil {
		t.Fatal(err)
	}

	xs, err := xraysampling.NewCentralizedStrategy()
	if err != nil {
		t.Fatal(err)
	}
	ep, err := daemoncfg.GetDaemonEndpointsFromString(s.xrayAddr)
	if err != nil {
		t.Fatal(err)
	}
	xs.LoadDaemonEndpoints(ep)
	gs, err := sampler.New(sampler.WithEndpoint(s.grpcAddr), sampler.WithService("compat-shared", ""), sampler.WithToken(adminToken),
		sampler.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gs.Close() })

	// Traffic through both, about 20 requests a second each, until the
	// test ends.
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		var id trace.TraceID
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			xs.ShouldTrace(&xraysampling.Request{Host: "shop.example", Method: "GET", URL: "/", ServiceName: "compat-shared", ServiceType: "AWS::EC2::Instance"})
			id[0], id[1] = byte(n), byte(n>>8)
			gs.ShouldSample(sdktrace.SamplingParameters{ParentContext: ctx, TraceID: id, Name: "GET /", Kind: trace.SpanKindServer})
		}
	}()
	t.Cleanup(func() { close(stop); <-done })

	// Both clients in the rule's fleet ledger at once, the quotas granted
	// within the reservoir.
	status := pb.NewStatusServiceClient(s.conn)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := status.GetFleetStatus(admin(ctx), &pb.GetFleetStatusRequest{ServiceName: "compat-shared"})
		if err != nil {
			t.Fatal(err)
		}
		var rs *pb.RuleStatus
		for _, r := range resp.GetRules() {
			if r.GetRule().GetName() == "shared" {
				rs = r
			}
		}
		if rs != nil && rs.GetInstances() == 2 && rs.GetQuotaGranted() > 0 {
			t.Logf("rule shared: %d instances, %.1f req/s, %.2f traces/s granted of %d", rs.GetInstances(), rs.GetRequestRate(), rs.GetQuotaGranted(), reservoir)
			if rs.GetQuotaGranted() > reservoir+1e-9 {
				t.Errorf("%.2f traces/s granted, more than the reservoir %d", rs.GetQuotaGranted(), reservoir)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the X-Ray client and the Go SDK were never both in the fleet: %v", rs)
		}
		time.Sleep(500 * time.Millisecond) // polling the server's state, not timing it
	}
}
