package cli

import (
	"encoding/json"
	"net/http"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	api "github.com/tracesampling/controlplane/gen/jaeger/api_v2"
)

// TestServeJaeger: serve answers Jaeger's remote samplers on --jaeger-addr
// (HTTP) and on its gRPC port, from the rules it holds, and follows an
// edit. (internal/jaeger and compat/jaeger test the translation and the
// real clients; this is the wiring.)
func TestServeJaeger(t *testing.T) {
	s := startServe(t, testServeConfig(t))
	s.waitReadiness(t, true)
	if _, err := s.rules.CreateRule(callCtx(t), &pb.CreateRuleRequest{Rule: &pb.Rule{
		Name: "checkout", Priority: 10, FixedRate: 0.25, ServiceName: "shop", HttpMethod: "POST", UrlPath: "/checkout",
	}}); err != nil {
		t.Fatal(err)
	}
	// What the HTTP endpoint says for POST /checkout, and the default.
	poll := func() (op, def float64) {
		t.Helper()
		resp, err := http.Get("http://" + s.jaegerAddr + "/sampling?service=shop")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /sampling: %s", resp.Status)
		}
		var body struct {
			OperationSampling struct {
				DefaultSamplingProbability float64
				PerOperationStrategies     []struct {
					Operation             string
					ProbabilisticSampling struct{ SamplingRate float64 }
				}
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		for _, o := range body.OperationSampling.PerOperationStrategies {
			if o.Operation == "POST /checkout" {
				op = o.ProbabilisticSampling.SamplingRate
			}
		}
		return op, body.OperationSampling.DefaultSamplingProbability
	}
	pollUntil(t, "the HTTP strategy has the new rule", func() bool { op, _ := poll(); return op == 0.25 })
	if _, def := poll(); def != 0.05 {
		t.Errorf("default probability %v, want the Default rule's 0.05", def)
	}

	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got, err := api.NewSamplingManagerClient(conn).GetSamplingStrategy(callCtx(t), &api.SamplingStrategyParameters{ServiceName: "shop"})
	if err != nil {
		t.Fatalf("gRPC GetSamplingStrategy: %v", err)
	}
	if p := got.GetOperationSampling().GetDefaultSamplingProbability(); p != 0.05 {
		t.Errorf("gRPC default probability %v, want 0.05", p)
	}
	if _, err := api.NewSamplingManagerClient(conn).GetSamplingStrategy(callCtx(t), &api.SamplingStrategyParameters{}); err == nil {
		t.Error("gRPC GetSamplingStrategy without a service name succeeded")
	}
}
