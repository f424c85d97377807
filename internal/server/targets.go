package server

import (
	"math"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/sampling"
)

// LedgerStore is what the sampling service needs from a store.
type LedgerStore = sampling.LedgerStore

// badTime stands for a timestamp that is given but not valid: the core
// rejects it as ahead of its clock, as the gRPC API always has.
var badTime = time.Unix(math.MaxInt64/4, 0)

// statisticsFromProto decodes a report's documents for the core.
func statisticsFromProto(docs []*pb.SamplingStatistics) []sampling.Statistics {
	out := make([]sampling.Statistics, len(docs))
	for i, d := range docs {
		s := &out[i]
		s.Rule, s.Requests, s.Sampled, s.Borrowed, s.Receipt = d.GetRuleName(), d.GetRequestCount(), d.GetSampledCount(), d.GetBorrowCount(), d.GetReceipt()
		if ts := d.GetTimestamp(); ts != nil {
			s.Time = badTime
			if ts.IsValid() {
				s.Time = ts.AsTime()
			}
		}
		if iv := d.GetInterval(); iv != nil {
			s.Interval = -1 // given, but not positive or not valid: a bad interval
			if d := iv.AsDuration(); iv.IsValid() && d > 0 {
				s.Interval = d
			}
		}
	}
	return out
}

// targetSetToProto encodes the core's answer, in four allocations whatever
// the number of targets: proto.Clone of each target, which the service once
// used, goes through reflection and cost a tenth of what a stream's report
// costs the server. TestTargetsToProtoCopiesEveryField keeps it in step
// with the proto.
func targetSetToProto(ts sampling.TargetSet) *pb.TargetSet {
	out := &pb.TargetSet{RulesVersion: ts.RulesVersion, ReportInterval: durationpb.New(ts.Interval), Targets: targetsToProto(ts.Targets)}
	for _, r := range ts.Rejected {
		out.Rejected = append(out.Rejected, &pb.RejectedStatistics{RuleName: r.Rule, Index: int32(r.Index), Code: r.Code, Message: r.Message})
	}
	return out
}

func targetsToProto(ts []sampling.Target) []*pb.SamplingTarget {
	if len(ts) == 0 {
		return nil
	}
	out := make([]*pb.SamplingTarget, len(ts))
	vals := make([]pb.SamplingTarget, len(ts))
	var stamps []timestamppb.Timestamp
	for i := range ts {
		t, c := &ts[i], &vals[i]
		c.RuleName = t.Rule
		c.ReservoirQuota = t.Quota
		c.FixedRate = t.FixedRate
		c.Receipt = t.Receipt
		if !t.Expiry.IsZero() {
			if stamps == nil {
				stamps = make([]timestamppb.Timestamp, len(ts))
			}
			stamps[i].Seconds, stamps[i].Nanos = t.Expiry.Unix(), int32(t.Expiry.Nanosecond())
			c.ReservoirQuotaExpiry = &stamps[i]
		}
		out[i] = c
	}
	return out
}
