package server

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/sampling"
)

// clearSome clears each field of m, recursively, with probability 1/3, so
// that messages present but empty, zeros and absent fields all occur.
func clearSome(rng *rand.Rand, m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case rng.IntN(3) == 0:
			m.Clear(fd)
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				clearSome(rng, v.List().Get(i).Message())
			}
		case fd.Message() != nil:
			clearSome(rng, v.Message())
		}
		return true
	})
}

// TestEncodeTargetsAsProtobuf: a stream's targets answer, encoded by
// encodeTargets, is byte for byte what protobuf encodes, with every field
// of the answer's messages set (a field added to the proto and not to
// encodeTargets fails here), with some cleared, and with the values whose
// encoding is easy to get wrong.
func TestEncodeTargetsAsProtobuf(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var cases []*pb.StreamSamplingResponse
	for i := range 2000 {
		m := &pb.StreamSamplingResponse{Message: &pb.StreamSamplingResponse_Targets{Targets: &pb.TargetSet{}}}
		fillEvery(t, m.GetTargets().ProtoReflect(), i)
		if i > 0 {
			clearSome(rng, m.GetTargets().ProtoReflect())
		}
		cases = append(cases, m)
	}
	edge := &pb.StreamSamplingResponse{Message: &pb.StreamSamplingResponse_Targets{Targets: &pb.TargetSet{
		Targets: []*pb.SamplingTarget{
			{RuleName: "r", ReservoirQuota: math.Copysign(0, -1), FixedRate: math.Inf(1), ReservoirQuotaExpireTime: nil},
			{ReservoirQuota: math.NaN(), Boost: &pb.SamplingBoost{}},
			{},
		},
		Rejected:     []*pb.RejectedStatistics{{Index: -1, Code: "c", Message: "ünïcode"}, {}},
		RulesVersion: -5,
		AckedSeq:     math.MaxUint64,
	}}}
	cases = append(cases, edge, &pb.StreamSamplingResponse{Message: &pb.StreamSamplingResponse_Targets{Targets: &pb.TargetSet{}}})

	for i, m := range cases {
		// The answers the server makes have no unknown fields.
		clean := new(pb.StreamSamplingResponse)
		b, err := proto.Marshal(m)
		if err == nil {
			err = proto.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, clean)
		}
		if err != nil {
			t.Fatal(err)
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(clean)
		if err != nil {
			t.Fatal(err)
		}
		e := new(answerPool).encodeTargets(clean)
		if e == nil {
			t.Fatalf("case %d: not encoded: %v", i, clean)
		}
		got := e.data[0].ReadOnlyData()
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("case %d (%v): encodeTargets differs from protobuf (-protobuf +encodeTargets):\n%s", i, clean, diff)
		}
		e.data[0].Free()
	}

	bad := &pb.StreamSamplingResponse{Message: &pb.StreamSamplingResponse_Targets{Targets: &pb.TargetSet{
		Rejected: []*pb.RejectedStatistics{{RuleName: "bad\xff"}},
	}}}
	if e := new(answerPool).encodeTargets(bad); e != nil {
		t.Errorf("an answer with invalid UTF-8 was encoded: %x", e.data[0].ReadOnlyData())
	}
}

// BenchmarkEncodeTargets encodes a one-target answer as a stream sends it,
// by encodeTargets and by gRPC's protobuf codec:
//
//	go test -run '^$' -bench EncodeTargets -benchmem ./internal/server
func BenchmarkEncodeTargets(b *testing.B) {
	ts := sampling.TargetSet{RulesVersion: 7, Interval: 10 * time.Second, Targets: []sampling.Target{{
		Rule: "rule-0", Quota: 3.5, FixedRate: 0.05, Expiry: time.Now(), Receipt: strings.Repeat("r", 92),
	}}}
	codec := newLenientCodec()
	var interval *durationpb.Duration
	b.Run("encodeTargets", func(b *testing.B) {
		var (
			out     targetsMessage
			answers answerPool
		)
		b.ReportAllocs()
		for b.Loop() {
			e := answers.encodeTargets(out.response(ts, &interval))
			e.data[0].Free()
		}
	})
	b.Run("protobuf", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			data, err := codec.Marshal(targetsResponse(ts, &interval))
			if err != nil {
				b.Fatal(err)
			}
			data.Free()
		}
	})
}
