// Package xray serves the AWS X-Ray sampling API (REST-JSON, every call a
// POST) on top of the control plane's core, so that unmodified X-Ray SDKs,
// the X-Ray daemon, the OpenTelemetry Collector's awsproxy and the
// OpenTelemetry X-Ray remote samplers use the same rules, fleet reservoir
// split and budgets as this project's own SDK.
//
// The package is a transport adapter only: it decodes X-Ray's JSON, checks
// what only X-Ray constrains (its shapes, the 24-hex ClientID, at most five
// attributes, at most 25 statistics documents, which fields the Default rule
// lets X-Ray change), calls the core through the small interfaces below, and
// encodes the answer or one of X-Ray's error shapes. Rule limits, etags,
// retries, receipts, batching and budgets are the core's.
package xray

import (
	"context"
	"errors"
	"time"

	"github.com/tracesampling/controlplane/pkg/rules"
)

// Rule is a rule as the X-Ray API carries it: the domain rule, whose Boost
// is its SamplingRateBoost (nil for none; the Default rule never has one)
// and whose Tags are its resource tags.
type Rule struct {
	rules.Rule
}

// RateBoost bounds the temporary sampling-rate increases a rule may get when
// its clients report anomalies (X-Ray's SamplingRateBoost): the domain's,
// with MaxRate 0 to 1 and Cooldown whole minutes on the wire
// (CooldownWindowMinutes).
type RateBoost = rules.RateBoost

// Field names a RuleUpdate may set, in the core's (the gRPC API's) names.
const (
	FieldPriority      = "priority"
	FieldFixedRate     = "fixed_rate"
	FieldReservoirSize = "reservoir_size"
	FieldServiceName   = "service_name"
	FieldServiceType   = "service_type"
	FieldHost          = "host"
	FieldHTTPMethod    = "http_method"
	FieldURLPath       = "url_path"
	FieldResourceARN   = "resource_arn"
	FieldAttributes    = "attributes"
	// FieldBoost sets Rule.Boost; Patch.Boost nil removes it.
	FieldBoost = "sampling_rate_boost"
)

// RuleUpdate changes the fields named in Fields of the rule Name to their
// values in Patch; every other field (description and labels included) keeps
// its value.
type RuleUpdate struct {
	Name   string
	Patch  Rule
	Fields []string
}

// Tags are a rule's X-Ray resource tags, by key.
type Tags map[string]string

// RuleLister lists the rules for GetSamplingRules.
type RuleLister interface {
	// Rules returns every rule in matching order. The caller does not
	// modify the returned rules.
	Rules(ctx context.Context) ([]Rule, error)
	// RulesModified returns when a rule was last created, changed or
	// deleted (X-Ray's LastRuleModification: clients refetch the rules when
	// it is after their last fetch).
	RulesModified(ctx context.Context) (time.Time, error)
}

// RuleEditor edits rules. An empty etag means "whatever the current
// revision": X-Ray has no etags, so the core applies an update to the rule
// as it is and retries the read-modify-write itself when another edit lands
// in between. The core takes who made the edit from ctx (the audit log's
// actor, the principal's scope; see Verifier), validates every rule
// (rules.Validate, rules.CheckDefault) and refuses to
// delete the Default rule.
type RuleEditor interface {
	// CreateRule creates r with tags, in one step, and returns it as stored
	// (revision, times). store.ErrAlreadyExists if the name is taken.
	CreateRule(ctx context.Context, r Rule, tags Tags) (Rule, error)
	// UpdateRule applies u and returns the rule as stored. store.ErrNotFound
	// if there is no such rule.
	UpdateRule(ctx context.Context, u RuleUpdate, etag string) (Rule, error)
	// DeleteRule deletes a rule and its tags and returns the rule as it was.
	DeleteRule(ctx context.Context, name, etag string) (Rule, error)
}

// Tagger keeps the X-Ray tags of rules.
type Tagger interface {
	// RuleTags returns a rule's tags (store.ErrNotFound for no such rule).
	RuleTags(ctx context.Context, rule string) (Tags, error)
	// TagRule adds tags to a rule, replacing the values of keys it has;
	// ErrTooManyTags if the rule would have more than the core allows.
	TagRule(ctx context.Context, rule string, tags Tags) error
	// UntagRule removes the keys from a rule's tags; absent keys are no
	// error.
	UntagRule(ctx context.Context, rule string, keys []string) error
}

// Reporter turns one client's statistics into its targets: it feeds the same
// fleet ledger and budgets as the gRPC reports, holds the client's receipts
// itself (X-Ray clients echo none), and sizes boosts.
type Reporter interface {
	Report(ctx context.Context, r Report) (Targets, error)
}

// Summarizer answers GetSamplingStatisticSummaries.
type Summarizer interface {
	// Summaries returns each rule's fleet-wide counts over the last
	// reporting window(s) the core keeps; empty if it keeps none.
	Summaries(ctx context.Context) ([]Summary, error)
}

// Core is everything the X-Ray API needs from the control plane. All
// methods are safe for concurrent use.
type Core interface {
	RuleLister
	RuleEditor
	Tagger
	Reporter
	Summarizer
}

// Report is one client's GetSamplingTargets call.
type Report struct {
	// ClientID identifies the SDK instance: 24 hex digits, lower case.
	// Empty when the request carried boost statistics only (boost
	// documents name a service, not a client).
	ClientID   string
	Statistics []Statistics
	Boosts     []BoostStatistics
}

// Statistics is one rule's counts from one client since its last report.
type Statistics struct {
	Rule     string
	Requests int64
	Sampled  int64
	Borrowed int64
	// Time is when the client took the counts; zero when it did not say.
	Time time.Time
}

// BoostStatistics is one rule's anomaly counts from one service since its
// last report (X-Ray's SamplingBoostStatisticsDocument).
type BoostStatistics struct {
	Rule             string
	Service          string
	Total            int64
	Anomalies        int64
	SampledAnomalies int64
	// Time is when the client took the counts; zero when it did not say.
	Time time.Time
}

// Targets is the core's answer to a Report.
type Targets struct {
	Targets []Target
	// Rejected lists the statistics documents the core did not take (an
	// unknown rule, inconsistent counts…), so the client refreshes its
	// rules; Boosts the same for boost documents.
	Rejected      []Rejection
	BoostRejected []Rejection
}

// Target is what one client gets for one rule.
type Target struct {
	Rule string
	// FixedRate is the rate in force, budget factors applied.
	FixedRate float64
	// Quota is this client's share of the rule's reservoir in traces per
	// second, budget factors applied; fractional. The adapter hands it out
	// in whole traces (see WholeQuota).
	Quota float64
	// Expiry is when the quota lapses if the client does not report again;
	// zero: two report intervals from now.
	Expiry time.Time
	// Interval is how often the client should report; zero: 10 seconds.
	Interval time.Duration
	// Phase, with RunningPhase, is the phase in [0, 1) that WholeQuota
	// rounds Quota with: the core's running sum of the shares it handed
	// out for the rule (see quota.go). Without RunningPhase the adapter
	// rotates a phase of its own per client.
	Phase        float64
	RunningPhase bool
	// Boost is the rate boost in force for this client, if any.
	Boost *Boost
}

// Boost is a temporary fixed rate for a rule.
type Boost struct {
	Rate   float64
	Expiry time.Time
}

// Rejection says why the core did not take one document.
type Rejection struct {
	Rule string
	// Code is the core's stable reason ("UNKNOWN_RULE"…), shown in the
	// message; X-Ray's ErrorCode is "400" for every rejection.
	Code    string
	Message string
}

// Summary is one rule's fleet-wide counts over one window.
type Summary struct {
	Rule     string
	Start    time.Time
	Requests int64
	Sampled  int64
	Borrowed int64
}

// Errors for refusals the domain model has no error for yet. The core wraps
// them (with %w) and MapError turns them into X-Ray's shapes.
var (
	// ErrRuleLimit: the core holds as many rules as it allows.
	ErrRuleLimit = errors.New("rule limit exceeded")
	// ErrTooManyTags: a rule would have more tags than the core allows.
	ErrTooManyTags = errors.New("too many tags")
	// ErrThrottled: the caller sends more than the core serves; retry
	// later.
	ErrThrottled = errors.New("throttled")
	// ErrSignature: a request's SigV4 signature does not verify.
	ErrSignature = errors.New("signature does not match")
	// ErrAccessDenied: the caller may not make this call.
	ErrAccessDenied = errors.New("access denied")
)
