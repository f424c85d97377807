package faults

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// editTimeout bounds one edit; an edit that times out is not acknowledged.
const editTimeout = 5 * time.Second

// editOp is one edit the editor sent.
type editOp struct {
	rule   string
	action pb.RuleEvent_Action
	desc   string // the description it set (create, update)
	acked  bool
}

// editor makes rule edits through the API while the run goes on, and
// remembers which were acknowledged. Step k creates rule ed-k, updates
// ed-(k-2) and deletes ed-(k-4) — each only if every earlier edit of that
// rule was acknowledged, so that the expected end state of a rule is known
// exactly when all its edits were — keeping a handful of its rules alive.
// Its rules are of the fleet's service (so every edit reaches every
// instance) but match a path no request has.
type editor struct {
	client pb.RuleServiceClient
	every  time.Duration

	mu    sync.Mutex
	ops   []editOp
	etags map[string]string // the last acknowledged etag of each rule
	clean map[string]bool   // every edit of the rule so far was acknowledged

	cancel context.CancelFunc
	done   chan struct{}
}

func startEditor(client pb.RuleServiceClient, every time.Duration) *editor {
	ctx, cancel := context.WithCancel(context.Background())
	e := &editor{client: client, every: every, etags: map[string]string{}, clean: map[string]bool{}, cancel: cancel, done: make(chan struct{})}
	go e.run(ctx)
	return e
}

func (e *editor) stop() {
	e.cancel()
	<-e.done
}

func (e *editor) run(ctx context.Context) {
	defer close(e.done)
	t := time.NewTicker(e.every)
	defer t.Stop()
	for k := 0; ; k++ {
		e.create(ctx, k)
		if k >= 2 {
			e.update(ctx, k-2, k)
		}
		if k >= 4 {
			e.remove(ctx, k-4)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func ruleName(k int) string { return fmt.Sprintf("ed-%d", k) }

func (e *editor) record(op editOp, etag string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ops = append(e.ops, op)
	if !op.acked {
		e.clean[op.rule] = false
		return
	}
	if op.action == pb.RuleEvent_ACTION_CREATE {
		e.clean[op.rule] = true
	}
	e.etags[op.rule] = etag
}

// editable returns the rule's etag if every edit of it so far was
// acknowledged.
func (e *editor) editable(rule string) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.etags[rule], e.clean[rule]
}

func (e *editor) create(ctx context.Context, k int) {
	if ctx.Err() != nil {
		return
	}
	name := ruleName(k)
	desc := fmt.Sprintf("created at step %d", k)
	cctx, cancel := context.WithTimeout(ctx, editTimeout)
	defer cancel()
	resp, err := e.client.CreateRule(cctx, &pb.CreateRuleRequest{Rule: &pb.Rule{
		Name: name, Priority: 1, ReservoirSize: 0, FixedRate: 0,
		ServiceName: service, UrlPath: fmt.Sprintf("/never/%d", k), Description: desc,
	}})
	e.record(editOp{rule: name, action: pb.RuleEvent_ACTION_CREATE, desc: desc, acked: err == nil}, resp.GetRule().GetEtag())
}

func (e *editor) update(ctx context.Context, k, step int) {
	name := ruleName(k)
	etag, ok := e.editable(name)
	if !ok || ctx.Err() != nil {
		return
	}
	desc := fmt.Sprintf("updated at step %d", step)
	cctx, cancel := context.WithTimeout(ctx, editTimeout)
	defer cancel()
	resp, err := e.client.UpdateRule(cctx, &pb.UpdateRuleRequest{
		Rule:       &pb.Rule{Name: name, Description: desc, Etag: etag},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"description"}},
	})
	e.record(editOp{rule: name, action: pb.RuleEvent_ACTION_UPDATE, desc: desc, acked: err == nil}, resp.GetRule().GetEtag())
}

func (e *editor) remove(ctx context.Context, k int) {
	name := ruleName(k)
	etag, ok := e.editable(name)
	if !ok || ctx.Err() != nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, editTimeout)
	defer cancel()
	_, err := e.client.DeleteRule(cctx, &pb.DeleteRuleRequest{Name: name, Etag: etag})
	e.record(editOp{rule: name, action: pb.RuleEvent_ACTION_DELETE, acked: err == nil}, "")
}

// editCheck is what became of the editor's edits.
type editCheck struct {
	sent, acked, lost int
	lostOps           []string // a few, for the log
}

// verify reads the rules and the audit log back through the API and counts
// the acknowledged edits that are lost: whose audit event is missing, or,
// for a rule all of whose edits were acknowledged, that the rule's current
// state contradicts (a created or updated rule missing or with another
// description, a deleted one present). Reading retries for up to a minute,
// so a replica that is still coming back does not count as a loss.
func (e *editor) verify(ctx context.Context) (editCheck, error) {
	e.mu.Lock()
	ops := append([]editOp(nil), e.ops...)
	clean := make(map[string]bool, len(e.clean))
	for k, v := range e.clean {
		clean[k] = v
	}
	e.mu.Unlock()

	var current map[string]*pb.Rule
	var events map[string]bool
	var err error
	deadline := time.Now().Add(time.Minute)
	for {
		current, events, err = e.readBack(ctx)
		if err == nil || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return editCheck{}, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if err != nil {
		return editCheck{}, fmt.Errorf("read the rules back: %w", err)
	}

	last := map[string]editOp{}
	for _, op := range ops {
		last[op.rule] = op
	}
	var c editCheck
	for _, op := range ops {
		c.sent++
		if !op.acked {
			continue
		}
		c.acked++
		lost := !events[eventKey(op.rule, op.action, op.desc)]
		if !lost && clean[op.rule] && last[op.rule] == op {
			r, ok := current[op.rule]
			switch op.action {
			case pb.RuleEvent_ACTION_DELETE:
				lost = ok
			default:
				lost = !ok || r.GetDescription() != op.desc
			}
		}
		if lost {
			c.lost++
			if len(c.lostOps) < 5 {
				c.lostOps = append(c.lostOps, fmt.Sprintf("%s %s", op.action, op.rule))
			}
		}
	}
	return c, nil
}

func eventKey(rule string, a pb.RuleEvent_Action, desc string) string {
	return fmt.Sprintf("%s\x00%d\x00%s", rule, a, desc)
}

// readBack lists every rule and every audit event.
func (e *editor) readBack(ctx context.Context) (map[string]*pb.Rule, map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	current := map[string]*pb.Rule{}
	for tok := ""; ; {
		resp, err := e.client.ListRules(ctx, &pb.ListRulesRequest{PageSize: 1000, PageToken: tok})
		if err != nil {
			return nil, nil, err
		}
		for _, r := range resp.GetRules() {
			current[r.GetName()] = r
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	events := map[string]bool{}
	for tok := ""; ; {
		resp, err := e.client.ListRuleEvents(ctx, &pb.ListRuleEventsRequest{PageSize: 1000, PageToken: tok})
		if err != nil {
			return nil, nil, err
		}
		for _, ev := range resp.GetEvents() {
			desc := ev.GetAfter().GetDescription()
			events[eventKey(ev.GetRuleName(), ev.GetAction(), desc)] = true
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	return current, events, nil
}
