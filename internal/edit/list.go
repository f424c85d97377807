package edit

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/tracesampling/controlplane/pkg/rules"
)

// RulePage is one page of a rule listing: rules in matching order, all of
// one rules version.
type RulePage struct {
	Version int64
	Rules   []rules.Rule
	// NextToken continues the listing after the last rule of the page;
	// empty on the last page.
	NextToken string
}

// List returns up to pageSize rules that filter selects, in matching order,
// after the rule pageToken names (a token of an earlier page of the same
// filter; empty: from the first). The filter's terms are "service=NAME"
// (rules whose service glob matches NAME) and "labels.KEY=VALUE", separated
// by spaces or the word AND; each must hold. A bad filter or token is a
// validation error naming the field "filter" or "page_token".
func (e *Rules) List(ctx context.Context, filter string, pageSize int, pageToken string) (RulePage, error) {
	f, err := parseRuleFilter(filter)
	if err != nil {
		return RulePage{}, err
	}
	var after *pageCursor
	if pageToken != "" {
		c, err := decodeCursor(pageToken, filter)
		if err != nil {
			return RulePage{}, err
		}
		after = &c
	}
	snap, err := e.store.Snapshot(ctx)
	if err != nil {
		return RulePage{}, err
	}
	page := RulePage{Version: snap.Version}
	for i := range snap.Rules {
		r := &snap.Rules[i]
		if after != nil && rules.Compare(r, &rules.Rule{Priority: after.Priority, Name: after.Name}) <= 0 {
			continue
		}
		if !f.matches(r) {
			continue
		}
		if len(page.Rules) == pageSize {
			last := page.Rules[len(page.Rules)-1]
			page.NextToken = encodeCursor(pageCursor{Priority: last.Priority, Name: last.Name}, filter)
			break
		}
		page.Rules = append(page.Rules, *r)
	}
	return page, nil
}

// invalid is a validation error of one field.
func invalid(field, description string) error {
	return &rules.ValidationError{Violations: []rules.FieldViolation{{Field: field, Description: description}}}
}

// ruleFilter is a parsed List filter: every term must hold.
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
