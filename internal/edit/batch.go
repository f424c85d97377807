package edit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// Batch is edits of several rules made together, in one atomic step of the
// store, or not at all: one rules version, one audit entry per rule, one
// change notification.
type Batch struct {
	Creates []rules.Rule
	Updates []Patch
	Deletes []Deletion
	// ValidateOnly checks the batch, against the current rules too, and
	// changes nothing.
	ValidateOnly bool
	// Message goes into each audit entry (store.Event.Message); at most
	// store.MaxMessageLen bytes.
	Message string
}

// Patch is one update of a batch, as Update takes it: the fields of
// Rule.Name's rule that Fields names (all of rules.MutableFields when
// empty) become Rule's, if the rule is at IfRevision (0: any).
type Patch struct {
	Rule       rules.Rule
	Fields     []string
	IfRevision int64
}

// Deletion is one delete of a batch: the rule Name, if at IfRevision (0:
// any).
type Deletion struct {
	Name       string
	IfRevision int64
}

// BatchResult is what a batch did, or with ValidateOnly would do.
type BatchResult struct {
	// Created and Updated are the rules as stored, in the batch's order;
	// with ValidateOnly, as they would be, without revision or times.
	Created, Updated []rules.Rule
	// Version is the rules version after the batch; with ValidateOnly, the
	// one it was checked at.
	Version int64
}

// Size is the number of edits in b.
func (b *Batch) Size() int { return len(b.Creates) + len(b.Updates) + len(b.Deletes) }

// Field names of a batch's violations: "creates[2].fixed_rate",
// "updates[0].etag", "deletes[1].name", each edit's own fields after its
// place in the batch, for the transport to place as it places a single
// edit's ("rule.fixed_rate").
func createField(i int, f string) string { return fmt.Sprintf("creates[%d].%s", i, f) }
func updateField(i int, f string) string { return fmt.Sprintf("updates[%d].%s", i, f) }
func deleteField(i int, f string) string { return fmt.Sprintf("deletes[%d].%s", i, f) }

// CheckBatch returns the violations of b that need no store: each rule's
// fields, names, update fields, an edit of the same rule twice, the Default
// rule created or deleted, the batch's size and message. Batch calls it
// first; a transport that could not decode every edit calls it to name the
// problems of the others too.
func CheckBatch(b *Batch) []rules.FieldViolation {
	var vs []rules.FieldViolation
	add := func(field, format string, args ...any) {
		vs = append(vs, rules.FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
	}
	addAll := func(field func(string) string, err error) {
		var ve *rules.ValidationError
		if errors.As(err, &ve) {
			for _, v := range ve.Violations {
				vs = append(vs, rules.FieldViolation{Field: field(v.Field), Description: v.Description})
			}
		}
	}
	if n := b.Size(); n > store.MaxBatchEdits {
		add("creates", "a batch holds at most %d creates, updates and deletes together, got %d", store.MaxBatchEdits, n)
	}
	if len(b.Message) > store.MaxMessageLen {
		add("message", "at most %d bytes, got %d", store.MaxMessageLen, len(b.Message))
	}
	seen := map[string]string{} // rule name → the field of its first edit
	once := func(name, field string) {
		if first, ok := seen[name]; ok {
			add(field, "rule %q is edited twice in this batch (also %s)", name, first)
			return
		}
		seen[name] = field
	}
	for i := range b.Creates {
		r := b.Creates[i].Normalize()
		if r.IsDefault() {
			add(createField(i, "name"), "the Default rule always exists; update it instead")
			continue
		}
		addAll(func(f string) string { return createField(i, f) }, rules.Validate(&r))
		once(r.Name, createField(i, "name"))
	}
	for i := range b.Updates {
		p := &b.Updates[i]
		if err := rules.ValidateName(p.Rule.Name); err != nil {
			addAll(func(f string) string { return updateField(i, f) }, err)
			continue
		}
		for _, f := range p.Fields {
			if !rules.IsMutableField(f) {
				add(updateField(i, "update_mask"), "%q is not a field that can be updated", f)
			}
		}
		once(p.Rule.Name, updateField(i, "name"))
	}
	for i := range b.Deletes {
		d := &b.Deletes[i]
		if err := rules.ValidateName(d.Name); err != nil {
			addAll(func(f string) string { return deleteField(i, f) }, err)
			continue
		}
		if d.Name == rules.DefaultName {
			add(deleteField(i, "name"), "%v", rules.ErrDefaultRule)
			continue
		}
		once(d.Name, deleteField(i, "name"))
	}
	return vs
}

// Batch makes every edit of b or none. Every problem that needs no store is
// reported at once (a *rules.ValidationError naming each edit's field by
// its place: see CheckBatch), and so are the updated rules that would not
// be valid; an edit the current rules refuse (a rule that exists, or does
// not, a stale etag) fails the whole batch with an error that names it and
// wraps store.ErrAlreadyExists, ErrNotFound or ErrConflict; so does the
// rule limit (store.ErrRuleLimit), counted on what the batch leaves. Like
// Update, a batch whose updates and deletes carry no etag is read again and
// retried a few times when other edits land between its read and its
// write.
func (e *Rules) Batch(ctx context.Context, b Batch) (BatchResult, error) {
	if vs := CheckBatch(&b); len(vs) > 0 {
		return BatchResult{}, &rules.ValidationError{Violations: vs}
	}
	for attempt := 0; ; attempt++ {
		snap, err := e.store.Snapshot(ctx)
		if err != nil {
			return BatchResult{}, err
		}
		// Who may edit comes first, as for single edits: a caller out of
		// scope learns nothing of the rules' revisions.
		if err := checkBatchScope(ctx, &b, snap); err != nil {
			return BatchResult{}, err
		}
		edits, err := plan(&b, snap, e.now())
		if err != nil {
			return BatchResult{}, err
		}
		if b.ValidateOnly {
			return result(&b, edits, snap.Version), nil
		}
		res, err := e.store.ApplyRuleEdits(ctx, edits, auth.Actor(ctx), b.Message)
		var ee *store.EditError
		if errors.As(err, &ee) && errors.Is(err, store.ErrConflict) && attempt < UpdateRetries && !b.pinned(ee.Index) {
			continue // another edit landed between our read and write
		}
		if errors.As(err, &ee) {
			return BatchResult{}, b.editError(ee)
		}
		if err != nil {
			return BatchResult{}, err
		}
		out := result(&b, edits, res.Version)
		copy(out.Created, res.Rules)
		copy(out.Updated, res.Rules[len(b.Creates):])
		return out, nil
	}
}

// plan turns b into the store's edits against snap: creates, then updates
// (their rules built from the current ones), then deletes.
func plan(b *Batch, snap store.Snapshot, now time.Time) ([]store.RuleEdit, error) {
	cur := make(map[string]*rules.Rule, len(snap.Rules))
	for i := range snap.Rules {
		cur[snap.Rules[i].Name] = &snap.Rules[i]
	}
	edits := make([]store.RuleEdit, 0, b.Size())
	var vs []rules.FieldViolation
	for i := range b.Creates {
		r := b.Creates[i].Normalize()
		if _, ok := cur[r.Name]; ok {
			return nil, fmt.Errorf("%s: create rule %q: %w", createField(i, "name"), r.Name, store.ErrAlreadyExists)
		}
		if rules.CheckExpiry(&r, now) != nil {
			vs = append(vs, expiryViolation(createField(i, "expire_time"), &r, now))
		}
		edits = append(edits, store.RuleEdit{Action: store.ActionCreate, Rule: r})
	}
	for i := range b.Updates {
		p := &b.Updates[i]
		c, ok := cur[p.Rule.Name]
		if !ok {
			return nil, fmt.Errorf("%s: update rule %q: %w", updateField(i, "name"), p.Rule.Name, store.ErrNotFound)
		}
		if p.IfRevision != 0 && c.Revision != p.IfRevision {
			return nil, fmt.Errorf("%s: rule %q has etag %q, not %q: %w", updateField(i, "etag"), c.Name, c.Etag(), (&rules.Rule{Revision: p.IfRevision}).Etag(), store.ErrConflict)
		}
		fields := p.Fields
		if len(fields) == 0 {
			fields = rules.MutableFields
		}
		next := rules.WithFields(*c, &p.Rule, fields).Normalize()
		if err := rules.CheckDefault(&next); err != nil {
			return nil, fmt.Errorf("%s: update rule %q: %w", updateField(i, "name"), c.Name, err)
		}
		var ve *rules.ValidationError
		if errors.As(rules.Validate(&next), &ve) {
			for _, v := range ve.Violations {
				vs = append(vs, rules.FieldViolation{Field: updateField(i, v.Field), Description: v.Description})
			}
		}
		if setsExpiry(c, &next, p.Fields) && rules.CheckExpiry(&next, now) != nil {
			vs = append(vs, expiryViolation(updateField(i, "expire_time"), &next, now))
		}
		edits = append(edits, store.RuleEdit{Action: store.ActionUpdate, Rule: next, IfRevision: c.Revision})
	}
	if len(vs) > 0 {
		return nil, &rules.ValidationError{Violations: vs}
	}
	for i := range b.Deletes {
		d := &b.Deletes[i]
		c, ok := cur[d.Name]
		if !ok {
			return nil, fmt.Errorf("%s: delete rule %q: %w", deleteField(i, "name"), d.Name, store.ErrNotFound)
		}
		if d.IfRevision != 0 && c.Revision != d.IfRevision {
			return nil, fmt.Errorf("%s: rule %q has etag %q, not %q: %w", deleteField(i, "etag"), c.Name, c.Etag(), (&rules.Rule{Revision: d.IfRevision}).Etag(), store.ErrConflict)
		}
		edits = append(edits, store.RuleEdit{Action: store.ActionDelete, Rule: rules.Rule{Name: d.Name}, IfRevision: d.IfRevision})
	}
	if after := len(snap.Rules) + len(b.Creates) - len(b.Deletes); len(b.Creates) > 0 && after > rules.MaxRules && after > len(snap.Rules) {
		return nil, fmt.Errorf("the batch would leave %d rules: %w (at most %d, the Default rule included)", after, store.ErrRuleLimit, rules.MaxRules)
	}
	return edits, nil
}

// expiryViolation is CheckExpiry's violation, placed at field.
func expiryViolation(field string, r *rules.Rule, now time.Time) rules.FieldViolation {
	var ve *rules.ValidationError
	_ = errors.As(rules.CheckExpiry(r, now), &ve)
	return rules.FieldViolation{Field: field, Description: ve.Violations[0].Description}
}

// result returns what edits (in plan's order) make of b's rules.
func result(b *Batch, edits []store.RuleEdit, version int64) BatchResult {
	out := BatchResult{Version: version, Created: make([]rules.Rule, len(b.Creates)), Updated: make([]rules.Rule, len(b.Updates))}
	for i := range out.Created {
		out.Created[i] = edits[i].Rule.Clone()
	}
	for i := range out.Updated {
		out.Updated[i] = edits[len(b.Creates)+i].Rule.Clone()
	}
	return out
}

// pinned reports whether the edit at index i of plan's order carries the
// caller's etag, so that a conflict on it is the caller's to resolve.
func (b *Batch) pinned(i int) bool {
	switch {
	case i < len(b.Creates):
		return true // a create that exists now does not go away by trying again
	case i < len(b.Creates)+len(b.Updates):
		return b.Updates[i-len(b.Creates)].IfRevision != 0
	}
	return b.Deletes[i-len(b.Creates)-len(b.Updates)].IfRevision != 0
}

// editError names the edit of b that the store refused, by its place in b.
func (b *Batch) editError(ee *store.EditError) error {
	i := ee.Index
	var field string
	switch {
	case i < len(b.Creates):
		field = createField(i, "name")
	case i < len(b.Creates)+len(b.Updates):
		field = updateField(i-len(b.Creates), "name")
	default:
		field = deleteField(i-len(b.Creates)-len(b.Updates), "name")
	}
	return fmt.Errorf("%s: %s rule %q: %w; nothing was changed", field, ee.Action, ee.Name, ee.Err)
}

// checkBatchScope checks that the caller may make every edit of a batch:
// the service glob of a created rule, of an updated rule before and after,
// and of a deleted rule, as single edits are checked.
func checkBatchScope(ctx context.Context, b *Batch, snap store.Snapshot) error {
	cur := make(map[string]string, len(snap.Rules))
	for i := range snap.Rules {
		cur[snap.Rules[i].Name] = snap.Rules[i].ServiceName
	}
	for _, r := range b.Creates {
		if err := auth.CheckScope(ctx, r.ServiceName); err != nil {
			return fmt.Errorf("create rule %q: %w", r.Name, err)
		}
	}
	for _, p := range b.Updates {
		globs := []string{cur[p.Rule.Name]}
		if len(p.Fields) == 0 || slices.Contains(p.Fields, "service_name") {
			globs = append(globs, p.Rule.ServiceName)
		}
		if err := auth.CheckScope(ctx, globs...); err != nil {
			return fmt.Errorf("update rule %q: %w", p.Rule.Name, err)
		}
	}
	for _, d := range b.Deletes {
		if err := auth.CheckScope(ctx, cur[d.Name]); err != nil {
			return fmt.Errorf("delete rule %q: %w", d.Name, err)
		}
	}
	return nil
}
