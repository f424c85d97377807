package rules

import (
	"maps"
	"slices"
)

// MutableFields are the fields of a rule an edit may change, by their API
// names; the rest is its identity (name) or set by the store (revision,
// times). Every transport's field masks name these. The field-coverage test
// (internal/cli, TestEveryRuleFieldIsCarried) checks this list, and
// WithFields, against the API's Rule message.
var MutableFields = []string{
	"priority", "fixed_rate", "reservoir_size", "service_name", "service_type", "host",
	"http_method", "url_path", "resource_arn", "attributes", "resource_attributes", "description",
	"labels", "expire_time", "tags", "sampling_rate_boost",
}

// IsMutableField reports whether name is one of MutableFields.
func IsMutableField(name string) bool { return slices.Contains(MutableFields, name) }

// WithFields returns cur with the fields named in fields (names of
// MutableFields; others are ignored) taken from patch.
func WithFields(cur Rule, patch *Rule, fields []string) Rule {
	next := cur.Clone()
	for _, f := range fields {
		switch f {
		case "priority":
			next.Priority = patch.Priority
		case "fixed_rate":
			next.FixedRate = patch.FixedRate
		case "reservoir_size":
			next.ReservoirSize = patch.ReservoirSize
		case "service_name":
			next.ServiceName = patch.ServiceName
		case "service_type":
			next.ServiceType = patch.ServiceType
		case "host":
			next.Host = patch.Host
		case "http_method":
			next.HTTPMethod = patch.HTTPMethod
		case "url_path":
			next.URLPath = patch.URLPath
		case "resource_arn":
			next.ResourceARN = patch.ResourceARN
		case "attributes":
			next.Attributes = maps.Clone(patch.Attributes)
		case "resource_attributes":
			next.ResourceAttributes = maps.Clone(patch.ResourceAttributes)
		case "description":
			next.Description = patch.Description
		case "labels":
			next.Labels = maps.Clone(patch.Labels)
		case "expire_time":
			next.ExpireTime = patch.ExpireTime
		case "tags":
			next.Tags = maps.Clone(patch.Tags)
		case "sampling_rate_boost":
			next.Boost = nil
			if patch.Boost != nil {
				b := *patch.Boost
				next.Boost = &b
			}
		}
	}
	return next
}
