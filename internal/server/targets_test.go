package server

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/boost"
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
		if x.GetReservoirQuotaExpireTime() != nil {
			core[i].Expiry = x.GetReservoirQuotaExpireTime().AsTime()
		}
		if b := x.GetBoost(); b != nil {
			core[i].Boost = boost.Boost{Rate: b.GetRate(), Expiry: b.GetExpireTime().AsTime()}
		}
	}
	got := targetsToProto(core)
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Fatalf("targetsToProto lost fields (-want +got):\n%s", diff)
	}
	kept := proto.Clone(got[0]).(*pb.SamplingTarget)
	got[0].GetReservoirQuotaExpireTime().Seconds = 0
	if got[1].GetReservoirQuotaExpireTime().GetSeconds() == 0 || !proto.Equal(targetsToProto(core)[0], kept) {
		t.Errorf("targets share their expiry")
	}
	if got := targetsToProto(nil); got != nil {
		t.Errorf("targetsToProto(nil) = %v, want nil", got)
	}
	// An answer of one target is made apart (targetsMessage): the same
	// fields, of each kind of target.
	for i := range core {
		got := targetSetToProto(sampling.TargetSet{Targets: core[i : i+1]}).GetTargets()
		if diff := cmp.Diff(want[i:i+1], got, protocmp.Transform()); diff != "" {
			t.Errorf("target %d alone lost fields (-want +got):\n%s", i, diff)
		}
	}
}

// TestTargetsResponse: a stream's answer holds the whole target set,
// whatever the number of targets, and answers share nothing (but a
// stream's own answers their report interval: TestTargetsResponseInterval).
func TestTargetsResponse(t *testing.T) {
	expiry := time.Unix(1_800_000_000, 5).UTC()
	target := func(rule string) sampling.Target {
		return sampling.Target{Rule: rule, Quota: 2.5, FixedRate: 0.1, Expiry: expiry, Receipt: "r-" + rule}
	}
	pbTarget := func(rule string) *pb.SamplingTarget {
		return &pb.SamplingTarget{RuleName: rule, ReservoirQuota: 2.5, FixedRate: 0.1, ReservoirQuotaExpireTime: timestamppb.New(expiry), Receipt: "r-" + rule}
	}
	for _, tc := range []struct {
		name    string
		targets []sampling.Target
		want    []*pb.SamplingTarget
	}{
		{"none", nil, nil},
		{"one", []sampling.Target{target("a")}, []*pb.SamplingTarget{pbTarget("a")}},
		{"two", []sampling.Target{target("a"), target("b")}, []*pb.SamplingTarget{pbTarget("a"), pbTarget("b")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := sampling.TargetSet{
				RulesVersion: 7, Interval: 10*time.Second + 3, Targets: tc.targets,
				Rejected:      []sampling.Rejection{{Rule: "x", Index: 1, Code: "UNKNOWN_RULE", Message: "no rule"}},
				BoostRejected: []sampling.Rejection{{Rule: "y", Index: 2, Code: "BAD", Message: "bad"}},
			}
			want := &pb.StreamSamplingResponse{Message: &pb.StreamSamplingResponse_Targets{Targets: &pb.TargetSet{
				RulesVersion: 7, ReportInterval: durationpb.New(10*time.Second + 3), Targets: tc.want,
				Rejected: []*pb.RejectedStatistics{
					{RuleName: "x", Index: 1, Code: "UNKNOWN_RULE", Message: "no rule"},
					{RuleName: "y", Index: 2, Code: "BAD", Message: "boost: bad"},
				},
			}}}
			var interval, otherStream *durationpb.Duration
			got := targetsResponse(ts, &interval)
			if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
				t.Fatalf("targetsResponse (-want +got):\n%s", diff)
			}
			again := targetsResponse(ts, &otherStream)
			got.GetTargets().ReportInterval.Seconds = 0
			for _, x := range got.GetTargets().GetTargets() {
				x.RuleName = "changed"
				x.ReservoirQuotaExpireTime.Seconds = 0
			}
			if diff := cmp.Diff(want, again, protocmp.Transform()); diff != "" {
				t.Errorf("answers share parts (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTargetsResponseInterval: a stream's answers share their report
// interval message while the interval is the same, and each carries its own
// target set's interval, the earlier answers theirs still.
func TestTargetsResponseInterval(t *testing.T) {
	intervals := []time.Duration{10 * time.Second, 10 * time.Second, 5*time.Second + 1, 10 * time.Second}
	var (
		interval *durationpb.Duration
		answers  []*pb.StreamSamplingResponse
	)
	for _, d := range intervals {
		answers = append(answers, targetsResponse(sampling.TargetSet{RulesVersion: 1, Interval: d}, &interval))
	}
	for i, a := range answers {
		if got := a.GetTargets().GetReportInterval().AsDuration(); got != intervals[i] {
			t.Errorf("answer %d: report interval %v, want %v", i, got, intervals[i])
		}
	}
	if answers[0].GetTargets().GetReportInterval() != answers[1].GetTargets().GetReportInterval() {
		t.Error("two answers of the same interval carry a message each; want one shared")
	}
}
