// Package rulepb maps a rule between its domain form (package rules) and
// the public API's protobuf message, so that the server, the CLI and the Go
// SDK read and write a rule's fields the same way.
package rulepb

import (
	"maps"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// ToProto returns the API form of r, with its etag and times.
func ToProto(r *rules.Rule) *pb.Rule {
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

// SamplingToProto returns r as the SamplingService sends it to SDKs:
// without description, labels and tags, which are for people, budget scopes
// and AWS tooling. They would multiply the largest rule set an SDK receives
// (a rule at maximum field sizes is 22 kB with description and labels, 99
// kB with tags too, 9.7 kB without; see rules.MaxRules). Resource
// attributes stay: SDKs match them. The boost stays:
// SDKs count anomalies for the rules that have one.
func SamplingToProto(r *rules.Rule) *pb.Rule {
	p := ToProto(r)
	p.Description, p.Labels, p.Tags = "", nil, nil
	return p
}

// FromProto returns the domain form of p. Output-only fields (etag,
// create and update times) are ignored; callers parse the etag themselves where it matters.
func FromProto(p *pb.Rule) rules.Rule {
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

// timestamp returns t in the API's form, nil when zero.
func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
