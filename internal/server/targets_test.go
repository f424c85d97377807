package server

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/sampling"
)

// fill sets every field of m, recursively, to a value that is not its
// default; seed makes the values of two calls differ.
func fill(t *testing.T, m protoreflect.Message, seed int) {
	t.Helper()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.IsList() || fd.IsMap() {
			t.Fatalf("%s: fill does not do lists and maps; targetsToProto would need to", fd.FullName())
		}
		var v protoreflect.Value
		switch fd.Kind() {
		case protoreflect.StringKind:
			v = protoreflect.ValueOfString(string(rune('a' + seed + i)))
		case protoreflect.DoubleKind:
			v = protoreflect.ValueOfFloat64(float64(seed+i) + 0.5)
		case protoreflect.Int64Kind:
			v = protoreflect.ValueOfInt64(int64(seed + i + 1))
		case protoreflect.Int32Kind:
			v = protoreflect.ValueOfInt32(int32(seed + i + 1))
		case protoreflect.MessageKind:
			sub := m.NewField(fd).Message()
			fill(t, sub, seed+i)
			v = protoreflect.ValueOfMessage(sub)
		default:
			t.Fatalf("%s: fill does not do %v", fd.FullName(), fd.Kind())
		}
		m.Set(fd, v)
	}
}

// TestTargetsToProtoCopiesEveryField: targetsToProto encodes a target
// field by field instead of by reflection, so a field added to
// SamplingTarget must be added there (and to sampling.Target) too. Every
// field set, decoded into the core's type and encoded again, the targets
// equal the originals and share nothing with the core's.
func TestTargetsToProtoCopiesEveryField(t *testing.T) {
	var want []*pb.SamplingTarget
	for i := range 3 {
		x := &pb.SamplingTarget{}
		fill(t, x.ProtoReflect(), 10*i)
		want = append(want, x)
	}
	want = append(want, &pb.SamplingTarget{RuleName: "no expiry"})
	core := make([]sampling.Target, len(want))
	for i, x := range want {
		core[i] = sampling.Target{Rule: x.GetRuleName(), Quota: x.GetReservoirQuota(), FixedRate: x.GetFixedRate(), Receipt: x.GetReceipt()}
		if x.GetReservoirQuotaExpiry() != nil {
			core[i].Expiry = x.GetReservoirQuotaExpiry().AsTime()
		}
	}
	got := targetsToProto(core)
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Fatalf("targetsToProto lost fields (-want +got):\n%s", diff)
	}
	kept := proto.Clone(got[0]).(*pb.SamplingTarget)
	got[0].GetReservoirQuotaExpiry().Seconds = 0
	if got[1].GetReservoirQuotaExpiry().GetSeconds() == 0 || !proto.Equal(targetsToProto(core)[0], kept) {
		t.Errorf("targets share their expiry")
	}
	if got := targetsToProto(nil); got != nil {
		t.Errorf("targetsToProto(nil) = %v, want nil", got)
	}
}
