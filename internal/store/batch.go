package store

import (
	"fmt"

	"github.com/tracesampling/controlplane/pkg/rules"
)

// MaxBatchEdits is the most edits one ApplyRuleEdits call may make: enough
// to replace every rule of a full store (deleting all but the Default rule
// and creating as many), so that any rule set can be reached in one atomic
// step.
const MaxBatchEdits = 2 * rules.MaxRules

// MaxMessageLen bounds an edit's Message, in bytes.
const MaxMessageLen = 256

// RuleEdit is one edit of a batch (ApplyRuleEdits). Each names a different
// rule: a batch never edits one rule twice.
type RuleEdit struct {
	Action Action
	// Rule is the rule to create, or an update's new rule (its Name
	// selects the rule), validated by the caller as CreateRule's and
	// UpdateRule's are; a delete reads only its Name.
	Rule rules.Rule
	// IfRevision is the revision an update's rule must be at, as in
	// UpdateRule; a delete's too, unless it is 0 (any revision).
	IfRevision int64
}

// BatchResult is what a batch did.
type BatchResult struct {
	// Rules are the rules as stored, in the order of the edits; a
	// delete's is the zero Rule.
	Rules []rules.Rule
	// Version is the rules version after the batch, which every audit
	// entry of the batch records: a batch bumps it once.
	Version int64
}

// EditError says which edit of a batch could not be made, and why; nothing
// of the batch was. It wraps ErrAlreadyExists, ErrNotFound or ErrConflict.
type EditError struct {
	Index  int // into the batch
	Action Action
	Name   string
	Err    error
}

func (e *EditError) Error() string {
	return fmt.Sprintf("edit #%d (%s rule %q): %v; nothing of the batch was applied", e.Index+1, e.Action, e.Name, e.Err)
}

func (e *EditError) Unwrap() error { return e.Err }

// CheckBatch returns an error if edits is not a batch any store takes: too
// many edits, one rule edited twice, an action that is not one, the Default
// rule created or deleted, a message too long. Stores call it first; the
// caller has done the rules' own validation.
func CheckBatch(edits []RuleEdit, message string) error {
	if len(edits) > MaxBatchEdits {
		return fmt.Errorf("a batch holds at most %d edits, got %d", MaxBatchEdits, len(edits))
	}
	if len(message) > MaxMessageLen {
		return fmt.Errorf("an edit's message is at most %d bytes, got %d", MaxMessageLen, len(message))
	}
	seen := make(map[string]int, len(edits))
	for i := range edits {
		e := &edits[i]
		name := e.Rule.Name
		if j, ok := seen[name]; ok {
			return fmt.Errorf("edits #%d and #%d both edit rule %q", j+1, i+1, name)
		}
		seen[name] = i
		switch e.Action {
		case ActionCreate, ActionDelete:
			if name == rules.DefaultName {
				return fmt.Errorf("edit #%d: %s rule %q: %w", i+1, e.Action, name, rules.ErrDefaultRule)
			}
		case ActionUpdate:
		default:
			return fmt.Errorf("edit #%d: unknown action %d", i+1, e.Action)
		}
	}
	return nil
}
