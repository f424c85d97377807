package edit_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// TestList pages through the rules a filter selects, in matching order,
// and refuses a bad filter or token naming the field.
func TestList(t *testing.T) {
	ctx := admin(t)
	e := edit.NewRules(newStore(t))
	for i := range 7 {
		r := rules.Rule{Name: fmt.Sprintf("r%d", i), Priority: int32(10 - i%3), ServiceName: "shop-*"}
		if i%2 == 0 {
			r.ServiceName, r.Labels = "pay", map[string]string{"team": "even"}
		}
		if _, err := e.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	all := func(filter string, size int) []string {
		t.Helper()
		var names []string
		token := ""
		for range 20 {
			page, err := e.List(ctx, filter, size, token)
			if err != nil {
				t.Fatalf("List(%q, %d): %v", filter, size, err)
			}
			if len(page.Rules) > size || page.Version == 0 {
				t.Fatalf("a page of %d rules at version %d, page size %d", len(page.Rules), page.Version, size)
			}
			for _, r := range page.Rules {
				names = append(names, r.Name)
			}
			if token = page.NextToken; token == "" {
				return names
			}
		}
		t.Fatal("paging does not end")
		return nil
	}
	for _, tt := range []struct {
		filter string
		size   int
		want   []string
	}{
		// Matching order: priority, then name; the Default rule last.
		{"", 3, []string{"r2", "r5", "r1", "r4", "r0", "r3", "r6", "Default"}},
		{"labels.team=even", 1, []string{"r2", "r4", "r0", "r6"}},
		{`service="shop-x" AND labels.team=even`, 2, nil},
		{"service=shop-x", 2, []string{"r5", "r1", "r3", "Default"}},
	} {
		if diff := cmp.Diff(tt.want, all(tt.filter, tt.size)); diff != "" {
			t.Errorf("List(%q) by %d (-want +got):\n%s", tt.filter, tt.size, diff)
		}
	}

	first, err := e.List(ctx, "", 2, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, filter, token, field string
	}{
		{"term without a value", "service=", "", "filter"},
		{"unknown field", "colour=red", "", "filter"},
		{"malformed token", "", "not-a-token", "page_token"},
		{"token of another filter", "labels.team=even", first.NextToken, "page_token"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.List(ctx, tt.filter, 2, tt.token)
			var ve *rules.ValidationError
			if !errors.As(err, &ve) || len(ve.Violations) != 1 || ve.Violations[0].Field != tt.field {
				t.Errorf("List(%q, token %q) = %v, want a validation error of %s", tt.filter, tt.token, err, tt.field)
			}
		})
	}
}
