// Package apiconv maps between the domain types (rules, store events) and the
// public protobuf API, so that the server and the CLI agree on one mapping.
package apiconv

import (
	"maps"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/rules"
	"github.com/tracesampling/controlplane/internal/store"
)

// RuleToProto returns the API form of r, with its etag and times.
func RuleToProto(r *rules.Rule) *pb.Rule {
	p := &pb.Rule{
		Name:               r.Name,
		Priority:           r.Priority,
		FixedRate:          r.FixedRate,
		ReservoirSize:      r.ReservoirSize,
		ServiceName:        r.ServiceName,
		ServiceType:        r.ServiceType,
		Host:               r.Host,
		HttpMethod:         r.HTTPMethod,
		UrlPath:            r.URLPath,
		ResourceArn:        r.ResourceARN,
		Attributes:         maps.Clone(r.Attributes),
		ResourceAttributes: maps.Clone(r.ResourceAttributes),
		Description:        r.Description,
		Labels:             maps.Clone(r.Labels),
		CreateTime:         timestamp(r.CreateTime),
		UpdateTime:         timestamp(r.UpdateTime),
		ExpireTime:         timestamp(r.ExpireTime),
		Tags:               maps.Clone(r.Tags),
	}
	if b := r.Boost; b != nil {
		p.SamplingRateBoost = &pb.SamplingRateBoost{MaxRate: b.MaxRate, CooldownWindowMinutes: int32(b.Cooldown / time.Minute)}
	}
	if r.Revision > 0 {
		p.Etag = r.Etag()
	}
	return p
}

// SamplingRuleToProto returns r as the SamplingService sends it to SDKs:
// without description, labels and tags, which are for people, budget scopes
// and AWS tooling. They would multiply the largest rule set an SDK receives
// (a rule at maximum field sizes is 22 kB with description and labels, 99
// kB with tags too, 9.7 kB without; see rules.MaxRules). Resource
// attributes stay: SDKs match them. The boost stays:
// SDKs count anomalies for the rules that have one.
func SamplingRuleToProto(r *rules.Rule) *pb.Rule {
	p := RuleToProto(r)
	p.Description, p.Labels, p.Tags = "", nil, nil
	return p
}

// RuleFromProto returns the domain form of p. Output-only fields (etag,
// create and update times) are ignored; callers parse the etag themselves where it matters.
func RuleFromProto(p *pb.Rule) rules.Rule {
	return rules.Rule{
		Name:               p.GetName(),
		Priority:           p.GetPriority(),
		FixedRate:          p.GetFixedRate(),
		ReservoirSize:      p.GetReservoirSize(),
		ServiceName:        p.GetServiceName(),
		ServiceType:        p.GetServiceType(),
		Host:               p.GetHost(),
		HTTPMethod:         p.GetHttpMethod(),
		URLPath:            p.GetUrlPath(),
		ResourceARN:        p.GetResourceArn(),
		Attributes:         maps.Clone(p.GetAttributes()),
		ResourceAttributes: maps.Clone(p.GetResourceAttributes()),
		Description:        p.GetDescription(),
		Labels:             maps.Clone(p.GetLabels()),
		ExpireTime:         fromTimestamp(p.GetExpireTime()),
		Tags:               maps.Clone(p.GetTags()),
		Boost:              boostFromProto(p.GetSamplingRateBoost()),
	}
}

// boostFromProto returns the domain form of a boost, nil when unset.
func boostFromProto(b *pb.SamplingRateBoost) *rules.RateBoost {
	if b == nil {
		return nil
	}
	return &rules.RateBoost{MaxRate: b.GetMaxRate(), Cooldown: rules.CooldownMinutes(int64(b.GetCooldownWindowMinutes()))}
}

// fromTimestamp returns t as a time, zero when unset. One out of the
// Timestamp's range (years 1 to 9999) comes out of it too, for validation
// to refuse.
func fromTimestamp(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

// EventToProto returns the API form of an audit entry.
func EventToProto(e *store.Event) *pb.RuleEvent {
	p := &pb.RuleEvent{
		Id:           e.ID,
		RuleName:     e.RuleName,
		Actor:        e.Actor,
		EventTime:    timestamp(e.Time),
		RulesVersion: e.RulesVersion,
		Message:      e.Message,
	}
	switch e.Action {
	case store.ActionCreate:
		p.Action = pb.RuleEvent_ACTION_CREATE
	case store.ActionUpdate:
		p.Action = pb.RuleEvent_ACTION_UPDATE
	case store.ActionDelete:
		p.Action = pb.RuleEvent_ACTION_DELETE
	}
	if e.Before != nil {
		p.Before = RuleToProto(e.Before)
	}
	if e.After != nil {
		p.After = RuleToProto(e.After)
	}
	return p
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
