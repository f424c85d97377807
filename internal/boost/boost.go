// Package boost decides adaptive-sampling boosts (X-Ray's SamplingRateBoost):
// a short rise of a rule's fixed rate, for every client of the rule, when the
// share of its traces that are anomalous (an HTTP 5xx, a span status error)
// rises above its recent baseline, so that the traces of an incident are
// there to look at without paying for a high rate all month.
//
// It owns the whole model, and nothing else: each rule's State (the fleet's
// anomaly counts of the last two report intervals and a decaying baseline of
// the ones before, and the last boost), Decide (whether to boost now, at
// what rate and until when, and why), the sizing (the smallest rate that
// captures enough anomalous traces, never above the rule's MaxRate, at most
// a minute, one boost per cooldown window), and the room the budgets
// covering a rule leave a boost (BudgetRoom). It is transport-neutral and
// does no I/O: time and every figure are passed in. Memory keeps the states
// of a single process; a shared store keeps them for replicas with the same
// arithmetic (see docs/BOOSTS.md).
package boost

import (
	"math"
	"time"
)

// Config is a rule's SamplingRateBoost: how far and how often its fixed rate
// may be boosted. A rule without one is never boosted; the Default rule has
// none.
type Config struct {
	// MaxRate is the highest rate a boost may set, in [0, 1]. A boost's
	// rate is between the fixed rate in force and MaxRate.
	MaxRate float64
	// Cooldown is the window in which at most one boost starts: a boost
	// starts no sooner than Cooldown after the start of the one before.
	// Whole minutes on X-Ray's wire (CooldownWindowMinutes).
	Cooldown time.Duration
}

// Counts are anomaly statistics: traces that matched a rule, how many of
// them were anomalous, and how many of those were sampled. A client reports
// its counts since its last report; a State sums every client's per report
// interval. Float64, so that a fleet's sums never overflow.
type Counts struct {
	Total     float64
	Anomalies float64
	Sampled   float64
}

// Plus returns the sum of c and o.
func (c Counts) Plus(o Counts) Counts {
	return Counts{Total: c.Total + o.Total, Anomalies: c.Anomalies + o.Anomalies, Sampled: c.Sampled + o.Sampled}
}

// Scale returns c with every count multiplied by f.
func (c Counts) Scale(f float64) Counts {
	return Counts{Total: c.Total * f, Anomalies: c.Anomalies * f, Sampled: c.Sampled * f}
}

// Share is the anomalous share of the traces, 0 without traces.
func (c Counts) Share() float64 {
	if !(c.Total > 0) {
		return 0
	}
	return math.Min(c.Anomalies/c.Total, 1)
}

// Clean maps counts to what the model reads: finite, not negative, at most
// maxCount, anomalies at most the total and sampled anomalies at most the
// anomalies. Check refuses documents that need it; Clean keeps a State
// sound whatever it is given.
func (c Counts) Clean() Counts {
	c.Total = cleanCount(c.Total)
	c.Anomalies = math.Min(cleanCount(c.Anomalies), c.Total)
	c.Sampled = math.Min(cleanCount(c.Sampled), c.Anomalies)
	return c
}

// maxCount bounds every count a State holds, so that sums and the decay
// stay finite whatever clients send.
const maxCount = 1e15

func cleanCount(x float64) float64 {
	switch {
	case !(x > 0):
		return 0
	case x > maxCount:
		return maxCount
	}
	return x
}

// Boost is a temporary fixed rate for every client of a rule. The zero
// Boost is none.
type Boost struct {
	// Rate replaces the rule's fixed rate (budgets applied) while the boost
	// is in force; it is never below it.
	Rate float64
	// Start is when the boost was decided; Expiry when it ends (X-Ray's
	// BoostRateTTL), at most MaxLife after Start.
	Start  time.Time
	Expiry time.Time
}

// InForce reports whether the boost applies at now.
func (b Boost) InForce(now time.Time) bool {
	return b.Rate > 0 && !now.Before(b.Start) && now.Before(b.Expiry)
}

// RateInForce is the fixed rate a client samples at now: the boost's rate
// while it is in force, if higher, else fixed. The report path bounds a
// client's sampled count by it (and receipts carry it), so that the traces a
// boost samples are counted, never cut as implausible.
func (b Boost) RateInForce(fixed float64, now time.Time) float64 {
	if b.InForce(now) {
		return math.Max(fixed, b.Rate)
	}
	return fixed
}

// MaxLife is the longest a boost lasts (X-Ray's: "up to 1 minute").
const MaxLife = time.Minute

// Options are the control plane's settings of the model, the same for every
// rule. The zero value of a field takes its default.
type Options struct {
	// Interval is how often clients report, and the length of the buckets
	// a State sums counts in. Default 10 s (X-Ray's targets interval).
	Interval time.Duration
	// HalfLife is the baseline's: an interval's counts weigh half as much
	// HalfLife later. Default 10 min.
	HalfLife time.Duration
	// WarmUp is how long a rule's counts must have been kept before its
	// first boost, so that there is a baseline to compare with. Default
	// 1 min.
	WarmUp time.Duration
	// Life is how long a boost lasts, at most (and by default) MaxLife.
	Life time.Duration
	// Target is how many anomalous traces a boost aims to capture over its
	// life. Default 30.
	Target float64
	// Confidence is the z-score of the chance of capturing Target: a boost
	// is sized so that, with Poisson arrivals, it captures fewer than Target
	// with probability at most about Φ(-Confidence). Default 1.645 (5 %).
	Confidence float64
	// Ratio, MinAnomalies and Significance say when an anomaly share is
	// above its baseline: the recent share at least Ratio times the
	// baseline's (default 2), at least MinAnomalies anomalous traces
	// (default 5), and so many more than the baseline's share predicts
	// that, were the baseline's share still the truth, so many would come
	// with probability at most Significance (a Chernoff bound on the
	// Poisson tail; default 1e-6, as the decision is taken again at every
	// report: some 170,000 a day for 20 clients).
	Ratio        float64
	MinAnomalies float64
	Significance float64
	// MinGain: a boost that the budgets cap to less than MinGain of the
	// rise it wanted is not started, so that it does not spend the
	// cooldown window for nothing. Default 0.1.
	MinGain float64
}

// Defaults.
const (
	DefaultInterval     = 10 * time.Second
	DefaultHalfLife     = 10 * time.Minute
	DefaultWarmUp       = time.Minute
	DefaultTarget       = 30
	DefaultConfidence   = 1.645
	DefaultRatio        = 2
	DefaultMinAnomalies = 5
	DefaultSignificance = 1e-6
	DefaultMinGain      = 0.1
)

// WithDefaults returns o with every unset or unusable field at its default,
// and Life at most MaxLife.
func (o Options) WithDefaults() Options {
	dur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	num := func(x *float64, def float64) {
		if !(*x > 0) || math.IsInf(*x, 0) {
			*x = def
		}
	}
	dur(&o.Interval, DefaultInterval)
	dur(&o.HalfLife, DefaultHalfLife)
	dur(&o.WarmUp, DefaultWarmUp)
	dur(&o.Life, MaxLife)
	o.Life = min(o.Life, MaxLife)
	num(&o.Target, DefaultTarget)
	num(&o.Confidence, DefaultConfidence)
	num(&o.Ratio, DefaultRatio)
	num(&o.MinAnomalies, DefaultMinAnomalies)
	num(&o.Significance, DefaultSignificance)
	num(&o.MinGain, DefaultMinGain)
	if o.Significance >= 1 {
		o.Significance = DefaultSignificance
	}
	o.MinGain = math.Min(o.MinGain, 1)
	return o
}

// Decay is the weight one interval takes off the baseline: 2^(-Interval /
// HalfLife). A store that keeps States elsewhere applies the same factor.
func (o Options) Decay() float64 {
	o = o.WithDefaults()
	return math.Exp2(-o.Interval.Seconds() / o.HalfLife.Seconds())
}

// Bucket returns the index of the interval t falls in.
func (o Options) Bucket(t time.Time) int64 {
	return t.UnixNano() / int64(o.WithDefaults().Interval)
}

// clamp01 maps x to [0, 1]; NaN maps to 0.
func clamp01(x float64) float64 {
	if !(x > 0) {
		return 0
	}
	return math.Min(x, 1)
}
