package catalog

import (
	"testing"

	"github.com/tracesampling/controlplane/internal/store"
)

// TestHintIgnoresTokens: a token change asks for no reload of the rules
// and budgets; rule and budget changes (and topics it does not know) do.
func TestHintIgnoresTokens(t *testing.T) {
	tests := []struct {
		topic  store.Topic
		reload bool
	}{
		{store.TopicTokens, false},
		{store.TopicAlerts, false},
		{store.TopicRules, true},
		{store.TopicBudgets, true},
		{"something-new", true},
	}
	for _, tt := range tests {
		c := New(nil, Options{})
		c.hint(tt.topic)
		if got := len(c.kick) == 1; got != tt.reload {
			t.Errorf("hint(%q): reload asked %v, want %v", tt.topic, got, tt.reload)
		}
	}
}
