package boost

import (
	"fmt"
	"math"
	"time"
)

// State is one rule's anomaly history and last boost, as every replica sees
// it. Its size does not depend on the number of clients or on time: the
// counts of the two newest report intervals kept apart, and every interval
// before them folded into a baseline that halves its weight every HalfLife.
//
// The two newest intervals are the "recent" window Decide compares with the
// baseline: the one before the newest is complete, and the newest fills as
// reports arrive, so that an anomaly shows up as soon as enough reports
// carry it, without waiting for an interval to end, and the interval that
// had the anomaly's start is not yet in the baseline it is compared with.
//
// The zero State is a rule never reported.
type State struct {
	// Bucket is the newest interval counted (Options.Bucket of the arrival
	// time); Recent[0] holds its counts and Recent[1] those of Bucket-1.
	Bucket int64
	Recent [2]Counts
	// Baseline is every interval up to Bucket-2, each weighted by Decay to
	// the power of its age in intervals at Bucket-2: decayed sums, whose
	// Share is the traffic-weighted mean share of the last half-lives.
	Baseline Counts
	// Since is the first interval counted; Seen says whether there was one.
	Since int64
	Seen  bool
	// Boost is the rule's last boost, in force or not, the zero Boost if it
	// never had one: its Start is where the cooldown runs from.
	Boost Boost
	// Captured is the sampled anomalous traces reported while Boost was in
	// force: what it has captured so far, as far as reports tell (a
	// client's captures arrive with its next report, up to an interval
	// later).
	Captured float64
}

// Record counts c, which arrived at now: Add in now's interval, and c's
// sampled anomalies toward the boost's capture if one is in force. It is
// what a store does with each rule's counts.
func (s *State) Record(now time.Time, c Counts, o Options) {
	o = o.WithDefaults()
	c = c.Clean()
	s.Add(o.Bucket(now), c, o.Decay())
	if s.Boost.InForce(now) {
		s.Captured = cleanCount(s.Captured + c.Sampled)
	}
}

// Started returns s with b as its boost, nothing captured yet.
func (s State) Started(b Boost) State {
	s.Boost, s.Captured = b, 0
	return s
}

// Add counts c, which arrived in bucket. A bucket after the newest advances
// the state to it first; one more than one interval older than the newest
// (a replica whose clock is behind) goes straight into the baseline at its
// age. decay is Options.Decay.
func (s *State) Add(bucket int64, c Counts, decay float64) {
	c = c.Clean()
	if !s.Seen {
		*s = State{Bucket: bucket, Since: bucket, Seen: true, Boost: s.Boost, Captured: s.Captured}
	}
	s.Advance(bucket, decay)
	switch age := s.Bucket - bucket; {
	case age == 0, age == 1:
		s.Recent[age] = s.Recent[age].Plus(c)
	default:
		s.Baseline = s.Baseline.Plus(c.Scale(pow(decay, age-2))).Clean()
	}
	s.Since = min(s.Since, bucket)
}

// Advance moves the state to bucket, if it is after the newest: the
// intervals that leave the recent window fold into the baseline, which
// decays by one step per interval. The same as advancing one interval at a
// time, in one step.
func (s *State) Advance(bucket int64, decay float64) {
	if !s.Seen || bucket <= s.Bucket {
		return
	}
	g := bucket - s.Bucket
	if g == 1 {
		s.Baseline = s.Baseline.Scale(decay).Plus(s.Recent[1]).Clean()
		s.Recent = [2]Counts{{}, s.Recent[0]}
	} else {
		s.Baseline = s.Baseline.Scale(pow(decay, g)).Plus(s.Recent[1].Scale(pow(decay, g-1))).Plus(s.Recent[0].Scale(pow(decay, g-2))).Clean()
		s.Recent = [2]Counts{}
	}
	s.Bucket = bucket
}

// Window is the recent window's counts: the newest interval and the one
// before.
func (s *State) Window() Counts { return s.Recent[0].Plus(s.Recent[1]) }

// pow is decay^n for n >= 0, 0 for a decay that is not in (0, 1].
func pow(decay float64, n int64) float64 {
	if !(decay > 0) || decay > 1 || n < 0 {
		return 0
	}
	return math.Pow(decay, float64(n))
}

// Codes of the documents Check refuses, as the report path names them to
// clients (X-Ray's UnprocessedBoostStatistics carry them in the message,
// with ErrorCode "400").
const (
	CodeNegative     = "NEGATIVE_COUNT"
	CodeInconsistent = "INCONSISTENT_COUNTS"
	CodeTooLarge     = "COUNT_TOO_LARGE"
)

// MaxTracesPerSecond bounds what one document may claim: the same bound the
// report path puts on request counts.
const MaxTracesPerSecond = 10e6

// Check returns why one client's anomaly document, covering span (two
// report intervals when unknown), cannot be counted, or nil: negative
// counts, more anomalies than traces or more sampled anomalies than
// anomalies, or more traces than MaxTracesPerSecond over span.
func Check(total, anomalies, sampled int64, span time.Duration) *Rejection {
	if span <= 0 {
		span = 2 * DefaultInterval
	}
	switch {
	case total < 0 || anomalies < 0 || sampled < 0:
		return &Rejection{Code: CodeNegative, Message: "counts must not be negative"}
	case anomalies > total:
		return &Rejection{Code: CodeInconsistent, Message: fmt.Sprintf("AnomalyCount %d is more than TotalCount %d", anomalies, total)}
	case sampled > anomalies:
		return &Rejection{Code: CodeInconsistent, Message: fmt.Sprintf("SampledAnomalyCount %d is more than AnomalyCount %d", sampled, anomalies)}
	case float64(total) > MaxTracesPerSecond*span.Seconds():
		return &Rejection{Code: CodeTooLarge, Message: fmt.Sprintf("TotalCount %d is more than %g traces a second over %s", total, MaxTracesPerSecond, span)}
	}
	return nil
}

// Rejection says why a document was not counted.
type Rejection struct {
	Code    string
	Message string
}

func (r *Rejection) Error() string { return r.Code + ": " + r.Message }
