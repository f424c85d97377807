package server

import (
	"context"
	"fmt"
	"strings"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/pkg/rules"
	"github.com/tracesampling/controlplane/pkg/rules/rulepb"
)

// RuleStore is what the rule service needs from a store.
type RuleStore = edit.RuleStore

const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// ruleService is the gRPC face of the rule editor: decode, edit, encode.
// The editor takes the caller's principal from the context (the guard's
// interceptors put it there), for the audit log and for scope checks.
type ruleService struct {
	pb.UnimplementedRuleServiceServer
	edit *edit.Rules
}

func (s *ruleService) CreateRule(ctx context.Context, req *pb.CreateRuleRequest) (*pb.CreateRuleResponse, error) {
	if req.GetRule() == nil {
		return nil, invalid("rule", "is required")
	}
	created, err := s.edit.Create(ctx, rulepb.FromProto(req.GetRule()))
	if err != nil {
		return nil, prefixFields("rule.", err)
	}
	return &pb.CreateRuleResponse{Rule: rulepb.ToProto(&created)}, nil
}

func (s *ruleService) GetRule(ctx context.Context, req *pb.GetRuleRequest) (*pb.GetRuleResponse, error) {
	r, err := s.edit.Get(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &pb.GetRuleResponse{Rule: rulepb.ToProto(&r)}, nil
}

func (s *ruleService) ListRules(ctx context.Context, req *pb.ListRulesRequest) (*pb.ListRulesResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	page, err := s.edit.List(ctx, req.GetFilter(), size, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &pb.ListRulesResponse{RulesVersion: page.Version, NextPageToken: page.NextToken}
	for i := range page.Rules {
		resp.Rules = append(resp.Rules, rulepb.ToProto(&page.Rules[i]))
	}
	return resp, nil
}

func (s *ruleService) UpdateRule(ctx context.Context, req *pb.UpdateRuleRequest) (*pb.UpdateRuleResponse, error) {
	in := req.GetRule()
	if in == nil {
		return nil, invalid("rule", "is required")
	}
	paths, err := updatePaths(req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, err
	}
	rev, err := etagRevision("rule.etag", in.GetEtag())
	if err != nil {
		return nil, err
	}
	updated, err := s.edit.Update(ctx, rulepb.FromProto(in), paths, rev)
	if err != nil {
		return nil, prefixFields("rule.", err)
	}
	return &pb.UpdateRuleResponse{Rule: rulepb.ToProto(&updated)}, nil
}

// updatePaths checks an update mask; empty or "*" is every field.
func updatePaths(paths []string) ([]string, error) {
	if len(paths) == 0 || len(paths) == 1 && paths[0] == "*" {
		return nil, nil
	}
	for _, p := range paths {
		if !rules.IsMutableField(p) {
			return nil, invalid("update_mask", fmt.Sprintf("%q is not a field that can be updated; use one of %s", p, strings.Join(rules.MutableFields, ", ")))
		}
	}
	return paths, nil
}

// etagRevision parses an optional etag; empty is 0, any revision.
func etagRevision(field, etag string) (int64, error) {
	if etag == "" {
		return 0, nil
	}
	rev, err := rules.ParseEtag(etag)
	if err != nil {
		return 0, invalid(field, err.Error())
	}
	return rev, nil
}

func (s *ruleService) DeleteRule(ctx context.Context, req *pb.DeleteRuleRequest) (*pb.DeleteRuleResponse, error) {
	rev, err := etagRevision("etag", req.GetEtag())
	if err != nil {
		return nil, err
	}
	if err := s.edit.Delete(ctx, req.GetName(), rev); err != nil {
		return nil, err
	}
	return &pb.DeleteRuleResponse{}, nil
}

func (s *ruleService) ListRuleEvents(ctx context.Context, req *pb.ListRuleEventsRequest) (*pb.ListRuleEventsResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	if req.GetRuleName() != "" {
		if err := rules.ValidateName(req.GetRuleName()); err != nil {
			return nil, prefixFields("rule_", err)
		}
	}
	page, err := s.edit.Events(ctx, req.GetRuleName(), size, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &pb.ListRuleEventsResponse{NextPageToken: page.NextToken, Trimmed: page.Trimmed}
	for i := range page.Events {
		resp.Events = append(resp.Events, apiconv.EventToProto(&page.Events[i]))
	}
	return resp, nil
}

func pageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, invalid("page_size", "must not be negative")
	case n == 0:
		return defaultPageSize, nil
	case n > maxPageSize:
		return maxPageSize, nil
	}
	return int(n), nil
}
