package server

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// rawCodec sends and receives bytes as they are, under the proto codec's
// name, so a test can put on the wire what no generated client would.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }

func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = slices.Clone(data)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// badUTF8Rule is a CreateRuleRequest whose rule name is not UTF-8.
func badUTF8Rule() []byte {
	rule := protowire.AppendTag(nil, 1, protowire.BytesType)
	rule = protowire.AppendBytes(rule, []byte("bad\xff\xfe"))
	req := protowire.AppendTag(nil, 1, protowire.BytesType)
	return protowire.AppendBytes(req, rule)
}

// badUTF8Hello is a StreamSamplingRequest whose hello's client ID is not
// UTF-8.
func badUTF8Hello() []byte {
	hello := protowire.AppendTag(nil, 1, protowire.BytesType)
	hello = protowire.AppendBytes(hello, []byte("c\xc3"))
	req := protowire.AppendTag(nil, 1, protowire.BytesType)
	return protowire.AppendBytes(req, hello)
}

// TestUndecodableRequests: bytes that are not the request message get
// INVALID_ARGUMENT naming the message, on unary and streaming calls alike,
// over a real connection, and change nothing.
func TestUndecodableRequests(t *testing.T) {
	rep := startReplica(t, newMemStore(t), time.Now)
	conn := rep.conn
	garbage := []byte{0xff, 0xff, 0xff, 0xff, 0x0f}
	tests := []struct {
		name    string
		method  string
		stream  bool
		payload []byte
		message string // the message named in the violation
	}{
		{"unary garbage", "/controlplane.v1.RuleService/CreateRule", false, garbage, "controlplane.v1.CreateRuleRequest"},
		{"unary invalid UTF-8", "/controlplane.v1.RuleService/CreateRule", false, badUTF8Rule(), "controlplane.v1.CreateRuleRequest"},
		{"unary sampling garbage", "/controlplane.v1.SamplingService/GetSamplingTargets", false, garbage, "controlplane.v1.GetSamplingTargetsRequest"},
		{"health garbage", "/grpc.health.v1.Health/Check", false, garbage, "grpc.health.v1.HealthCheckRequest"},
		{"stream garbage", "/controlplane.v1.SamplingService/StreamSampling", true, garbage, "controlplane.v1.StreamSamplingRequest"},
		{"stream invalid UTF-8", "/controlplane.v1.SamplingService/StreamSampling", true, badUTF8Hello(), "controlplane.v1.StreamSamplingRequest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxT(t)
			before := rep.catalog.Current().Version
			var err error
			if tt.stream {
				var s grpc.ClientStream
				s, err = conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, tt.method, grpc.ForceCodec(rawCodec{}))
				if err != nil {
					t.Fatal(err)
				}
				if err := s.SendMsg(&tt.payload); err != nil {
					t.Fatal(err)
				}
				var out []byte
				err = s.RecvMsg(&out)
			} else {
				var out []byte
				err = conn.Invoke(ctx, tt.method, &tt.payload, &out, grpc.ForceCodec(rawCodec{}))
			}
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("got %v, want InvalidArgument", err)
			}
			if got := fieldViolations(t, err); !slices.Equal(got, []string{tt.message}) {
				t.Errorf("field violations %q, want [%q]", got, tt.message)
			}
			if v, err := rep.rules.ListRules(ctx, &pb.ListRulesRequest{}); err != nil || v.GetRulesVersion() != before {
				t.Errorf("after the refused call: rules version %d, %v; want %d", v.GetRulesVersion(), err, before)
			}
		})
	}
}
