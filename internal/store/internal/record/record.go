// Package record holds what memstore and redisstore share about keeping
// rules and budgets: the JSON forms rules, budgets, alerts and states are
// stored in, and the checks of listing arguments and usage increments, so
// both stores accept and reject the same requests.
package record

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// Rule is the stored JSON form of rules.Rule. Its field names are part of the
// stored format (redisstore's Lua reads "revision"), so they must not change.
type Rule struct {
	Name               string            `json:"name"`
	Priority           int32             `json:"priority"`
	FixedRate          float64           `json:"fixed_rate"`
	ReservoirSize      int64             `json:"reservoir_size"`
	ServiceName        string            `json:"service_name,omitempty"`
	ServiceType        string            `json:"service_type,omitempty"`
	Host               string            `json:"host,omitempty"`
	HTTPMethod         string            `json:"http_method,omitempty"`
	URLPath            string            `json:"url_path,omitempty"`
	ResourceARN        string            `json:"resource_arn,omitempty"`
	Attributes         map[string]string `json:"attributes,omitempty"`
	ResourceAttributes map[string]string `json:"resource_attributes,omitempty"`
	Description        string            `json:"description,omitempty"`
	Labels             map[string]string `json:"labels,omitempty"`
	ExpireTime         time.Time         `json:"expire_time,omitzero"`
	Tags               map[string]string `json:"tags,omitempty"`
	Boost              *Boost            `json:"sampling_rate_boost,omitempty"`
	Revision           int64             `json:"revision"`
	CreateTime         time.Time         `json:"create_time"`
	UpdateTime         time.Time         `json:"update_time"`
	// RulesVersion is last: redisstore's scripts append it to the JSON
	// that MarshalRule leaves it out of (see MarshalRuleForScript), once
	// they know the version.
	RulesVersion int64 `json:"rules_version,omitempty"`
}

// Boost is the stored form of rules.RateBoost.
type Boost struct {
	MaxRate               float64 `json:"max_rate"`
	CooldownWindowMinutes int64   `json:"cooldown_window_minutes"`
}

// FromRule returns r's stored form. It shares r's maps.
func FromRule(r *rules.Rule) Rule {
	var b *Boost
	if r.Boost != nil {
		b = &Boost{MaxRate: r.Boost.MaxRate, CooldownWindowMinutes: int64(r.Boost.Cooldown / time.Minute)}
	}
	return Rule{
		Name:               r.Name,
		Priority:           r.Priority,
		FixedRate:          r.FixedRate,
		ReservoirSize:      r.ReservoirSize,
		ServiceName:        r.ServiceName,
		ServiceType:        r.ServiceType,
		Host:               r.Host,
		HTTPMethod:         r.HTTPMethod,
		URLPath:            r.URLPath,
		ResourceARN:        r.ResourceARN,
		Attributes:         r.Attributes,
		ResourceAttributes: r.ResourceAttributes,
		Description:        r.Description,
		Labels:             r.Labels,
		ExpireTime:         r.ExpireTime,
		Tags:               r.Tags,
		Boost:              b,
		Revision:           r.Revision,
		CreateTime:         r.CreateTime,
		UpdateTime:         r.UpdateTime,
		RulesVersion:       r.RulesVersion,
	}
}

// ToRule returns the rule rec stores. It shares rec's maps.
func (rec *Rule) ToRule() rules.Rule {
	var b *rules.RateBoost
	if rec.Boost != nil {
		b = &rules.RateBoost{MaxRate: rec.Boost.MaxRate, Cooldown: rules.CooldownMinutes(rec.Boost.CooldownWindowMinutes)}
	}
	return rules.Rule{
		Name:               rec.Name,
		Priority:           rec.Priority,
		FixedRate:          rec.FixedRate,
		ReservoirSize:      rec.ReservoirSize,
		ServiceName:        rec.ServiceName,
		ServiceType:        rec.ServiceType,
		Host:               rec.Host,
		HTTPMethod:         rec.HTTPMethod,
		URLPath:            rec.URLPath,
		ResourceARN:        rec.ResourceARN,
		Attributes:         rec.Attributes,
		ResourceAttributes: rec.ResourceAttributes,
		Description:        rec.Description,
		Labels:             rec.Labels,
		ExpireTime:         rec.ExpireTime,
		Tags:               rec.Tags,
		Boost:              b,
		Revision:           rec.Revision,
		CreateTime:         rec.CreateTime,
		UpdateTime:         rec.UpdateTime,
		RulesVersion:       rec.RulesVersion,
	}
}

// MarshalRule encodes r in its stored form.
func MarshalRule(r *rules.Rule) ([]byte, error) {
	b, err := json.Marshal(FromRule(r))
	if err != nil {
		return nil, fmt.Errorf("encode rule %q: %w", r.Name, err)
	}
	return b, nil
}

// MarshalRuleForScript encodes r in its stored form without its rules
// version, for a script that appends `,"rules_version":V}` in place of the
// closing brace once it has bumped the version: the JSON of a struct ends
// with that brace.
func MarshalRuleForScript(r *rules.Rule) ([]byte, error) {
	c := *r
	c.RulesVersion = 0
	return MarshalRule(&c)
}

// UnmarshalRule decodes a rule stored by MarshalRule.
func UnmarshalRule(b []byte) (rules.Rule, error) {
	var rec Rule
	if err := json.Unmarshal(b, &rec); err != nil {
		return rules.Rule{}, fmt.Errorf("decode stored rule: %w", err)
	}
	return rec.ToRule(), nil
}

// Timestamp returns t as stores keep it: in UTC and without a monotonic
// reading, so that a rule read back equals the one that was returned when it
// was written.
func Timestamp(t time.Time) time.Time { return t.UTC() }

// ParseAction returns the action whose String is s.
func ParseAction(s string) (store.Action, error) {
	for _, a := range []store.Action{store.ActionCreate, store.ActionUpdate, store.ActionDelete} {
		if a.String() == s {
			return a, nil
		}
	}
	return 0, fmt.Errorf("unknown audit action %q", s)
}

// Page sizes of RuleEvents.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// PageSize returns the number of events to list for a requested page size:
// DefaultPageSize for 0, at most MaxPageSize. A negative size is a
// *rules.ValidationError.
func PageSize(n int) (int, error) {
	switch {
	case n < 0:
		return 0, &rules.ValidationError{Violations: []rules.FieldViolation{{
			Field: "page_size", Description: fmt.Sprintf("must not be negative, got %d", n),
		}}}
	case n == 0:
		return DefaultPageSize, nil
	default:
		return min(n, MaxPageSize), nil
	}
}

// InvalidPageToken returns the error for a page token that no listing
// returned: a *rules.ValidationError, so the API reports InvalidArgument.
func InvalidPageToken() error {
	return &rules.ValidationError{Violations: []rules.FieldViolation{{
		Field: "page_token", Description: "is not a token returned by a previous page",
	}}}
}
