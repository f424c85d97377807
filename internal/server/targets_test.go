package server

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// fill sets every field of m, recursively, to a value that is not its
// default; seed makes the values of two calls differ.
func fill(t *testing.T, m protoreflect.Message, seed int) {
	t.Helper()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.IsList() || fd.IsMap() {
			t.Fatalf("%s: fill does not do lists and maps; cloneTargets would need to", fd.FullName())
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

// TestCloneTargetsCopiesEveryField: cloneTargets copies a target field by
// field instead of by reflection, so a field added to SamplingTarget must
// be added there too. Every field set, its copies equal proto.Clone's, and
// share nothing with the originals.
func TestCloneTargetsCopiesEveryField(t *testing.T) {
	var ts []*pb.SamplingTarget
	for i := range 3 {
		x := &pb.SamplingTarget{}
		fill(t, x.ProtoReflect(), 10*i)
		ts = append(ts, x)
	}
	ts = append(ts, &pb.SamplingTarget{RuleName: "no expiry"})
	var want []*pb.SamplingTarget
	for _, x := range ts {
		want = append(want, proto.Clone(x).(*pb.SamplingTarget))
	}
	got := cloneTargets(ts)
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Fatalf("cloneTargets differs from proto.Clone (-want +got):\n%s", diff)
	}
	for _, x := range ts {
		x.RuleName, x.FixedRate = "changed", 0
		if e := x.GetReservoirQuotaExpiry(); e != nil {
			e.Seconds = 0
		} else {
			x.ReservoirQuotaExpiry = &timestamppb.Timestamp{}
		}
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("changing the originals changed the copies (-want +got):\n%s", diff)
	}
	if got := cloneTargets(nil); got != nil {
		t.Errorf("cloneTargets(nil) = %v, want nil", got)
	}
}
