package server

import (
	"strings"
	"testing"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/servetest"
)

// TestBoostStatisticsRefused: a document's boost counts are checked apart
// from its other counts. Refused, they come back as a RejectedStatistics
// with the document's index, the code and a "boost: " message, and the
// document still gets its target; a document's good boost counts, and
// those of a rule without a boost, are taken without a word.
func TestBoostStatisticsRefused(t *testing.T) {
	clock := newClock()
	rep := startReplica(t, newMemStore(t), clock.Now)
	createRule(t, rep.rules, &pb.Rule{Name: "checkout", Priority: 1, FixedRate: 0.01, ReservoirSize: 1,
		SamplingRateBoost: &pb.SamplingRateBoost{MaxRate: 0.5, CooldownWindowMinutes: 5}})
	createRule(t, rep.rules, &pb.Rule{Name: "search", Priority: 2, FixedRate: 0.01})
	servetest.WaitVersion(t, rep.catalog, rep.first+2)
	withBoost := func(s *pb.SamplingStatistics, b *pb.BoostStatistics) *pb.SamplingStatistics {
		s.Boost = b
		return s
	}
	for _, tc := range []struct {
		name  string
		boost *pb.BoostStatistics
		code  string
	}{
		{"good", &pb.BoostStatistics{TotalCount: 100, AnomalyCount: 3, SampledAnomalyCount: 1}, ""},
		{"negative", &pb.BoostStatistics{TotalCount: -1}, "NEGATIVE_COUNT"},
		{"more anomalies than traces", &pb.BoostStatistics{TotalCount: 10, AnomalyCount: 11}, "INCONSISTENT_COUNTS"},
		{"too many", &pb.BoostStatistics{TotalCount: 1e12}, "COUNT_TOO_LARGE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := rep.sampling.GetSamplingTargets(ctxT(t), &pb.GetSamplingTargetsRequest{ClientId: "c-" + tc.name, ServiceName: "shop",
				Statistics: []*pb.SamplingStatistics{
					withBoost(stats("search", 100, 1, ""), &pb.BoostStatistics{TotalCount: 100, AnomalyCount: 100}),
					withBoost(stats("checkout", 100, 1, ""), tc.boost),
				}})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.GetTargets()) != 2 {
				t.Errorf("targets %v, want both rules'", resp.GetTargets())
			}
			rj := resp.GetRejected()
			if tc.code == "" {
				if len(rj) != 0 {
					t.Errorf("rejected %v, want none", rj)
				}
				return
			}
			if len(rj) != 1 || rj[0].GetIndex() != 1 || rj[0].GetRuleName() != "checkout" || rj[0].GetCode() != tc.code || !strings.HasPrefix(rj[0].GetMessage(), "boost: ") {
				t.Errorf("rejected %v, want checkout's (index 1) as %s, \"boost: ...\"", rj, tc.code)
			}
		})
	}
}
