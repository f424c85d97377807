package cli

import (
	"context"
	"errors"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/files"
	"github.com/tracesampling/controlplane/internal/output"
)

const budgetsApplyLong = `Makes the server's budgets match a budgets file (the format create -f
reads), as 'rules apply' does for rules. Each budget in the file is its
whole desired state: omitted fields take their defaults (currency_code USD,
price_per_million 5, thresholds 0.5, 0.8, 1 and forecast 1, enforce), an
omitted description, scope or channels is empty.

The file is checked whole first; if anything is wrong, every problem is
printed and nothing is changed (exit code 3). Otherwise apply reads the
server's budgets, prints the changes:

  + create NAME
  ~ update NAME: monthly_amount 500 -> 800, mode enforce -> alert_only
  - delete NAME          (only with --prune)
  = N unchanged

and makes them: creates, then updates, then deletes, each update and
delete under the etag read, so a budget edited by someone else in the
meantime fails with a conflict (exit code 5) instead of being overwritten.
If a call fails, apply stops and says which changes were made and which
were not.

The server never shows a webhook's full URL or its secret, so apply
compares channels as the server shows them (URL redacted, signed or not):
a new secret for the same URL is not seen. Change a secret with
'budgets update NAME --webhook URL --webhook-secret SECRET'.`

func newBudgetApplyCmd(conn *connConfig) *cobra.Command {
	var (
		file          string
		prune, dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE [--prune] [--dry-run]",
		Short: "make the server's budgets match a budgets file",
		Long:  budgetsApplyLong,
		Args:  argsBetween(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageError(errors.New("budgets apply: -f FILE is required"))
			}
			want, err := files.ReadBudgets(file, cmd.InOrStdin())
			if err != nil {
				return invalidInput(err)
			}
			c, err := dial(*conn)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, stdout := cmd.Context(), cmd.OutOrStdout()
			current, err := listBudgets(ctx, c)
			if err != nil {
				return err
			}
			plan := makeBudgetPlan(want, current, prune)
			plan.print(stdout, files.DisplayName(file))
			if dryRun {
				plan.printDryRun(stdout)
				return nil
			}
			return plan.apply(ctx, c, stdout, cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the budgets `file` to apply; - reads stdin (required)")
	cmd.Flags().BoolVar(&prune, "prune", false, "also delete the budgets that are not in the file")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only print the changes; change nothing")
	_ = cmd.MarkFlagFilename("file", "yaml", "yml")
	return cmd
}

// makeBudgetPlan compares the file's budgets (normalized, as
// files.LoadBudgets returns them) with the server's.
func makeBudgetPlan(want, current []*pb.Budget, prune bool) *applyPlan {
	onServer := make(map[string]*pb.Budget, len(current))
	for _, b := range current {
		onServer[b.GetName()] = b
	}
	inFile := make(map[string]bool, len(want))
	p := &applyPlan{noun: "budget"}
	var creates, updates, deletes []applyOp
	for _, w := range want {
		name := w.GetName()
		inFile[name] = true
		cur, ok := onServer[name]
		if !ok {
			creates = append(creates, applyOp{kind: opCreate, name: name, do: func(ctx context.Context, c *client) error {
				_, err := budgetAPI(c).CreateBudget(ctx, &pb.CreateBudgetRequest{Budget: w})
				return err
			}})
			continue
		}
		have, next := apiconv.BudgetFromProto(cur).Normalize(), apiconv.BudgetFromProto(w).Normalize()
		cs := output.BudgetChanges(&have, &next)
		if len(cs) == 0 {
			p.unchanged++
			continue
		}
		req := proto.CloneOf(w)
		req.Etag = cur.GetEtag()
		mask := &fieldmaskpb.FieldMask{Paths: output.MaskPaths(cs)}
		updates = append(updates, applyOp{kind: opUpdate, name: name, changes: cs, do: func(ctx context.Context, c *client) error {
			_, err := budgetAPI(c).UpdateBudget(ctx, &pb.UpdateBudgetRequest{Budget: req, UpdateMask: mask})
			return err
		}})
	}
	for _, b := range current {
		if inFile[b.GetName()] {
			continue
		}
		if !prune {
			p.kept = append(p.kept, b.GetName())
			continue
		}
		del := &pb.DeleteBudgetRequest{Name: b.GetName(), Etag: b.GetEtag()}
		deletes = append(deletes, applyOp{kind: opDelete, name: b.GetName(), do: func(ctx context.Context, c *client) error {
			_, err := budgetAPI(c).DeleteBudget(ctx, del)
			return err
		}})
	}
	p.ops = append(append(creates, updates...), deletes...)
	return p
}
