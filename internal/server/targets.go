package server

import (
	"math"
	"slices"
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
	return statisticsFromProtoInto(nil, docs)
}

// statisticsFromProtoInto is statisticsFromProto, decoding over out's
// documents (grown if it is too short): a stream reuses one slice.
func statisticsFromProtoInto(out []sampling.Statistics, docs []*pb.SamplingStatistics) []sampling.Statistics {
	out = slices.Grow(out[:0], len(docs))[:len(docs)]
	clear(out)
	for i, d := range docs {
		s := &out[i]
		s.Rule, s.Requests, s.Sampled, s.Borrowed, s.Receipt = d.GetRuleName(), d.GetRequestCount(), d.GetSampledCount(), d.GetBorrowCount(), d.GetReceipt()
		if ts := d.GetEndTime(); ts != nil {
			s.Time = badTime
			if ts.IsValid() {
				s.Time = ts.AsTime()
			}
		}
		if b := d.GetBoost(); b != nil {
			s.Boost = &sampling.BoostCounts{Total: b.GetTotalCount(), Anomalies: b.GetAnomalyCount(), Sampled: b.GetSampledAnomalyCount()}
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

// targetSetToProto encodes the core's answer: in two allocations when it
// has at most one target (targetsMessage and its interval), else in five
// whatever the number of targets. proto.Clone of each target, which the
// service once used, goes through reflection and cost a tenth of what a
// stream's report costs the server. TestTargetsToProtoCopiesEveryField
// keeps it in step with the proto.
func targetSetToProto(ts sampling.TargetSet) *pb.TargetSet {
	return &newTargetsMessage(ts, durationpb.New(ts.Interval)).set
}

// targetsResponse is a stream's answer of ts. interval holds the report
// interval as the stream's last answer carried it, which this one shares
// if it is the same (it always is on one replica): a message sent is only
// read, and without it an answer is one allocation class smaller (issue
// 17). A stream's answers are made one at a time.
func targetsResponse(ts sampling.TargetSet, interval **durationpb.Duration) *pb.StreamSamplingResponse {
	return new(targetsMessage).response(ts, interval)
}

// response fills m with the answer of ts (see targetsResponse) and
// returns it. A stream that encodes its answers itself (encodeTargets)
// fills one targetsMessage for each; gRPC never sees it.
func (m *targetsMessage) response(ts sampling.TargetSet, interval **durationpb.Duration) *pb.StreamSamplingResponse {
	iv := *interval
	if iv == nil || iv.Seconds != int64(ts.Interval/time.Second) || iv.Nanos != int32(ts.Interval%time.Second) {
		iv = durationpb.New(ts.Interval)
		*interval = iv
	}
	m.fill(ts, iv)
	return &m.resp
}

// targetsMessage is a stream's targets answer and its parts, made together:
// the usual answer has one target (an SDK reports the rules it used), and
// each part made on its own took eight allocations a report (issue 17).
type targetsMessage struct {
	resp   pb.StreamSamplingResponse
	wrap   pb.StreamSamplingResponse_Targets
	set    pb.TargetSet
	one    [1]*pb.SamplingTarget
	target pb.SamplingTarget
	expiry timestamppb.Timestamp
}

// newTargetsMessage encodes ts, with interval as its report interval.
func newTargetsMessage(ts sampling.TargetSet, interval *durationpb.Duration) *targetsMessage {
	m := &targetsMessage{}
	m.fill(ts, interval)
	return m
}

// fill encodes ts into m, with interval as its report interval, over what
// m held.
func (m *targetsMessage) fill(ts sampling.TargetSet, interval *durationpb.Duration) {
	m.resp.Reset()
	m.set.Reset()
	m.wrap.Targets = &m.set
	m.resp.Message = &m.wrap
	out := &m.set
	out.RulesVersion = ts.RulesVersion
	out.ReportInterval = interval
	if len(ts.Targets) == 1 {
		m.target.Reset()
		targetToProto(&m.target, &ts.Targets[0], &m.expiry)
		m.one[0] = &m.target
		out.Targets = m.one[:]
	} else {
		out.Targets = targetsToProto(ts.Targets)
	}
	for _, r := range ts.Rejected {
		out.Rejected = append(out.Rejected, &pb.RejectedStatistics{RuleName: r.Rule, Index: int32(r.Index), Code: r.Code, Message: r.Message})
	}
	for _, r := range ts.BoostRejected {
		// The document's boost counts only: its other counts were taken.
		out.Rejected = append(out.Rejected, &pb.RejectedStatistics{RuleName: r.Rule, Index: int32(r.Index), Code: r.Code, Message: "boost: " + r.Message})
	}
}

func targetsToProto(ts []sampling.Target) []*pb.SamplingTarget {
	if len(ts) == 0 {
		return nil
	}
	out := make([]*pb.SamplingTarget, len(ts))
	vals := make([]pb.SamplingTarget, len(ts))
	var stamps []timestamppb.Timestamp
	for i := range ts {
		if stamps == nil && !ts[i].Expiry.IsZero() {
			stamps = make([]timestamppb.Timestamp, len(ts))
		}
		var stamp *timestamppb.Timestamp
		if stamps != nil {
			stamp = &stamps[i]
		}
		targetToProto(&vals[i], &ts[i], stamp)
		out[i] = &vals[i]
	}
	return out
}

// targetToProto encodes t into c, its expiry, if it has one, into stamp.
func targetToProto(c *pb.SamplingTarget, t *sampling.Target, stamp *timestamppb.Timestamp) {
	c.RuleName = t.Rule
	c.ReservoirQuota = t.Quota
	c.FixedRate = t.FixedRate
	c.Receipt = t.Receipt
	if !t.Expiry.IsZero() {
		stamp.Seconds, stamp.Nanos = t.Expiry.Unix(), int32(t.Expiry.Nanosecond())
		c.ReservoirQuotaExpireTime = stamp
	}
	if b := t.Boost; b.Rate > 0 {
		// Only while a rule is boosted: two allocations more.
		c.Boost = &pb.SamplingBoost{Rate: b.Rate, ExpireTime: timestamppb.New(b.Expiry)}
	}
}
