package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/files"
)

// applyBatch makes every change of a rules plan in one BatchEditRules call:
// all or none.
func (p *applyPlan) applyBatch(ctx context.Context, c *client, stdout, stderr io.Writer) error {
	req := &pb.BatchEditRulesRequest{}
	for i := range p.ops {
		p.ops[i].add(req)
	}
	if len(p.ops) > 0 {
		if _, err := c.rules.BatchEditRules(ctx, req); err != nil {
			fmt.Fprintf(stderr, "apply failed: none of the %d changes was made\n", len(p.ops))
			op := fmt.Sprintf("apply %d changes", len(p.ops))
			if status.Code(err) == codes.ResourceExhausted {
				op += fmt.Sprintf(" (a request of %d bytes; the server's --max-request-bytes may be lower)", proto.Size(req))
			}
			return c.wrap(op, err)
		}
	}
	fmt.Fprintf(stdout, "%d created, %d updated, %d deleted, %d unchanged\n", len(req.GetCreates()), len(req.GetUpdates()), len(req.GetDeletes()), p.unchanged)
	return nil
}

// resolveExpiry gives the entries with expires_in their expiry: the one
// their rule has on the server, or that long from now.
func resolveExpiry(entries []files.Rule, current []*pb.Rule, now time.Time) {
	have := make(map[string]time.Time, len(current))
	for _, r := range current {
		if r.GetExpireTime() != nil {
			have[r.GetName()] = r.GetExpireTime().AsTime()
		}
	}
	for i := range entries {
		entries[i].Rule = entries[i].Expiry(have[entries[i].Rule.Name], now)
	}
}
