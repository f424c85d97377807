package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/rules"
	"github.com/tracesampling/controlplane/internal/store"
)

// RuleStore is what the rule service needs from a store.
type RuleStore interface {
	Snapshot(ctx context.Context) (store.Snapshot, error)
	Rule(ctx context.Context, name string) (rules.Rule, error)
	CreateRule(ctx context.Context, r rules.Rule, actor string) (rules.Rule, error)
	UpdateRule(ctx context.Context, r rules.Rule, ifRevision int64, actor string) (rules.Rule, error)
	DeleteRule(ctx context.Context, name string, ifRevision int64, actor string) error
	RuleEvents(ctx context.Context, ruleName string, pageSize int, pageToken string) (store.EventPage, error)
}

const (
	defaultPageSize = 100
	maxPageSize     = 1000
	// ActorMetadataKey carries who makes an edit, for the audit log.
	ActorMetadataKey = "x-controlplane-actor"
	maxActorLen      = 128
	// updateRetries bounds the read-modify-write loop of an update without an
	// etag, which only retries when another edit lands in between.
	updateRetries = 5
)

type ruleService struct {
	pb.UnimplementedRuleServiceServer
	store RuleStore
}

func (s *ruleService) CreateRule(ctx context.Context, req *pb.CreateRuleRequest) (*pb.CreateRuleResponse, error) {
	if req.GetRule() == nil {
		return nil, invalid("rule", "is required")
	}
	r := apiconv.RuleFromProto(req.GetRule()).Normalize()
	if r.IsDefault() {
		return nil, fmt.Errorf("rule %q: %w (it always exists; update it instead)", r.Name, store.ErrAlreadyExists)
	}
	if err := rules.Validate(&r); err != nil {
		return nil, prefixFields("rule.", err)
	}
	created, err := s.store.CreateRule(ctx, r, actor(ctx))
	if err != nil {
		return nil, err
	}
	return &pb.CreateRuleResponse{Rule: apiconv.RuleToProto(&created)}, nil
}

func (s *ruleService) GetRule(ctx context.Context, req *pb.GetRuleRequest) (*pb.GetRuleResponse, error) {
	if err := rules.ValidateName(req.GetName()); err != nil {
		return nil, err
	}
	r, err := s.store.Rule(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &pb.GetRuleResponse{Rule: apiconv.RuleToProto(&r)}, nil
}

func (s *ruleService) ListRules(ctx context.Context, req *pb.ListRulesRequest) (*pb.ListRulesResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	filter, err := parseRuleFilter(req.GetFilter())
	if err != nil {
		return nil, err
	}
	var after *pageCursor
	if req.GetPageToken() != "" {
		c, err := decodeCursor(req.GetPageToken(), req.GetFilter())
		if err != nil {
			return nil, err
		}
		after = &c
	}
	snap, err := s.store.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListRulesResponse{RulesVersion: snap.Version}
	for i := range snap.Rules {
		r := &snap.Rules[i]
		if after != nil && rules.Compare(r, &rules.Rule{Priority: after.Priority, Name: after.Name}) <= 0 {
			continue
		}
		if !filter.matches(r) {
			continue
		}
		if len(resp.Rules) == size {
			last := resp.Rules[len(resp.Rules)-1]
			resp.NextPageToken = encodeCursor(pageCursor{Priority: last.Priority, Name: last.Name}, req.GetFilter())
			break
		}
		resp.Rules = append(resp.Rules, apiconv.RuleToProto(r))
	}
	return resp, nil
}

// mutableRuleFields are the update_mask paths a client may set; the rest of a
// rule is its identity or output only.
var mutableRuleFields = []string{
	"priority", "fixed_rate", "reservoir_size", "service_name", "service_type", "host",
	"http_method", "url_path", "resource_arn", "attributes", "description", "labels",
}

func (s *ruleService) UpdateRule(ctx context.Context, req *pb.UpdateRuleRequest) (*pb.UpdateRuleResponse, error) {
	in := req.GetRule()
	if in == nil {
		return nil, invalid("rule", "is required")
	}
	if err := rules.ValidateName(in.GetName()); err != nil {
		return nil, prefixFields("rule.", err)
	}
	paths, err := updatePaths(req.GetUpdateMask().GetPaths())
	if err != nil {
		return nil, err
	}
	var wantRev int64
	if in.GetEtag() != "" {
		if wantRev, err = rules.ParseEtag(in.GetEtag()); err != nil {
			return nil, invalid("rule.etag", err.Error())
		}
	}
	patch := apiconv.RuleFromProto(in)
	for attempt := 0; ; attempt++ {
		cur, err := s.store.Rule(ctx, in.GetName())
		if err != nil {
			return nil, err
		}
		if wantRev != 0 && cur.Revision != wantRev {
			return nil, fmt.Errorf("rule %q has etag %q, not %q: %w", cur.Name, cur.Etag(), in.GetEtag(), store.ErrConflict)
		}
		next := applyMask(cur, &patch, paths).Normalize()
		if err := rules.CheckDefault(&next); err != nil {
			return nil, err
		}
		if err := rules.Validate(&next); err != nil {
			return nil, prefixFields("rule.", err)
		}
		updated, err := s.store.UpdateRule(ctx, next, cur.Revision, actor(ctx))
		if errors.Is(err, store.ErrConflict) && wantRev == 0 && attempt < updateRetries {
			continue // another edit landed between our read and write
		}
		if err != nil {
			return nil, err
		}
		return &pb.UpdateRuleResponse{Rule: apiconv.RuleToProto(&updated)}, nil
	}
}

func updatePaths(paths []string) ([]string, error) {
	if len(paths) == 0 || len(paths) == 1 && paths[0] == "*" {
		return mutableRuleFields, nil
	}
	for _, p := range paths {
		if !slices.Contains(mutableRuleFields, p) {
			return nil, invalid("update_mask", fmt.Sprintf("%q is not a field that can be updated; use one of %s", p, strings.Join(mutableRuleFields, ", ")))
		}
	}
	return paths, nil
}

// applyMask returns cur with the fields named in paths taken from patch.
func applyMask(cur rules.Rule, patch *rules.Rule, paths []string) rules.Rule {
	next := cur.Clone()
	for _, p := range paths {
		switch p {
		case "priority":
			next.Priority = patch.Priority
		case "fixed_rate":
			next.FixedRate = patch.FixedRate
		case "reservoir_size":
			next.ReservoirSize = patch.ReservoirSize
		case "service_name":
			next.ServiceName = patch.ServiceName
		case "service_type":
			next.ServiceType = patch.ServiceType
		case "host":
			next.Host = patch.Host
		case "http_method":
			next.HTTPMethod = patch.HTTPMethod
		case "url_path":
			next.URLPath = patch.URLPath
		case "resource_arn":
			next.ResourceARN = patch.ResourceARN
		case "attributes":
			next.Attributes = maps.Clone(patch.Attributes)
		case "description":
			next.Description = patch.Description
		case "labels":
			next.Labels = maps.Clone(patch.Labels)
		}
	}
	return next
}

func (s *ruleService) DeleteRule(ctx context.Context, req *pb.DeleteRuleRequest) (*pb.DeleteRuleResponse, error) {
	if err := rules.ValidateName(req.GetName()); err != nil {
		return nil, err
	}
	var rev int64
	if req.GetEtag() != "" {
		var err error
		if rev, err = rules.ParseEtag(req.GetEtag()); err != nil {
			return nil, invalid("etag", err.Error())
		}
	}
	if req.GetName() == rules.DefaultName {
		return nil, fmt.Errorf("delete %q: %w", req.GetName(), rules.ErrDefaultRule)
	}
	if err := s.store.DeleteRule(ctx, req.GetName(), rev, actor(ctx)); err != nil {
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
	page, err := s.store.RuleEvents(ctx, req.GetRuleName(), size, req.GetPageToken())
	if err != nil {
		return nil, err
	}
	resp := &pb.ListRuleEventsResponse{NextPageToken: page.NextToken}
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

// actor names who makes an edit: the caller's own claim if it sent one (the
// CLI sends user@host), else its network address.
func actor(ctx context.Context) string {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(ActorMetadataKey); len(v) > 0 && v[0] != "" {
			a := strings.Map(func(r rune) rune {
				if r < ' ' || r == 0x7f {
					return -1
				}
				return r
			}, v[0])
			if len(a) > maxActorLen {
				a = strings.ToValidUTF8(a[:maxActorLen], "")
			}
			return a
		}
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return "anonymous@" + p.Addr.String()
	}
	return "anonymous"
}
