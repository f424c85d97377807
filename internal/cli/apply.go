package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/files"
	"github.com/tracesampling/controlplane/internal/output"
	"github.com/tracesampling/controlplane/pkg/rules"
	"github.com/tracesampling/controlplane/pkg/rules/rulepb"
)

const applyAbout = `Makes the server's rules match a rules file, like 'kubectl apply'. Each
rule in the file is its whole desired state: omitted globs mean "*",
omitted numbers zero, an omitted description or map empty.

The file is checked whole first (field values with the server's own rule
limits, unknown fields, duplicate names); if anything is wrong, every problem
is printed and nothing is changed (exit code 3). Otherwise apply reads the
server's rules, prints the changes:

  + create NAME
  ~ update NAME: fixed_rate 0.5 -> 0.2, url_path "/a*" -> "/b*"
  - delete NAME          (only with --prune)
  = N unchanged

and makes them all in one call (BatchEditRules), all or none: the server
checks every change and applies them in one step, one rules version, so
SDKs never see half a file. A file that would leave more than 1,000 rules
fails before any change (exit code 5). Updates and deletes carry the etag
read, so a rule edited by someone else in the meantime fails the whole
apply with a conflict (exit code 5) instead of being overwritten; nothing
is changed then, and apply can simply be run again. The changes must fit
one request to the server (--max-request-bytes, 1 MiB by default: some
3,000 rules of a few hundred bytes).

The Default rule may be in the file with its re-rating fields (fixed_rate,
reservoir_size, description, labels); it is never pruned.

A rule with expires_in (a duration, "30m") gets an expiry that long from
now when apply creates it; one that exists keeps its expiry, so applying
the file again does not extend it. Once it expires the control plane
deletes it, and the next apply creates it again: in a file applied on a
schedule, give expire_time (an RFC 3339 time) instead.`

func newRulesApplyCmd(conn *connConfig) *cobra.Command {
	var (
		file          string
		prune, dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE [--prune] [--dry-run]",
		Short: "make the server's rules match a rules file",
		Long:  applyAbout,
		Args:  argsBetween(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageError(errors.New("rules apply: -f FILE is required"))
			}
			entries, err := files.ReadRules(file, cmd.InOrStdin())
			if err != nil {
				return invalidInput(err)
			}
			c, err := dial(*conn)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, stdout := cmd.Context(), cmd.OutOrStdout()
			current, err := c.listRules(ctx, "", 1000)
			if err != nil {
				return err
			}
			resolveExpiry(entries, current, time.Now())
			plan := makePlan(entries, current, prune)
			plan.print(stdout, files.DisplayName(file))
			if err := plan.checkLimit(len(current)); err != nil {
				return err
			}
			if dryRun {
				plan.printDryRun(stdout)
				return nil
			}
			return plan.applyBatch(ctx, c, stdout, cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the rules `file` to apply; - reads stdin (required)")
	cmd.Flags().BoolVar(&prune, "prune", false, "also delete the rules that are not in the file (never the Default rule)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only print the changes; change nothing")
	_ = cmd.MarkFlagFilename("file", "yaml", "yml")
	return cmd
}

type opKind int

const (
	opCreate opKind = iota
	opUpdate
	opDelete
)

// applyOp is one change an apply makes.
type applyOp struct {
	kind    opKind
	name    string
	changes []output.Change // of an update
	// do makes the change; updates and deletes carry the etag read from
	// the server. (Budgets: one call per change.)
	do func(ctx context.Context, c *client) error
	// add puts the change in a batch, with the etag read. (Rules.)
	add func(req *pb.BatchEditRulesRequest)
}

func (o *applyOp) String() string {
	switch o.kind {
	case opCreate:
		return "+ create " + o.name
	case opUpdate:
		return "~ update " + o.name + ": " + output.JoinChanges(o.changes)
	}
	return "- delete " + o.name
}

// applyPlan is every change that makes the server match a file (of rules
// or budgets).
type applyPlan struct {
	noun      string    // what the file holds: "rule"
	ops       []applyOp // creates, then updates, then deletes
	unchanged int
	kept      []string // not in the file, and kept without --prune
}

// makePlan compares the file's rules (normalized) with the server's.
func makePlan(entries []files.Rule, current []*pb.Rule, prune bool) *applyPlan {
	onServer := make(map[string]*pb.Rule, len(current))
	for _, r := range current {
		onServer[r.GetName()] = r
	}
	inFile := make(map[string]bool, len(entries))
	p := &applyPlan{noun: "rule"}
	var creates, updates, deletes []applyOp
	for _, e := range entries {
		inFile[e.Rule.Name] = true
		cur, ok := onServer[e.Rule.Name]
		if !ok {
			want := rulepb.ToProto(&e.Rule)
			creates = append(creates, applyOp{kind: opCreate, name: e.Rule.Name, add: func(req *pb.BatchEditRulesRequest) {
				req.Creates = append(req.Creates, &pb.CreateRuleRequest{Rule: want})
			}})
			continue
		}
		have := normalized(cur)
		cs := output.RuleChanges(&have, &e.Rule)
		if len(cs) == 0 {
			p.unchanged++
			continue
		}
		want := rulepb.ToProto(&e.Rule)
		want.Etag = cur.GetEtag()
		mask := &fieldmaskpb.FieldMask{Paths: output.MaskPaths(cs)}
		updates = append(updates, applyOp{kind: opUpdate, name: e.Rule.Name, changes: cs, add: func(req *pb.BatchEditRulesRequest) {
			req.Updates = append(req.Updates, &pb.UpdateRuleRequest{Rule: want, UpdateMask: mask})
		}})
	}
	for _, r := range current {
		if inFile[r.GetName()] || r.GetName() == rules.DefaultName {
			continue
		}
		if prune {
			del := &pb.DeleteRuleRequest{Name: r.GetName(), Etag: r.GetEtag()}
			deletes = append(deletes, applyOp{kind: opDelete, name: r.GetName(), add: func(req *pb.BatchEditRulesRequest) {
				req.Deletes = append(req.Deletes, del)
			}})
		} else {
			p.kept = append(p.kept, r.GetName())
		}
	}
	// One batch: the server counts the limit on what it leaves, so the
	// order does not matter.
	p.ops = append(append(creates, updates...), deletes...)
	return p
}

// checkLimit refuses a plan that would leave the server (holding current
// rules) with more rules than it takes, before any change: the server
// would refuse the create that passes the limit, half way through.
func (p *applyPlan) checkLimit(current int) error {
	after := current + p.count(opCreate) - p.count(opDelete)
	if after <= rules.MaxRules {
		return nil
	}
	msg := fmt.Sprintf("rules apply: the server would hold %d rules, more than the limit of %d (the Default rule included); nothing was changed", after, rules.MaxRules)
	if len(p.kept) > 0 {
		msg += fmt.Sprintf("; --prune would delete the %d rules not in the file", len(p.kept))
	}
	return &codedError{code: exitConflict, err: errors.New(msg)}
}

func (p *applyPlan) count(k opKind) int {
	n := 0
	for i := range p.ops {
		if p.ops[i].kind == k {
			n++
		}
	}
	return n
}

func (p *applyPlan) print(w io.Writer, file string) {
	for i := range p.ops {
		fmt.Fprintln(w, p.ops[i].String())
	}
	if p.unchanged > 0 {
		fmt.Fprintf(w, "= %d unchanged\n", p.unchanged)
	}
	if len(p.kept) > 0 {
		fmt.Fprintf(w, "# kept, not in %s (--prune deletes them): %s\n", file, strings.Join(p.kept, ", "))
	}
}

// printDryRun sums up what a dry run did not do.
func (p *applyPlan) printDryRun(w io.Writer) {
	fmt.Fprintf(w, "dry run: %d to create, %d to update, %d to delete, %d unchanged; nothing was changed\n",
		p.count(opCreate), p.count(opUpdate), p.count(opDelete), p.unchanged)
}

// apply makes the changes in order and stops at the first that fails,
// reporting which were made and which were not.
func (p *applyPlan) apply(ctx context.Context, c *client, stdout, stderr io.Writer) error {
	var done [3]int
	summary := func() {
		fmt.Fprintf(stdout, "%d created, %d updated, %d deleted, %d unchanged\n", done[opCreate], done[opUpdate], done[opDelete], p.unchanged)
	}
	for i := range p.ops {
		op := &p.ops[i]
		err := op.do(ctx, c)
		if err != nil {
			fmt.Fprintf(stderr, "apply stopped: %d of %d changes made\n", i, len(p.ops))
			if i > 0 {
				fmt.Fprintln(stderr, "made:")
				for j := range p.ops[:i] {
					fmt.Fprintln(stderr, "  "+p.ops[j].String())
				}
			}
			fmt.Fprintln(stderr, "not made:")
			for j := range p.ops[i:] {
				fmt.Fprintln(stderr, "  "+p.ops[i+j].String())
			}
			summary()
			verb := [...]string{opCreate: "create", opUpdate: "update", opDelete: "delete"}[op.kind]
			return c.wrap(fmt.Sprintf("%s %s %q", verb, p.noun, op.name), err)
		}
		done[op.kind]++
	}
	summary()
	return nil
}
