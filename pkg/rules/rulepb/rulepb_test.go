package rulepb

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// Every field of a rule is mapped both ways in the field-coverage test
// (package output); these are the cases particular to the mapping.

func TestBoostMapping(t *testing.T) {
	tests := []struct {
		name string
		in   *rules.RateBoost
		want *pb.SamplingRateBoost
	}{
		{"none", nil, nil},
		{"zero", &rules.RateBoost{}, &pb.SamplingRateBoost{}},
		{"set", &rules.RateBoost{MaxRate: 0.25, Cooldown: 15 * time.Minute}, &pb.SamplingRateBoost{MaxRate: 0.25, CooldownWindowMinutes: 15}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ToProto(&rules.Rule{Name: "r", Boost: tt.in})
			if diff := cmp.Diff(tt.want, p.GetSamplingRateBoost(), protocmp.Transform()); diff != "" {
				t.Errorf("ToProto boost (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.in, FromProto(p).Boost); diff != "" {
				t.Errorf("FromProto boost (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBoostCooldownOutOfRange: a cooldown of more minutes than a Duration
// holds comes out of the mapping refused by validation, not wrapped around
// into a valid one.
func TestBoostCooldownOutOfRange(t *testing.T) {
	for _, m := range []int32{math.MaxInt32, math.MinInt32, 1441, -1} {
		r := FromProto(&pb.Rule{Name: "r", Priority: 1, SamplingRateBoost: &pb.SamplingRateBoost{CooldownWindowMinutes: m}})
		var ve *rules.ValidationError
		if err := rules.Validate(&r); !errors.As(err, &ve) || len(ve.Violations) != 1 || ve.Violations[0].Field != "sampling_rate_boost.cooldown_window_minutes" {
			t.Errorf("cooldown_window_minutes %d: Validate = %v, want one violation of sampling_rate_boost.cooldown_window_minutes", m, err)
		}
	}
}

// TestSamplingRuleLeavesOutWhatIsForPeople: SDKs get the boost but not the
// description, labels and tags.
func TestSamplingRuleLeavesOutWhatIsForPeople(t *testing.T) {
	r := rules.Rule{Name: "r", Description: "d", Labels: map[string]string{"l": "v"}, Tags: map[string]string{"T": "v"},
		Boost: &rules.RateBoost{MaxRate: 1, Cooldown: time.Minute}}
	p := SamplingToProto(&r)
	if p.GetDescription() != "" || p.GetLabels() != nil || p.GetTags() != nil {
		t.Errorf("SamplingToProto kept %q, %v, %v; want no description, labels or tags", p.GetDescription(), p.GetLabels(), p.GetTags())
	}
	if p.GetSamplingRateBoost() == nil {
		t.Error("SamplingToProto dropped the boost")
	}
}
