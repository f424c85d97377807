package server

import (
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// cloneTargets returns deep copies of ts in three allocations, whatever
// their number. proto.Clone of each target, which withBudgets used, goes
// through reflection and cost a tenth of what a stream's report costs the
// server. TestCloneTargetsCopiesEveryField keeps it in step with the proto.
func cloneTargets(ts []*pb.SamplingTarget) []*pb.SamplingTarget {
	if len(ts) == 0 {
		return nil
	}
	out := make([]*pb.SamplingTarget, len(ts))
	vals := make([]pb.SamplingTarget, len(ts))
	var stamps []timestamppb.Timestamp
	for i, t := range ts {
		c := &vals[i]
		c.RuleName = t.GetRuleName()
		c.ReservoirQuota = t.GetReservoirQuota()
		c.FixedRate = t.GetFixedRate()
		c.Receipt = t.GetReceipt()
		if e := t.GetReservoirQuotaExpiry(); e != nil {
			if stamps == nil {
				stamps = make([]timestamppb.Timestamp, len(ts))
			}
			stamps[i].Seconds, stamps[i].Nanos = e.GetSeconds(), e.GetNanos()
			c.ReservoirQuotaExpiry = &stamps[i]
		}
		out[i] = c
	}
	return out
}
