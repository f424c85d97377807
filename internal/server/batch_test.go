package server

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/pkg/rules"
)

func TestBatchEditRules(t *testing.T) {
	ts := startServer(t, newMemStore(t))
	ctx := ctxT(t)
	a, err := ts.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: &pb.Rule{Name: "a", Priority: 1, FixedRate: 0.1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: &pb.Rule{Name: "b", Priority: 2}}); err != nil {
		t.Fatal(err)
	}
	before, err := ts.rules.ListRules(ctx, &pb.ListRulesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ts.rules.BatchEditRules(ctx, &pb.BatchEditRulesRequest{
		Creates: []*pb.CreateRuleRequest{{Rule: checkout()}},
		Updates: []*pb.UpdateRuleRequest{{Rule: &pb.Rule{Name: "a", FixedRate: 0.75, Etag: a.GetRule().GetEtag()}, UpdateMask: mask("fixed_rate")}},
		Deletes: []*pb.DeleteRuleRequest{{Name: "b"}},
	})
	if err != nil {
		t.Fatalf("BatchEditRules: %v", err)
	}
	want := &pb.BatchEditRulesResponse{
		RulesVersion: before.GetRulesVersion() + 1,
		Rules: []*pb.EditedRule{
			{Name: "checkout", Action: pb.RuleEvent_ACTION_CREATE, Etag: "1"},
			{Name: "a", Action: pb.RuleEvent_ACTION_UPDATE, Etag: "2"},
			{Name: "b", Action: pb.RuleEvent_ACTION_DELETE},
		},
	}
	if diff := cmp.Diff(want, resp, protocmp.Transform()); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
	got, err := ts.rules.GetRule(ctx, &pb.GetRuleRequest{Name: "a"})
	if err != nil || got.GetRule().GetFixedRate() != 0.75 || got.GetRule().GetPriority() != 1 {
		t.Errorf("rule a after the batch: %v, %v; want fixed_rate 0.75, priority kept", got, err)
	}
	ev, err := ts.rules.ListRuleEvents(ctx, &pb.ListRuleEventsRequest{PageSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ev.GetEvents() {
		if e.GetActor() != "local" || e.GetRulesVersion() != resp.GetRulesVersion() {
			t.Errorf("event %v: want actor local (the loopback admin) at version %d", e, resp.GetRulesVersion())
		}
	}

	// validate_only changes nothing and answers as the batch would.
	dry, err := ts.rules.BatchEditRules(ctx, &pb.BatchEditRulesRequest{
		Creates: []*pb.CreateRuleRequest{{Rule: &pb.Rule{Name: "c", Priority: 3}}}, ValidateOnly: true,
	})
	if err != nil || dry.GetRulesVersion() != resp.GetRulesVersion() || len(dry.GetRules()) != 1 || dry.GetRules()[0].GetEtag() != "" {
		t.Errorf("validate_only: %v, %v", dry, err)
	}
	if _, err := ts.rules.GetRule(ctx, &pb.GetRuleRequest{Name: "c"}); status.Code(err) != codes.NotFound {
		t.Errorf("validate_only created the rule: %v", err)
	}
}

func TestBatchEditRulesRefused(t *testing.T) {
	ts := startServer(t, newMemStore(t))
	ctx := ctxT(t)
	if _, err := ts.rules.CreateRule(ctx, &pb.CreateRuleRequest{Rule: &pb.Rule{Name: "a", Priority: 1}}); err != nil {
		t.Fatal(err)
	}
	good := &pb.CreateRuleRequest{Rule: &pb.Rule{Name: "fresh", Priority: 5}}
	var many []*pb.CreateRuleRequest
	for i := range rules.MaxRules {
		many = append(many, &pb.CreateRuleRequest{Rule: &pb.Rule{Name: fmt.Sprintf("m%d", i), Priority: 1}})
	}
	tests := []struct {
		name   string
		req    *pb.BatchEditRulesRequest
		code   codes.Code
		fields []string
	}{
		{"every problem of every edit", &pb.BatchEditRulesRequest{
			Creates: []*pb.CreateRuleRequest{good, {}, {Rule: &pb.Rule{Name: "x", Priority: 0, FixedRate: 2}}},
			Updates: []*pb.UpdateRuleRequest{
				{Rule: &pb.Rule{Name: "a", Etag: "01"}},
				{Rule: &pb.Rule{Name: "a"}, UpdateMask: mask("name")},
				{Rule: &pb.Rule{Name: "fresh"}},
			},
			Deletes: []*pb.DeleteRuleRequest{{Name: rules.DefaultName}, {Name: "a", Etag: "x"}},
		}, codes.InvalidArgument, []string{
			"creates[1].rule", "updates[0].rule.etag", "updates[1].update_mask", "deletes[1].etag",
			"creates[2].rule.priority", "creates[2].rule.fixed_rate", "updates[2].rule.name", "deletes[0].name",
		}},
		{"an update that makes a bad rule", &pb.BatchEditRulesRequest{
			Updates: []*pb.UpdateRuleRequest{{Rule: &pb.Rule{Name: "a", FixedRate: 3}, UpdateMask: mask("fixed_rate")}},
		}, codes.InvalidArgument, []string{"updates[0].rule.fixed_rate"}},
		{"a create of a rule that exists", &pb.BatchEditRulesRequest{
			Creates: []*pb.CreateRuleRequest{good, {Rule: &pb.Rule{Name: "a", Priority: 1}}},
		}, codes.AlreadyExists, nil},
		{"an update of a missing rule", &pb.BatchEditRulesRequest{
			Creates: []*pb.CreateRuleRequest{good}, Updates: []*pb.UpdateRuleRequest{{Rule: &pb.Rule{Name: "nope"}}},
		}, codes.NotFound, nil},
		{"a stale etag", &pb.BatchEditRulesRequest{
			Creates: []*pb.CreateRuleRequest{good}, Deletes: []*pb.DeleteRuleRequest{{Name: "a", Etag: "9"}},
		}, codes.Aborted, nil},
		{"narrowing the Default rule", &pb.BatchEditRulesRequest{
			Updates: []*pb.UpdateRuleRequest{{Rule: &pb.Rule{Name: rules.DefaultName, UrlPath: "/x"}, UpdateMask: mask("url_path")}},
		}, codes.FailedPrecondition, nil},
		{"past the rule limit", &pb.BatchEditRulesRequest{Creates: many}, codes.FailedPrecondition, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, err := ts.rules.ListRules(ctx, &pb.ListRulesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			_, err = ts.rules.BatchEditRules(ctx, tt.req)
			if status.Code(err) != tt.code {
				t.Fatalf("code = %v (%v), want %v", status.Code(err), err, tt.code)
			}
			if diff := cmp.Diff(tt.fields, fieldViolations(t, err)); diff != "" {
				t.Errorf("field violations (-want +got):\n%s", diff)
			}
			after, err := ts.rules.ListRules(ctx, &pb.ListRulesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if after.GetRulesVersion() != before.GetRulesVersion() || len(after.GetRules()) != len(before.GetRules()) {
				t.Errorf("a refused batch changed the rules")
			}
		})
	}
}
