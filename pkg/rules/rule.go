// Package rules owns the sampling rule model: its fields and limits,
// validation, glob matching and the order in which rules are tried. It does no
// I/O, so the server, the CLI and the Go SDK share one definition of a valid
// rule and of which rule a request matches.
package rules

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Limits follow AWS X-Ray's sampling rule model, so that every rule can also be
// served over the X-Ray API.
const (
	DefaultName       = "Default"
	DefaultPriority   = 10000 // sorts after every other rule, as in X-Ray
	MinPriority       = 1
	MaxPriority       = 9999
	MaxNameLen        = 32
	MaxReservoirSize  = 1_000_000 // traces per second for the whole fleet
	MaxServiceNameLen = 64
	MaxServiceTypeLen = 64
	MaxHostLen        = 64
	MaxHTTPMethodLen  = 10
	MaxURLPathLen     = 128
	MaxResourceARNLen = 500
	MaxAttributes     = 16
	MaxAttributeLen   = 32 // for keys and values
	// A rule's resource attribute globs: fewer than request attributes,
	// since a rule names an environment or a release, not a request.
	MaxResourceAttributes   = 8
	MaxResourceAttributeLen = 32 // for keys and globs
	// What an SDK instance may declare of its resource (hello,
	// GetSamplingRules, explain): an OpenTelemetry resource holds a dozen
	// or two, some of them long (paths, command lines).
	MaxInstanceResourceAttributes = 64
	MaxInstanceResourceKeyLen     = 64
	MaxInstanceResourceValueLen   = 256
	MaxDescriptionLen             = 512
	MaxLabels                     = 32
	MaxLabelKeyLen                = 63
	MaxLabelValueLen              = 63
	MaxTags                       = 50  // X-Ray's limit of tags per resource
	MaxTagKeyLen                  = 128 // characters
	MaxTagValueLen                = 256 // characters
	MaxBoostCooldown              = 24 * time.Hour
	DefaultFixedRate              = 0.05
	DefaultReservoirTPS           = 1
)

// MaxRules is the most rules a control plane holds, the Default rule
// included; stores refuse to create more. It is also the per-service limit:
// a service's rule set is the rules whose service globs match it, and "*"
// matches every service, so no bound of one service's set is surer than
// the whole. The rule index covers it at the speed of a small set
// (MaxIndexed is twice it). The arithmetic that keeps the largest rule set
// in one gRPC message: SDKs get rules without description, labels and
// tags, at most 9,713 bytes each within a rule set at maximum field sizes
// (every character four bytes of UTF-8, etag and times at their longest, a
// boost's 15 bytes, 8 resource globs of 266 bytes each), so 1,000 × 9,713
// + 15 bytes of framing = 9,713,015 bytes (9.3 MiB), well under the 16 MiB
// the Go SDK accepts. gRPC's default limit, 4 MiB, holds 431 such rules,
// or 1,000 of up to 4,190 bytes; rules of a few hundred bytes, the usual,
// make a few hundred kB. A test in the SDK sends the largest set.
const MaxRules = 1000

// Rule is one sampling rule. Empty match globs mean "*".
type Rule struct {
	Name          string
	Priority      int32
	FixedRate     float64
	ReservoirSize int64

	ServiceName string
	ServiceType string
	Host        string
	HTTPMethod  string
	URLPath     string
	ResourceARN string
	Attributes  map[string]string
	// ResourceAttributes are globs over the SDK instance's resource
	// attributes (deployment.environment.name, service.version), so that a
	// service's production and staging instances, or its latest release,
	// get rules of their own. Like the service globs they depend on the
	// instance, not the request.
	ResourceAttributes map[string]string

	Description string
	Labels      map[string]string

	// Tags are the rule's X-Ray resource tags (TagResource): for people and
	// AWS tooling, never matched nor sent to SDKs.
	Tags map[string]string
	// Boost, when set, lets the rule's fixed rate rise for a short while
	// when its clients report anomalies (X-Ray's SamplingRateBoost). Nil: the
	// rule is never boosted. The Default rule never has one.
	Boost *RateBoost

	// ExpireTime, when set, is when the rule stops applying: SDKs skip it
	// from then on, and the control plane deletes it (a time-limited
	// investigation rule). Zero: never.
	ExpireTime time.Time

	// Revision counts edits of this rule; the store sets it and it is the
	// rule's etag.
	Revision int64
	// RulesVersion is the rules version that the rule's last edit made,
	// set by the store: an SDK that applied this rules version or a later
	// one runs the rule as it is. 0 for a rule stored before it was kept.
	RulesVersion int64
	CreateTime   time.Time
	UpdateTime   time.Time
}

// RateBoost bounds the temporary rises of a rule's fixed rate when its
// clients report anomalies (X-Ray's SamplingRateBoost; docs/BOOSTS.md).
type RateBoost struct {
	// MaxRate is the highest rate a boost may set, 0 to 1.
	MaxRate float64
	// Cooldown is the window in which at most one boost starts: whole
	// minutes (X-Ray's CooldownWindowMinutes), 0 to MaxBoostCooldown.
	Cooldown time.Duration
}

// CooldownMinutes returns a cooldown of n whole minutes, as the API and
// files give it. Beyond what a Duration holds (about 292 years) it is cut
// to a cooldown that Validate still refuses, rather than wrapping around.
func CooldownMinutes(n int64) time.Duration {
	const most = 1 << 26 // minutes: 127 years, far past MaxBoostCooldown
	return time.Duration(min(max(n, -most), most)) * time.Minute
}

// Default returns the Default rule as it exists before anyone edits it:
// everything matches, 1 trace/s for the fleet plus 5 %.
func Default() Rule {
	return Rule{
		Name:          DefaultName,
		Priority:      DefaultPriority,
		FixedRate:     DefaultFixedRate,
		ReservoirSize: DefaultReservoirTPS,
		ServiceName:   "*",
		ServiceType:   "*",
		Host:          "*",
		HTTPMethod:    "*",
		URLPath:       "*",
		ResourceARN:   "*",
		Description:   "Applies when no other rule matches.",
	}
}

// IsDefault reports whether r is the Default rule.
func (r *Rule) IsDefault() bool { return r.Name == DefaultName }

// Etag is the opaque version token clients send back to edit what they read.
func (r *Rule) Etag() string { return strconv.FormatInt(r.Revision, 10) }

// ParseEtag returns the revision an etag names. Only the exact form Etag
// produces is accepted: etags are opaque and compared as strings, so "042" or
// "+42" must not pass for revision 42.
func ParseEtag(etag string) (int64, error) {
	n, err := strconv.ParseInt(etag, 10, 64)
	if err != nil || n < 1 || strconv.FormatInt(n, 10) != etag {
		return 0, fmt.Errorf("malformed etag %q", etag)
	}
	return n, nil
}

// Clone returns a deep copy, so callers may edit maps freely.
func (r Rule) Clone() Rule {
	r.Attributes = maps.Clone(r.Attributes)
	r.ResourceAttributes = maps.Clone(r.ResourceAttributes)
	r.Labels = maps.Clone(r.Labels)
	r.Tags = maps.Clone(r.Tags)
	if r.Boost != nil {
		b := *r.Boost
		r.Boost = &b
	}
	return r
}

// Normalize fills in what an empty field means: "*" for match globs, the
// Default rule's fixed priority, and nil for empty maps.
func (r Rule) Normalize() Rule {
	for _, f := range []*string{&r.ServiceName, &r.ServiceType, &r.Host, &r.HTTPMethod, &r.URLPath, &r.ResourceARN} {
		if *f == "" {
			*f = "*"
		}
	}
	if r.IsDefault() && r.Priority == 0 {
		r.Priority = DefaultPriority
	}
	if len(r.Attributes) == 0 {
		r.Attributes = nil
	}
	if len(r.ResourceAttributes) == 0 {
		r.ResourceAttributes = nil
	}
	if len(r.Labels) == 0 {
		r.Labels = nil
	}
	if len(r.Tags) == 0 {
		r.Tags = nil
	}
	return r
}

// Compare orders rules as they are tried: by priority, then by name, and the
// Default rule after every other rule whatever its priority field says (it may
// be unset, which Validate accepts and Normalize fills in; a Default tried
// first would shadow every rule).
func Compare(a, b *Rule) int {
	if ad, bd := a.IsDefault(), b.IsDefault(); ad != bd {
		if ad {
			return 1
		}
		return -1
	}
	if c := cmp.Compare(a.Priority, b.Priority); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// Sort sorts rules in the order they are tried.
func Sort(rs []Rule) {
	slices.SortFunc(rs, func(a, b Rule) int { return Compare(&a, &b) })
}

// SinceVersion is the rules version from which an SDK runs r as it is: its
// RulesVersion, or 1 for a rule stored before rules kept it (then any
// version an SDK names).
func (r *Rule) SinceVersion() int64 { return max(r.RulesVersion, 1) }

// Expired reports whether r has an expiry time and it has come at now.
func (r *Rule) Expired(now time.Time) bool {
	return !r.ExpireTime.IsZero() && !now.Before(r.ExpireTime)
}

// CheckExpiry returns a *ValidationError if r's expiry time is set but not
// after now: a rule is not created, or given an expiry, already expired.
func CheckExpiry(r *Rule, now time.Time) error {
	if r.ExpireTime.IsZero() || r.ExpireTime.After(now) {
		return nil
	}
	return &ValidationError{Violations: []FieldViolation{{Field: "expire_time",
		Description: fmt.Sprintf("must be in the future, got %s (now is %s)", r.ExpireTime.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))}}}
}

// ErrDefaultRule is wrapped by errors for edits the Default rule does not
// allow: deleting, renaming, re-prioritising or narrowing it, or giving it
// a boost (X-Ray's Default rule has none).
var ErrDefaultRule = errors.New("the Default rule can be re-rated but not deleted, renamed or narrowed")

// CheckDefault returns an error wrapping ErrDefaultRule if r, which is the
// Default rule after an edit, no longer matches everything, no longer comes
// last or has a boost. As in Validate and Normalize, an unset (zero) priority and empty globs
// mean the Default's fixed priority and "*".
func CheckDefault(r *Rule) error {
	if !r.IsDefault() {
		return nil
	}
	var bad []string
	if r.Priority != DefaultPriority && r.Priority != 0 {
		bad = append(bad, "priority")
	}
	for _, f := range []struct {
		name, v string
	}{
		{"service_name", r.ServiceName}, {"service_type", r.ServiceType}, {"host", r.Host},
		{"http_method", r.HTTPMethod}, {"url_path", r.URLPath}, {"resource_arn", r.ResourceARN},
	} {
		if f.v != "*" && f.v != "" {
			bad = append(bad, f.name)
		}
	}
	if len(r.Attributes) > 0 {
		bad = append(bad, "attributes")
	}
	if len(r.ResourceAttributes) > 0 {
		bad = append(bad, "resource_attributes")
	}
	if !r.ExpireTime.IsZero() {
		bad = append(bad, "expire_time")
	}
	if r.Boost != nil {
		bad = append(bad, "sampling_rate_boost")
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w (cannot change %s)", ErrDefaultRule, strings.Join(bad, ", "))
	}
	return nil
}
