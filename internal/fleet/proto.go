package fleet

import (
	"maps"
	"slices"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/pkg/rules"
	"github.com/tracesampling/controlplane/pkg/rules/rulepb"
)

// StatusToProto returns the API form of a page of fleet status.
func StatusToProto(s *Status) *pb.GetFleetStatusResponse {
	p := &pb.GetFleetStatusResponse{
		RulesVersion:   s.RulesVersion,
		ReadTime:       timestamppb.New(s.Time),
		ReportInterval: durationpb.New(s.Interval),
		NextPageToken:  s.NextToken,
		TotalRules:     int32(s.Total),
	}
	for i := range s.Rules {
		r := &s.Rules[i]
		rs := &pb.RuleStatus{
			Rule: rulepb.ToProto(&r.Rule), Position: int32(r.Position + 1),
			RequestRate: r.Rate, SampledRate: r.Sampled, Instances: r.Instances, QuotaGranted: r.Granted,
			InstancesCurrent: r.Current, RuleVersion: r.Rule.RulesVersion,
		}
		for _, e := range r.Budgets {
			mode := pb.Budget_MODE_ENFORCE
			if e.Mode == budget.AlertOnly {
				mode = pb.Budget_MODE_ALERT_ONLY
			}
			rs.Budgets = append(rs.Budgets, &pb.BudgetEnforcement{
				BudgetName: e.Budget, ServiceNames: slices.Clone(e.Services), Mode: mode,
				FixedRateFactor: e.FixedRateFactor, ReservoirFactor: e.ReservoirFactor, Exhausted: e.Exhausted,
			})
		}
		p.Rules = append(p.Rules, rs)
	}
	return p
}

// ExplainRequestFromProto returns the request an ExplainRequest describes.
func ExplainRequestFromProto(p *pb.ExplainRequest) rules.Request {
	return rules.Request{
		ServiceName: p.GetServiceName(),
		ServiceType: p.GetServiceType(),
		Host:        p.GetHost(),
		HTTPMethod:  p.GetHttpMethod(),
		URLPath:     p.GetUrlPath(),
		ResourceARN: p.GetResourceArn(),
		Attributes:  maps.Clone(p.GetAttributes()),
		Resource:    maps.Clone(p.GetResourceAttributes()),
	}
}

// ExplanationToProto returns the API form of an explanation.
func ExplanationToProto(e *Explanation) *pb.ExplainResponse {
	p := &pb.ExplainResponse{
		RulesVersion:     e.RulesVersion,
		MoreSkippedRules: int32(e.More),
		FixedRate:        e.FixedRate,
		Reservoir:        e.Reservoir,
		FixedRateFactor:  e.FixedRateFactor,
		ReservoirFactor:  e.ReservoirFactor,
		BudgetNames:      slices.Clone(e.Budgets),
		Summary:          e.Summary,
	}
	if e.Rule != nil {
		p.Rule = rulepb.ToProto(e.Rule)
		p.Position = int32(e.Position + 1)
	}
	for _, m := range e.Skipped {
		p.SkippedRules = append(p.SkippedRules, &pb.RuleMismatch{
			RuleName: m.Rule, Position: int32(m.Position + 1), Field: m.Field, Pattern: m.Pattern, Value: m.Value, Absent: m.Absent,
		})
	}
	return p
}
