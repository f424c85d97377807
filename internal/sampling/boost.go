package sampling

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tracesampling/controlplane/internal/boost"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// BoostStore keeps each rule's boost state where every replica reads the
// same one: boost.Memory in the embedded store, the Redis twin in
// redisstore (both boost.Store).
type BoostStore interface {
	RecordBoostCounts(ctx context.Context, now time.Time, o boost.Options, adds []boost.Add) ([]boost.State, error)
	StartBoost(ctx context.Context, rule string, prev time.Time, b boost.Boost) (boost.Boost, bool, error)
}

// BoostStatistics is one rule's anomaly counts from one client since its
// last report (X-Ray's SamplingBoostStatisticsDocument).
type BoostStatistics struct {
	Rule string
	BoostCounts
	// Interval is the time the counts cover as the client says; zero: not
	// said.
	Interval time.Duration
}

// boostDoc is one report's boost counts with their place in it, for
// rejections: in Report.Boosts, or for a Statistics' own, in
// Report.Statistics.
type boostDoc struct {
	BoostStatistics
	index int
}

// BoostCounts are anomaly counts: the rule's local root spans that ended
// (Total), the anomalous ones (Anomalies), and the anomalous ones sampled
// (Sampled).
type BoostCounts struct {
	Total, Anomalies, Sampled int64
}

// boostMetrics count the boost decisions.
type boostMetrics struct {
	decisions *prometheus.CounterVec // by reason
	started   prometheus.Counter
	failed    prometheus.Counter
}

func newBoostMetrics(reg prometheus.Registerer) *boostMetrics {
	m := &boostMetrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "controlplane_boost_decisions_total",
			Help: "Boost decisions for the targets of rules with a sampling_rate_boost, by reason (boost.Reason: active, started, capped_max_rate, capped_budget, normal, cooldown, warming_up, enough, budget_exhausted, no_budget_room, captured, disabled).",
		}, []string{"reason"}),
		started: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_boosts_started_total",
			Help: "Boosts this replica started (the store's compare-and-set went its way; replicas that lost it hand out the winner's).",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "controlplane_boost_store_failures_total",
			Help: "Boost store calls that failed; the reports they served were answered without boosts.",
		}),
	}
	reg.MustRegister(m.decisions, m.started, m.failed)
	return m
}

// boostCounts checks a report's boost documents, rejecting those of unknown
// rules and bad counts, and sums the rest per rule, leaving out the rules
// without a boost (their documents are accepted and ignored).
func (s *Core) boostCounts(docs []boostDoc, view *catalog.View, reject func(Rejection)) map[string]boost.Counts {
	var sums map[string]boost.Counts
	for _, d := range docs {
		i := d.index
		rule := view.Rule(d.Rule)
		if rule == nil {
			reject(Rejection{Rule: d.Rule, Index: i, Code: RejectUnknownRule, Message: fmt.Sprintf("no rule %q at rules version %d", d.Rule, view.Version)})
			continue
		}
		span := d.Interval
		if span > maxReportSpan || span < 0 {
			reject(Rejection{Rule: d.Rule, Index: i, Code: RejectInterval, Message: fmt.Sprintf("interval must be positive and at most %v", maxReportSpan)})
			continue
		}
		if rj := boost.Check(d.Total, d.Anomalies, d.Sampled, span); rj != nil {
			reject(Rejection{Rule: d.Rule, Index: i, Code: rj.Code, Message: rj.Message})
			continue
		}
		if rule.Boost == nil {
			continue
		}
		if sums == nil {
			sums = map[string]boost.Counts{}
		}
		sums[rule.Name] = sums[rule.Name].Plus(boost.Counts{Total: float64(d.Total), Anomalies: float64(d.Anomalies), Sampled: float64(d.Sampled)})
	}
	return sums
}

// boostRecord is one report's call to the boost store, run beside the
// ledger's: the states of the rules counted or answered.
type boostRecord struct {
	index  map[string]int // rule → its state in states
	states []boost.State
	err    error
	done   chan struct{}
}

// recordBoosts starts the boost store call for a report: each rule's
// counts, and a read of the state of every boostable rule the report gets a
// target for (answered). It returns nil when there is nothing to record or
// read. The call has the batcher's deadline, not the caller's: counts a
// client sent are recorded even if it stops waiting.
func (s *Core) recordBoosts(ctx context.Context, now time.Time, counts map[string]boost.Counts, answered []*rules.Rule) *boostRecord {
	if s.boosts == nil || len(counts)+len(answered) == 0 {
		return nil
	}
	adds := make([]boost.Add, 0, len(counts)+len(answered))
	index := make(map[string]int, cap(adds))
	add := func(rule string) {
		if _, ok := index[rule]; !ok {
			index[rule] = len(adds)
			adds = append(adds, boost.Add{Rule: rule, Counts: counts[rule]})
		}
	}
	for rule := range counts {
		add(rule)
	}
	for _, r := range answered {
		add(r.Name)
	}
	rec := &boostRecord{index: index, done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.batcher.timeout)
	go func() {
		defer close(rec.done)
		defer cancel()
		rec.states, rec.err = s.boosts.RecordBoostCounts(ctx, now, s.boostOpts, adds)
		if rec.err == nil && len(rec.states) != len(adds) {
			rec.err = fmt.Errorf("boost store returned %d states for %d rules", len(rec.states), len(adds))
		}
		if rec.err != nil {
			// Boosts are best effort: the report goes on without them.
			s.boostMetrics.failed.Inc()
			s.log.Debug("recording boost counts failed; the report is answered without boosts", "err", rec.err)
		}
	}()
	return rec
}

// wait waits for the call to return.
func (r *boostRecord) wait() { <-r.done }

// state waits for the call and returns rule's state, if the call went
// through.
func (r *boostRecord) state(rule string) (boost.State, bool) {
	r.wait()
	i, ok := r.index[rule]
	if r.err != nil || !ok {
		return boost.State{}, false
	}
	return r.states[i], true
}

// boostFor decides the boost to hand out with rule's target for service at
// now (the zero Boost for none): the boost in force, or a new one started
// through the store's compare-and-set, within the room the budgets
// covering the rule leave it (boost.Decide). factors are the rule's budget
// factors in force (fixed rate, reservoir).
func (s *Core) boostFor(ctx context.Context, rec *boostRecord, rule *rules.Rule, service string, budgets *catalog.Budgets, factors [2]float64, now time.Time) boost.Boost {
	if rule.Boost == nil || rec == nil {
		return boost.Boost{}
	}
	st, ok := rec.state(rule.Name)
	if !ok {
		return boost.Boost{}
	}
	cfg := boost.Config{MaxRate: rule.Boost.MaxRate, Cooldown: rule.Boost.Cooldown}
	d := boost.Decide(st, now, boost.Rule{Config: &cfg, FixedRate: rule.FixedRate * factors[0], Reservoir: float64(rule.ReservoirSize) * factors[1]},
		s.room(budgets, service, rule, now), s.boostOpts)
	s.boostMetrics.decisions.WithLabelValues(string(d.Reason)).Inc()
	if !d.Start {
		return d.Boost
	}
	b, started, err := s.boosts.StartBoost(ctx, rule.Name, st.Boost.Start, d.Boost)
	if err != nil {
		s.boostMetrics.failed.Inc()
		s.log.Warn("starting a boost failed; it was not handed out", "rule", rule.Name, "err", err)
		return boost.Boost{}
	}
	if started {
		s.boostMetrics.started.Inc()
		s.log.Info("boost started", "rule", rule.Name, "rate", b.Rate, "expiry", b.Expiry, "reason", d.Reason, "share", d.Share, "baseline", d.Baseline)
	}
	if !b.InForce(now) {
		return boost.Boost{}
	}
	return b
}

// room is what the enforcing budgets covering rule for service leave one
// of its boosts at now: the smallest boost.BudgetRoom of their decisions
// (the ones Factors reads: this month's, of the budget as it is now).
func (s *Core) room(budgets *catalog.Budgets, service string, rule *rules.Rule, now time.Time) boost.Room {
	room := boost.Unlimited()
	for i := range budgets.Budgets {
		b := &budgets.Budgets[i]
		if !b.Scope.Covers(service, rule) {
			continue
		}
		st, ok := budgets.States[b.Name]
		if !ok || st.BudgetUID != b.UID {
			continue
		}
		room = room.Min(boost.BudgetRoom(b, &st, rule.Name, rule.Boost.Cooldown, now, s.roomOpts))
	}
	return room
}
