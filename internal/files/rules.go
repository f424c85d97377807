package files

import (
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/pkg/rules"
	"github.com/tracesampling/controlplane/pkg/rules/rulepb"
)

// The rules file is the YAML form of a list of rules, with the API's
// snake_case field names:
//
//	rules:
//	  - name: checkout
//	    priority: 10
//	    fixed_rate: 0.5
//	    reservoir_size: 5
//	    service_name: "shop-*"
//	    attributes: {tier: gold}
//	    labels: {team: payments}
//	    tags: {Stage: prod}
//	    sampling_rate_boost: {max_rate: 0.5, cooldown_window_minutes: 10}
//
// A time-limited rule has expire_time, an RFC 3339 time, or expires_in, a
// duration ("30m") that the CLI turns into an expire_time from now when it
// creates the rule; a rule that exists keeps the expiry it has, so that
// applying the file again does not extend an investigation.
//
// It is what `apply` and `create -f` read and what `list -o yaml` and
// `get -o yaml` print, so that output can be edited and applied back. A rule
// in the file is its whole desired state: an omitted glob means "*", an
// omitted number zero, an omitted map or description empty. Output-only
// fields (etag, times) are never printed and are refused on input.

// ruleFile is the document the encoder writes.
type ruleFile struct {
	Rules []fileRule `yaml:"rules"`
}

// fileRule is one rule as printed; the field order is the proto's.
type fileRule struct {
	Name               string            `yaml:"name"`
	Priority           int32             `yaml:"priority,omitempty"`
	FixedRate          float64           `yaml:"fixed_rate"`
	ReservoirSize      int64             `yaml:"reservoir_size"`
	ServiceName        string            `yaml:"service_name,omitempty"`
	ServiceType        string            `yaml:"service_type,omitempty"`
	Host               string            `yaml:"host,omitempty"`
	HTTPMethod         string            `yaml:"http_method,omitempty"`
	URLPath            string            `yaml:"url_path,omitempty"`
	ResourceARN        string            `yaml:"resource_arn,omitempty"`
	Attributes         map[string]string `yaml:"attributes,omitempty,flow"`
	ResourceAttributes map[string]string `yaml:"resource_attributes,omitempty,flow"`
	Description        string            `yaml:"description,omitempty"`
	Labels             map[string]string `yaml:"labels,omitempty,flow"`
	ExpireTime         string            `yaml:"expire_time,omitempty"`
	Tags               map[string]string `yaml:"tags,omitempty,flow"`
	Boost              *fileBoost        `yaml:"sampling_rate_boost,omitempty,flow"`
}

// fileBoost is a rule's sampling_rate_boost as printed.
type fileBoost struct {
	MaxRate               float64 `yaml:"max_rate"`
	CooldownWindowMinutes int64   `yaml:"cooldown_window_minutes"`
}

// ruleFields returns the keys of a rule in the file, for the message about
// an unknown one: the printed fields, and expires_in.
func ruleFields() []string { return append(yamlKeys(reflect.TypeFor[fileRule]()), "expires_in") }

// boostFields returns the keys of a sampling_rate_boost.
func boostFields() []string { return yamlKeys(reflect.TypeFor[fileBoost]()) }

// yamlKeys returns the YAML keys of a struct's fields, in field order.
func yamlKeys(t reflect.Type) []string {
	keys := make([]string, t.NumField())
	for i := range keys {
		keys[i], _, _ = strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
	}
	return keys
}

// toFileRule returns the printed form of r: globs that match anything and
// the Default rule's fixed priority are left out, as the file means them
// when they are absent.
func toFileRule(r rules.Rule) fileRule {
	r = r.Normalize()
	glob := func(s string) string {
		if s == "*" {
			return ""
		}
		return s
	}
	f := fileRule{
		Name:               r.Name,
		Priority:           r.Priority,
		FixedRate:          r.FixedRate,
		ReservoirSize:      r.ReservoirSize,
		ServiceName:        glob(r.ServiceName),
		ServiceType:        glob(r.ServiceType),
		Host:               glob(r.Host),
		HTTPMethod:         glob(r.HTTPMethod),
		URLPath:            glob(r.URLPath),
		ResourceARN:        glob(r.ResourceARN),
		Attributes:         r.Attributes,
		ResourceAttributes: r.ResourceAttributes,
		Description:        r.Description,
		Labels:             r.Labels,
		Tags:               r.Tags,
	}
	if b := r.Boost; b != nil {
		f.Boost = &fileBoost{MaxRate: b.MaxRate, CooldownWindowMinutes: int64(b.Cooldown / time.Minute)}
	}
	if r.IsDefault() {
		f.Priority = 0
	}
	if !r.ExpireTime.IsZero() {
		f.ExpireTime = r.ExpireTime.UTC().Format(time.RFC3339Nano)
	}
	return f
}

// WriteRules prints rules in the rules file format.
func WriteRules(w io.Writer, rs []*pb.Rule) error {
	doc := ruleFile{Rules: make([]fileRule, 0, len(rs))}
	for _, p := range rs {
		doc.Rules = append(doc.Rules, toFileRule(rulepb.FromProto(p)))
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return enc.Close()
}

// Rule is one rule read from a file, normalized, and where it was.
type Rule struct {
	Rule  rules.Rule
	Index int // 1-based position in the file
	Line  int
	// ExpiresIn is the file's expires_in: the rule's expiry is that long
	// after it is created (Rule.ExpireTime is then zero; see Expiry).
	ExpiresIn time.Duration
}

// Expiry returns the rule to send for e: with expires_in, the expiry the
// rule has on the server (have; zero if it has none or does not exist) or,
// if none, now + expires_in.
func (e *Rule) Expiry(have, now time.Time) rules.Rule {
	r := e.Rule.Clone()
	if e.ExpiresIn > 0 {
		r.ExpireTime = have
		if have.IsZero() {
			r.ExpireTime = now.Add(e.ExpiresIn).UTC().Truncate(time.Second)
		}
	}
	return r
}

// ReadRules reads the rules file at path ("-" for stdin) and loads it.
func ReadRules(path string, stdin io.Reader) ([]Rule, error) {
	data, err := read(path, stdin)
	if err != nil {
		return nil, err
	}
	return LoadRules(DisplayName(path), data)
}

// LoadRules decodes a rules file strictly (an unknown or repeated field is an
// error, so a typo never passes silently) and checks every rule with
// rules.Validate, the one definition of a valid rule, plus what only a file
// can get wrong: two rules with one name. It returns the rules in file order,
// or an *Error with every problem found.
func LoadRules(name string, data []byte) ([]Rule, error) {
	l := &loader{file: name}
	var out []Rule
	l.load(data, list{key: "rules", noun: "rule", item: func(index int, n *yaml.Node) (string, bool, func()) {
		e, ok := l.rule(index, n)
		return e.Rule.Name, ok, func() { out = append(out, e) }
	}})
	if err := l.err(); err != nil {
		return nil, err
	}
	return out, nil
}

// rule decodes and validates one rule; ok is false if it had problems. The
// entry is returned either way, with as much of the rule as was read.
func (l *loader) rule(index int, n *yaml.Node) (e Rule, ok bool) {
	e = Rule{Index: index, Line: n.Line}
	if n.Kind != yaml.MappingNode {
		l.addf(n.Line, "rule #%d: want a mapping of fields, got %s", index, kindName(n))
		return e, false
	}
	pairs, perrs := mappingPairs(n)
	var r rules.Rule
	// Find the name first, so that every problem can name the rule.
	for _, p := range pairs {
		if p.key.Value == "name" {
			v := resolve(p.val)
			if v.Kind == yaml.ScalarNode && !isNull(v) {
				r.Name = v.Value
			}
		}
	}
	who := fmt.Sprintf("rule #%d", index)
	if r.Name != "" {
		who = fmt.Sprintf("rule %q (#%d)", r.Name, index)
	}
	before := len(l.problems)
	for _, e := range perrs {
		l.addf(e.line, "%s: %s", who, e.msg)
	}
	lines := map[string]int{}   // field (as Validate names it) -> line
	failed := map[string]bool{} // fields that did not decode
	for _, p := range pairs {
		field := p.key.Value
		lines[field] = p.key.Line
		if field == "expires_in" {
			if err := decodeExpiresIn(resolve(p.val), &e.ExpiresIn); err != nil {
				l.addf(err.line, "%s: %s: %s", who, field, err.msg)
			}
			continue
		}
		if err := decodeField(&r, field, resolve(p.val), lines); err != nil {
			failed[field] = true
			l.addf(err.line, "%s: %s: %s", who, field, err.msg)
		}
	}
	r = r.Normalize()
	var ve *rules.ValidationError
	if err := rules.Validate(&r); errors.As(err, &ve) {
		for _, v := range ve.Violations {
			top, _, _ := strings.Cut(v.Field, ".")
			if failed[top] {
				continue // already reported as undecodable
			}
			line, ok := lines[v.Field]
			if !ok {
				line, ok = lines[top]
			}
			if !ok {
				line = n.Line
			}
			l.addf(line, "%s: %s: %s", who, v.Field, v.Description)
		}
	}
	if err := rules.CheckDefault(&r); err != nil {
		l.addf(n.Line, "%s: %v", who, err)
	}
	if _, both := lines["expire_time"]; both && e.ExpiresIn > 0 {
		l.addf(lines["expires_in"], "%s: expires_in: give expire_time or expires_in, not both", who)
	}
	if r.IsDefault() && e.ExpiresIn > 0 {
		l.addf(lines["expires_in"], "%s: expires_in: the Default rule never expires", who)
	}
	e.Rule = r
	return e, len(l.problems) == before
}

// decodeField sets the field of r that a file key names. Map entries record
// their lines in lines, keyed as Validate names them ("attributes.tier").
func decodeField(r *rules.Rule, field string, v *yaml.Node, lines map[string]int) *nodeError {
	switch field {
	case "name":
		return decodeString(v, &r.Name)
	case "priority":
		var n int64
		if err := decodeInt(v, &n); err != nil {
			return err
		}
		if n < math.MinInt32 || n > math.MaxInt32 {
			return errAt(v, "%d is out of range", n)
		}
		r.Priority = int32(n)
		return nil
	case "fixed_rate":
		return decodeFloat(v, &r.FixedRate)
	case "reservoir_size":
		return decodeInt(v, &r.ReservoirSize)
	case "service_name":
		return decodeString(v, &r.ServiceName)
	case "service_type":
		return decodeString(v, &r.ServiceType)
	case "host":
		return decodeString(v, &r.Host)
	case "http_method":
		return decodeString(v, &r.HTTPMethod)
	case "url_path":
		return decodeString(v, &r.URLPath)
	case "resource_arn":
		return decodeString(v, &r.ResourceARN)
	case "attributes":
		return decodeMap(v, field, &r.Attributes, lines)
	case "resource_attributes":
		return decodeMap(v, field, &r.ResourceAttributes, lines)
	case "description":
		return decodeString(v, &r.Description)
	case "labels":
		return decodeMap(v, field, &r.Labels, lines)
	case "expire_time":
		return decodeTime(v, &r.ExpireTime)
	case "tags":
		return decodeMap(v, field, &r.Tags, lines)
	case "sampling_rate_boost":
		return decodeBoost(v, field, &r.Boost, lines)
	case "etag", "create_time", "update_time":
		return errAt(v, "is output only and cannot be set in a file")
	}
	return unknownField(v, field, ruleFields(), "a rule")
}

// unknownField is the problem of a key that is not one of fields.
func unknownField(v *yaml.Node, field string, fields []string, what string) *nodeError {
	if near := closest(field, fields); near != "" {
		return errAt(v, "unknown field; did you mean %q?", near)
	}
	return errAt(v, "unknown field; %s has %s", what, strings.Join(fields, ", "))
}

// decodeBoost decodes a sampling_rate_boost mapping: null is no boost, an
// omitted number zero. Its fields' lines go in lines
// ("sampling_rate_boost.max_rate").
func decodeBoost(v *yaml.Node, field string, out **rules.RateBoost, lines map[string]int) *nodeError {
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.MappingNode {
		return errAt(v, "want a mapping of %s, got %s", strings.Join(boostFields(), " and "), kindName(v))
	}
	pairs, errs := mappingPairs(v)
	if len(errs) > 0 {
		return errs[0]
	}
	b := &rules.RateBoost{}
	for _, p := range pairs {
		k, val := p.key.Value, resolve(p.val)
		lines[field+"."+k] = p.key.Line
		var err *nodeError
		switch k {
		case "max_rate":
			err = decodeFloat(val, &b.MaxRate)
		case "cooldown_window_minutes":
			var n int64
			if err = decodeInt(val, &n); err == nil {
				if n < math.MinInt32 || n > math.MaxInt32 { // the API's int32
					err = errAt(val, "%d is out of range", n)
				}
				b.Cooldown = rules.CooldownMinutes(n)
			}
		default:
			err = unknownField(p.key, k, boostFields(), "a sampling_rate_boost")
		}
		if err != nil {
			err.msg = k + ": " + err.msg
			return err
		}
	}
	*out = b
	return nil
}

// decodeTime decodes an RFC 3339 time ("2026-03-01T12:30:00Z").
func decodeTime(v *yaml.Node, out *time.Time) *nodeError {
	if isNull(v) {
		return nil
	}
	t, err := time.Parse(time.RFC3339Nano, v.Value)
	if v.Kind != yaml.ScalarNode || err != nil {
		return errAt(v, "want an RFC 3339 time such as 2026-03-01T12:30:00Z, got %s", valueText(v))
	}
	*out = t
	return nil
}

// decodeExpiresIn decodes a positive duration ("30m", "2h").
func decodeExpiresIn(v *yaml.Node, out *time.Duration) *nodeError {
	if isNull(v) {
		return nil
	}
	d, err := time.ParseDuration(v.Value)
	if v.Kind != yaml.ScalarNode || err != nil || d <= 0 {
		return errAt(v, "want a positive duration such as 30m or 2h, got %s", valueText(v))
	}
	*out = d
	return nil
}
