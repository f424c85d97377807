package sampling

import (
	"context"
	"slices"
	"sync/atomic"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/budget"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/receipt"
)

// Hello is what a client that keeps a session (a stream) says of itself
// when it connects.
type Hello struct {
	Client, Service, ServiceType string
	// Resource is the instance's resource attributes, which rules may name.
	Resource map[string]string
	// RulesVersion is the version of the rules the client holds; 0: none,
	// a new instance, whose first rule set goes through the first-borrow
	// gate.
	RulesVersion int64
}

// Session is what the core remembers of one client between its reports for
// as long as its stream lasts, so that a transport keeping a connection per
// SDK instance only decodes, calls and encodes: the receipts of the last
// targets (the client echoes them only in its first report), the last
// report acknowledged, the last targets (renewed while the store is away,
// sent again when budgets change) and the rule set the client holds.
//
// Record is called by one goroutine at a time (the one receiving reports),
// and may run while the other methods do. Answer, RuleSet and
// BudgetsChanged are called under one lock, which the transport holds until
// it has sent what they return: answers go out in the order they were made,
// and none with budgets older than one sent before it.
type Session struct {
	core  *Core
	hello Hello
	held  *receipt.Held
	keep  receipt.Keeper // held over the core's tokens
	// bufs is the core's memory for the reports (Report.Buffers): the
	// targets of a report, which base keeps, last while the next one is
	// made.
	bufs ReportBuffers
	// acked is the last report numbered and recorded: Record reads it,
	// Answer raises it.
	acked atomic.Uint64

	base      *TargetSet // the last targets before budgets; nil (none yet) or &last
	last      TargetSet
	budgetGen int64 // of the budgets the last targets sent were made with
	// scratch is the targets as budgets have them, reused from one answer
	// to the next: a transport encodes them at once.
	scratch []Target

	// sent is the version of the last rule set sent (the client's, at
	// first), sentRates its rates in force: the rule set goes again when
	// either changes. A client that says it holds the current version
	// still gets the rule set if budgets lower its rates: it cannot know
	// them.
	sent      int64
	sentRates []*pb.RuleRates
	// checked is what the rule set last compared with sent was made of:
	// the catalog's rules and budgets and the month (Catalog.RuleSet is a
	// function of these and the instance). While they are the same, the
	// set is the one sent or found equal to it, so a report, which asks
	// after each answer, skips the lookup (issue 17: the month's start,
	// a lock shared by every stream and the instance's key, per report).
	checked struct {
		view     *catalog.View
		budgets  *catalog.Budgets
		from, to int64 // the month, in Unix nanoseconds: [from, to)
	}
}

// Session starts the session of a client that said h.
func (s *Core) Session(h Hello) *Session {
	held := receipt.NewHeld()
	return &Session{
		core: s, hello: h, held: held, keep: held.Over(s.tokens),
		budgetGen: s.catalog.CurrentBudgets().Gen, sent: h.RulesVersion,
	}
}

// Recorded is a report as Session.Record left it, for Session.Answer.
type Recorded struct {
	seq     uint64
	again   bool // a copy of a report recorded already
	docs    []Statistics
	targets TargetSet
	err     error
}

// Record records r, a report of the session's client, through the core
// (it sets r's Client, Service, Carry and Buffers to the session's; r is a
// pointer so that the report is copied once, onto the core's call: each
// byte of stack under the core's report counts, a stream's stack being
// shrunk at each collection and grown again by the next report). A numbered
// report at or below the last one acknowledged was sent again before its
// answer reached the client (a loaded client or replica): it is recorded
// already, and taken again its interval would move the client's chain of
// claims past the time its counts cover (bound), so it is not. r's
// documents must stay as they are until Answer.
func (s *Session) Record(ctx context.Context, r *Report) (rec Recorded) {
	rec.seq = r.Seq
	if r.Seq != 0 && r.Seq <= s.acked.Load() {
		rec.again = true
		return rec
	}
	r.Client, r.Service, r.Carry, r.Buffers = s.hello.Client, s.hello.Service, true, &s.bufs
	rec.docs = r.Statistics
	rec.targets, rec.err = s.core.Report(ctx, *r, s.keep)
	return rec
}

// Answer is what a transport sends for a report.
type Answer struct {
	// Targets are the client's, as the budgets in force have them; they
	// last until the session's next Answer or BudgetsChanged.
	Targets TargetSet
	// Acked is the seq of the report acknowledged; 0: none.
	Acked uint64
	// Again says the report was a copy of one recorded already, answered
	// with the last targets.
	Again bool
	// Err is why the report was not recorded (nil: it was). Targets then
	// renew the client's last quotas, and nothing is acknowledged: a
	// numbered report comes again.
	Err error
	// RulesFollow says that the report may show that the client's rules
	// are out of date: once Targets are sent, RuleSet says.
	RulesFollow bool
}

// Answer takes rec as the session's latest report and returns its answer.
func (s *Session) Answer(rec Recorded) Answer {
	switch {
	case rec.again:
		return Answer{Targets: s.targets(), Acked: rec.seq, Again: true}
	case rec.err != nil:
		// Without the store there is no fleet to split by. Renew the
		// client's last quotas (the batcher fails a report within half
		// an interval, so this answer comes before they lapse): the
		// split was within the reservoir when the store last answered,
		// and the ledger keeps counting it, so the fleet stays within
		// the reservoir instead of borrowing or falling back to the
		// local default.
		s.last = s.core.Renewal(rec.docs, s.held)
		s.base = &s.last
		return Answer{Targets: s.targets(), Err: rec.err}
	}
	s.last, s.base = rec.targets, &s.last
	s.acked.Store(max(s.acked.Load(), rec.seq))
	a := Answer{Targets: s.targets(), Acked: rec.seq, RulesFollow: true}
	// Later answers of base (a budget changed, a renewal) answer no
	// report: the client keeps the receipts this answer brings.
	for i := range s.base.Targets {
		s.base.Targets[i].Receipt = ""
	}
	return a
}

// BudgetsChanged returns the last targets as the budgets have them now, if
// budgets changed since targets were last answered (ok), for the transport
// to send again, acknowledging nothing; nothing before the first answer.
// The targets last as Answer's do.
func (s *Session) BudgetsChanged() (ts TargetSet, ok bool) {
	if s.base == nil || s.core.catalog.CurrentBudgets().Gen == s.budgetGen {
		return TargetSet{}, false
	}
	return s.targets(), true
}

// targets is base as the budgets in force have it.
func (s *Session) targets() TargetSet {
	s.budgetGen = s.core.catalog.CurrentBudgets().Gen
	ts := s.core.WithBudgetsInto(s.scratch, *s.base, s.hello.Service)
	s.scratch = ts.Targets
	return ts
}

// RuleSet returns the client's rule set if it is not the one the client
// holds (changed), which it then takes as sent: a transport calls it when
// the session starts, when rules or budgets change, and after an answer
// whose RulesFollow is set. A new instance's first rule set goes through
// the first-borrow gate (FirstRuleSet), which ctx bounds. Nothing is sent
// while no rules are loaded.
func (s *Session) RuleSet(ctx context.Context) (rs *pb.RuleSet, changed bool) {
	view := s.core.catalog.Current()
	if view.Version == 0 { // no rules loaded yet
		return nil, false
	}
	budgets, now := s.core.catalog.CurrentBudgets(), s.core.now()
	if ns := now.UnixNano(); view == s.checked.view && budgets == s.checked.budgets && ns >= s.checked.from && ns < s.checked.to {
		return nil, false
	}
	s.checked.view, s.checked.budgets = view, budgets
	start := budget.MonthStart(now)
	s.checked.from, s.checked.to = start.UnixNano(), start.AddDate(0, 1, 0).UnixNano()
	h := &s.hello
	rs = s.core.catalog.RuleSet(h.Service, h.ServiceType, h.Resource, now)
	if rs.GetRulesVersion() == s.sent && SameRates(rs.GetRatesInForce(), s.sentRates) {
		return nil, false
	}
	first := s.sent == 0
	s.sent, s.sentRates = rs.GetRulesVersion(), rs.GetRatesInForce()
	if first {
		rs = s.core.FirstRuleSet(ctx, rs)
	}
	return rs, true
}

// SameRates reports whether two lists of rates in force are equal: whether
// a client holding one must be sent the rule set carrying the other (the
// fleet simulator's instances decide it so too).
func SameRates(a, b []*pb.RuleRates) bool {
	return slices.EqualFunc(a, b, func(x, y *pb.RuleRates) bool {
		return x.GetRuleName() == y.GetRuleName() && x.GetFixedRate() == y.GetFixedRate() && x.GetReservoirFactor() == y.GetReservoirFactor()
	})
}
