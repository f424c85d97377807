package server

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tracesampling/controlplane/pkg/rules"
)

// ruleFilter is a parsed ListRules filter: every term must hold.
type ruleFilter struct {
	service string            // rules whose service_name glob matches it
	labels  map[string]string // rules carrying each label with this value
}

// parseRuleFilter parses terms "service=NAME" and "labels.KEY=VALUE"
// separated by spaces or the word AND. Values may be double-quoted.
func parseRuleFilter(s string) (ruleFilter, error) {
	var f ruleFilter
	for _, term := range strings.Fields(s) {
		if term == "AND" {
			continue
		}
		key, value, ok := strings.Cut(term, "=")
		value = strings.Trim(value, `"`)
		switch {
		case !ok || value == "":
			return f, invalid("filter", fmt.Sprintf("term %q: want service=NAME or labels.KEY=VALUE", term))
		case key == "service":
			f.service = value
		case strings.HasPrefix(key, "labels.") && len(key) > len("labels."):
			if f.labels == nil {
				f.labels = map[string]string{}
			}
			f.labels[strings.TrimPrefix(key, "labels.")] = value
		default:
			return f, invalid("filter", fmt.Sprintf("unknown field %q: want service or labels.KEY", key))
		}
	}
	return f, nil
}

func (f ruleFilter) matches(r *rules.Rule) bool {
	if f.service != "" && !rules.MatchGlob(r.ServiceName, f.service) {
		return false
	}
	for k, v := range f.labels {
		if got, ok := r.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// pageCursor is the last rule of a page; the next page starts after it in
// matching order, so edits between pages neither repeat nor skip rules that
// stay in place.
type pageCursor struct {
	Priority int32  `json:"p"`
	Name     string `json:"n"`
	// Filter is a hash of the filter the listing started with: a token is only
	// valid for the same query.
	Filter string `json:"f"`
}

func filterHash(filter string) string {
	h := sha256.Sum256([]byte(filter))
	return base64.RawURLEncoding.EncodeToString(h[:8])
}

func encodeCursor(c pageCursor, filter string) string {
	c.Filter = filterHash(filter)
	b, _ := json.Marshal(c) // a struct of strings and ints always marshals
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(token, filter string) (pageCursor, error) {
	var c pageCursor
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil || c.Name == "" {
		return c, invalid("page_token", "malformed page token")
	}
	if c.Filter != filterHash(filter) {
		return c, invalid("page_token", "the page token belongs to a listing with another filter")
	}
	return c, nil
}
