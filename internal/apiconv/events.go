// Package apiconv maps between the domain types (store events, budgets,
// tokens) and the public protobuf API, so that the server and the CLI agree
// on one mapping; a rule's mapping is package rulepb, which the SDK shares.
package apiconv

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules/rulepb"
)

// EventToProto returns the API form of an audit entry.
func EventToProto(e *store.Event) *pb.RuleEvent {
	p := &pb.RuleEvent{
		Id:           e.ID,
		RuleName:     e.RuleName,
		Actor:        e.Actor,
		EventTime:    timestamp(e.Time),
		RulesVersion: e.RulesVersion,
		Message:      e.Message,
	}
	switch e.Action {
	case store.ActionCreate:
		p.Action = pb.RuleEvent_ACTION_CREATE
	case store.ActionUpdate:
		p.Action = pb.RuleEvent_ACTION_UPDATE
	case store.ActionDelete:
		p.Action = pb.RuleEvent_ACTION_DELETE
	}
	if e.Before != nil {
		p.Before = rulepb.ToProto(e.Before)
	}
	if e.After != nil {
		p.After = rulepb.ToProto(e.After)
	}
	return p
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
