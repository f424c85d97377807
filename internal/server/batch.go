package server

import (
	"context"
	"errors"
	"fmt"
	"strings"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/edit"
	"github.com/tracesampling/controlplane/pkg/rules"
	"github.com/tracesampling/controlplane/pkg/rules/rulepb"
)

// BatchEditRules decodes a batch, has the editor check and make it, and
// encodes what it did. Problems of decoding (a missing rule, a bad etag or
// mask) are reported together with every problem of the edits that did
// decode.
func (s *ruleService) BatchEditRules(ctx context.Context, req *pb.BatchEditRulesRequest) (*pb.BatchEditRulesResponse, error) {
	b := edit.Batch{ValidateOnly: req.GetValidateOnly()}
	var vs []rules.FieldViolation
	undecoded := map[string]bool{} // "updates[2]": its other problems are not looked for
	bad := func(edit string, v ...rules.FieldViolation) {
		vs = append(vs, v...)
		undecoded[edit] = true
	}
	for i, c := range req.GetCreates() {
		if c.GetRule() == nil {
			bad(fmt.Sprintf("creates[%d]", i), rules.FieldViolation{Field: fmt.Sprintf("creates[%d].rule", i), Description: "is required"})
		}
		b.Creates = append(b.Creates, rulepb.FromProto(c.GetRule()))
	}
	for i, u := range req.GetUpdates() {
		at := fmt.Sprintf("updates[%d]", i)
		if u.GetRule() == nil {
			bad(at, rules.FieldViolation{Field: at + ".rule", Description: "is required"})
		}
		paths, err := updatePaths(u.GetUpdateMask().GetPaths())
		if err != nil {
			bad(at, prefixed(at+".", err)...)
		}
		rev, err := etagRevision(at+".rule.etag", u.GetRule().GetEtag())
		if err != nil {
			bad(at, prefixed("", err)...)
		}
		b.Updates = append(b.Updates, edit.Patch{Rule: rulepb.FromProto(u.GetRule()), Fields: paths, IfRevision: rev})
	}
	for i, d := range req.GetDeletes() {
		at := fmt.Sprintf("deletes[%d]", i)
		rev, err := etagRevision(at+".etag", d.GetEtag())
		if err != nil {
			bad(at, prefixed("", err)...)
		}
		b.Deletes = append(b.Deletes, edit.Deletion{Name: d.GetName(), IfRevision: rev})
	}
	if len(vs) > 0 {
		var ve *rules.ValidationError
		if errors.As(batchFields(&rules.ValidationError{Violations: edit.CheckBatch(&b)}), &ve) {
			for _, v := range ve.Violations {
				if at, _, _ := strings.Cut(v.Field, "]"); !undecoded[at+"]"] {
					vs = append(vs, v)
				}
			}
		}
		return nil, &rules.ValidationError{Violations: vs}
	}
	res, err := s.edit.Batch(ctx, b)
	if err != nil {
		return nil, batchFields(err)
	}
	out := &pb.BatchEditRulesResponse{RulesVersion: res.Version}
	etag := func(r *rules.Rule) string {
		if r.Revision == 0 {
			return ""
		}
		return r.Etag()
	}
	for i := range res.Created {
		out.Rules = append(out.Rules, &pb.EditedRule{Name: res.Created[i].Name, Action: pb.RuleEvent_ACTION_CREATE, Etag: etag(&res.Created[i])})
	}
	for i := range res.Updated {
		out.Rules = append(out.Rules, &pb.EditedRule{Name: res.Updated[i].Name, Action: pb.RuleEvent_ACTION_UPDATE, Etag: etag(&res.Updated[i])})
	}
	for _, d := range b.Deletes {
		out.Rules = append(out.Rules, &pb.EditedRule{Name: d.Name, Action: pb.RuleEvent_ACTION_DELETE})
	}
	return out, nil
}

// prefixed returns the violations of err with prefix before each field.
func prefixed(prefix string, err error) []rules.FieldViolation {
	var ve *rules.ValidationError
	if !errors.As(prefixFields(prefix, err), &ve) {
		return []rules.FieldViolation{{Field: strings.TrimSuffix(prefix, "."), Description: err.Error()}}
	}
	return ve.Violations
}

// batchFields places the editor's batch fields in the request:
// "creates[2].fixed_rate" is the request's "creates[2].rule.fixed_rate",
// and so for updates, but for their update_mask.
func batchFields(err error) error {
	var ve *rules.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	out := &rules.ValidationError{Violations: make([]rules.FieldViolation, len(ve.Violations))}
	for i, v := range ve.Violations {
		f := v.Field
		if head, rest, ok := strings.Cut(f, "]."); ok && (strings.HasPrefix(head, "creates[") || strings.HasPrefix(head, "updates[")) && rest != "update_mask" {
			f = head + "].rule." + rest
		}
		out.Violations[i] = rules.FieldViolation{Field: f, Description: v.Description}
	}
	return out
}
