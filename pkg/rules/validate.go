package rules

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// FieldViolation names one bad field of a rule, by its API field name
// ("fixed_rate", "attributes.tier"), and says what is wrong with it.
type FieldViolation struct {
	Field       string
	Description string
}

// ValidationError lists every bad field of a rule, so a user fixes them all in
// one go. Callers prefix the field names with where the rule came from.
type ValidationError struct {
	Violations []FieldViolation
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.Field + ": " + v.Description
	}
	return "invalid argument: " + strings.Join(parts, "; ")
}

type violations []FieldViolation

func (vs *violations) add(field, format string, args ...any) {
	*vs = append(*vs, FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

func (vs violations) err() error {
	if len(vs) == 0 {
		return nil
	}
	return &ValidationError{Violations: vs}
}

// Validate checks every field of r against the rule limits and returns a
// *ValidationError naming each bad one, or nil. Empty globs are valid and mean
// "*". The Default rule's fixed priority is accepted only on the Default rule.
func Validate(r *Rule) error {
	var vs violations
	validateName(&vs, r.Name)
	switch {
	case r.IsDefault():
		if r.Priority != DefaultPriority && r.Priority != 0 {
			vs.add("priority", "the Default rule's priority is fixed at %d", DefaultPriority)
		}
	case r.Priority < MinPriority || r.Priority > MaxPriority:
		vs.add("priority", "must be between %d and %d, got %d", MinPriority, MaxPriority, r.Priority)
	}
	if math.IsNaN(r.FixedRate) || r.FixedRate < 0 || r.FixedRate > 1 {
		vs.add("fixed_rate", "must be between 0 and 1, got %v", r.FixedRate)
	}
	if r.ReservoirSize < 0 || r.ReservoirSize > MaxReservoirSize {
		vs.add("reservoir_size", "must be between 0 and %d traces per second, got %d", MaxReservoirSize, r.ReservoirSize)
	}
	validateText(&vs, "service_name", r.ServiceName, 0, MaxServiceNameLen)
	validateText(&vs, "service_type", r.ServiceType, 0, MaxServiceTypeLen)
	validateText(&vs, "host", r.Host, 0, MaxHostLen)
	validateText(&vs, "http_method", r.HTTPMethod, 0, MaxHTTPMethodLen)
	validateText(&vs, "url_path", r.URLPath, 0, MaxURLPathLen)
	validateText(&vs, "resource_arn", r.ResourceARN, 0, MaxResourceARNLen)
	if len(r.Attributes) > MaxAttributes {
		vs.add("attributes", "at most %d attributes, got %d", MaxAttributes, len(r.Attributes))
	}
	for _, k := range sortedKeys(r.Attributes) {
		field := keyField("attributes", k)
		if !validText(k) || k == "" || utf8.RuneCountInString(k) > MaxAttributeLen {
			vs.add(field, "attribute keys must be 1-%d printable characters", MaxAttributeLen)
			continue
		}
		validateText(&vs, field, r.Attributes[k], 1, MaxAttributeLen)
	}
	if len(r.ResourceAttributes) > MaxResourceAttributes {
		vs.add("resource_attributes", "at most %d resource attributes, got %d", MaxResourceAttributes, len(r.ResourceAttributes))
	}
	for _, k := range sortedKeys(r.ResourceAttributes) {
		field := keyField("resource_attributes", k)
		if !validText(k) || k == "" || utf8.RuneCountInString(k) > MaxResourceAttributeLen {
			vs.add(field, "resource attribute keys must be 1-%d printable characters", MaxResourceAttributeLen)
			continue
		}
		validateText(&vs, field, r.ResourceAttributes[k], 1, MaxResourceAttributeLen)
	}
	if !utf8.ValidString(r.Description) {
		vs.add("description", "must be valid UTF-8")
	} else if n := utf8.RuneCountInString(r.Description); n > MaxDescriptionLen {
		vs.add("description", "at most %d characters, got %d", MaxDescriptionLen, n)
	}
	validateLabels(&vs, "labels", r.Labels)
	validateTags(&vs, "tags", r.Tags)
	if b := r.Boost; b != nil {
		if math.IsNaN(b.MaxRate) || b.MaxRate < 0 || b.MaxRate > 1 {
			vs.add("sampling_rate_boost.max_rate", "must be between 0 and 1, got %v", b.MaxRate)
		}
		if b.Cooldown < 0 || b.Cooldown > MaxBoostCooldown || b.Cooldown%time.Minute != 0 {
			got := b.Cooldown.String()
			if b.Cooldown%time.Minute == 0 {
				got = strconv.FormatInt(int64(b.Cooldown/time.Minute), 10)
			}
			vs.add("sampling_rate_boost.cooldown_window_minutes", "must be whole minutes between 0 and %d, got %s", int(MaxBoostCooldown/time.Minute), got)
		}
	}
	if t := r.ExpireTime; !t.IsZero() && (t.Year() < 1970 || t.Year() > 9999) {
		vs.add("expire_time", "must be between the years 1970 and 9999")
	}
	return vs.err()
}

// ValidateResource checks the resource attributes an SDK instance declares
// (MaxInstanceResourceAttributes, keys of 1-MaxInstanceResourceKeyLen and
// values of at most MaxInstanceResourceValueLen printable characters);
// field prefixes each violation ("hello.resource_attributes"). The server
// refuses a call beyond them, and the Go SDK checks its own before it
// sends them.
func ValidateResource(field string, attrs map[string]string) []FieldViolation {
	var vs violations
	if len(attrs) > MaxInstanceResourceAttributes {
		vs.add(field, "at most %d resource attributes, got %d", MaxInstanceResourceAttributes, len(attrs))
		return vs
	}
	for _, k := range sortedKeys(attrs) {
		f := keyField(field, k)
		if !validText(k) || k == "" || utf8.RuneCountInString(k) > MaxInstanceResourceKeyLen {
			vs.add(f, "resource attribute keys must be 1-%d printable characters", MaxInstanceResourceKeyLen)
			continue
		}
		validateText(&vs, f, attrs[k], 0, MaxInstanceResourceValueLen)
	}
	return vs
}

// ValidateName checks a rule name alone, for calls that only carry one.
func ValidateName(name string) error {
	var vs violations
	validateName(&vs, name)
	return vs.err()
}

func validateName(vs *violations, name string) {
	if name == "" {
		vs.add("name", "is required")
		return
	}
	if n := utf8.RuneCountInString(name); n > MaxNameLen {
		vs.add("name", "at most %d characters, got %d", MaxNameLen, n)
		return
	}
	for _, c := range name {
		if !isNameChar(c) {
			vs.add("name", "only letters, digits, '-' and '_' are allowed, got %q", c)
			return
		}
	}
}

func isNameChar(c rune) bool {
	return c < utf8.RuneSelf && (c == '-' || c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z')
}

func validateText(vs *violations, field, v string, minLen, maxLen int) {
	if !validText(v) {
		vs.add(field, "must be printable UTF-8 text")
		return
	}
	n := utf8.RuneCountInString(v)
	switch {
	case n < minLen:
		vs.add(field, "is required")
	case n > maxLen:
		vs.add(field, "at most %d characters, got %d", maxLen, n)
	}
}

// validText rejects invalid UTF-8 and control characters, which no request
// carries and which would corrupt tables and logs.
func validText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if unicode.IsControl(c) {
			return false
		}
	}
	return true
}

// ValidateLabels checks a label map; field prefixes each violation. Budgets
// select rules by label, so the key syntax is kept simple to type in a
// selector.
func ValidateLabels(field string, labels map[string]string) []FieldViolation {
	var vs violations
	validateLabels(&vs, field, labels)
	return vs
}

func validateLabels(vs *violations, field string, labels map[string]string) {
	if len(labels) > MaxLabels {
		vs.add(field, "at most %d labels, got %d", MaxLabels, len(labels))
	}
	for _, k := range sortedKeys(labels) {
		f := keyField(field, k)
		if k == "" || len(k) > MaxLabelKeyLen || strings.IndexFunc(k, func(c rune) bool { return !isLabelKeyChar(c) }) >= 0 {
			vs.add(f, "label keys must be 1-%d characters of a-z, 0-9, '-', '_', '.' and '/'", MaxLabelKeyLen)
			continue
		}
		v := labels[k]
		if !validText(v) || utf8.RuneCountInString(v) > MaxLabelValueLen {
			vs.add(f, "label values must be at most %d printable characters", MaxLabelValueLen)
		}
	}
}

// validateTags checks X-Ray resource tags as AWS's TagResource does: at most
// MaxTags, keys of 1-MaxTagKeyLen and values of 0-MaxTagValueLen Unicode
// letters, digits, separators and _.:/=+-@, and no key starting with
// "aws:", which AWS reserves for itself.
func validateTags(vs *violations, field string, tags map[string]string) {
	if len(tags) > MaxTags {
		vs.add(field, "at most %d tags, got %d", MaxTags, len(tags))
	}
	for _, k := range sortedKeys(tags) {
		f := keyField(field, k)
		switch n := utf8.RuneCountInString(k); {
		case n < 1 || n > MaxTagKeyLen || !isTagText(k):
			vs.add(f, "tag keys must be 1-%d letters, digits, spaces or _.:/=+-@", MaxTagKeyLen)
			continue
		case len(k) >= 4 && strings.EqualFold(k[:4], "aws:"):
			vs.add(f, "the tag key prefix aws: is reserved")
			continue
		}
		if v := tags[k]; utf8.RuneCountInString(v) > MaxTagValueLen || !isTagText(v) {
			vs.add(f, "tag values must be at most %d letters, digits, spaces or _.:/=+-@", MaxTagValueLen)
		}
	}
}

func isTagText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if !unicode.IsLetter(c) && !unicode.IsNumber(c) && !unicode.Is(unicode.Z, c) && !strings.ContainsRune("_.:/=+-@", c) {
			return false
		}
	}
	return true
}

func isLabelKeyChar(c rune) bool {
	return c == '-' || c == '_' || c == '.' || c == '/' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z'
}

// keyField names the field of one map entry ("attributes.tier"). Field names
// end up in gRPC BadRequest details, protobuf strings that must be valid
// UTF-8 (or the whole error fails to marshal), so invalid bytes of a key are
// shown as U+FFFD.
func keyField(prefix, key string) string {
	return prefix + "." + strings.ToValidUTF8(key, "\uFFFD")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
