package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tracesampling/controlplane/internal/auth"
	"github.com/tracesampling/controlplane/internal/secrets"
	"github.com/tracesampling/controlplane/internal/simulate"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// busyRetryDelay is the RetryInfo of simulate.ErrBusy: work refused because
// as much of it as a replica allows is running.
const busyRetryDelay = time.Second

// invalid returns a validation error for one field, for request checks that
// are not rule limits (page sizes, masks, filters).
func invalid(field, description string) error {
	return &rules.ValidationError{Violations: []rules.FieldViolation{{Field: field, Description: description}}}
}

// prefixFields returns err with every field violation's name prefixed, so that
// a rule's "fixed_rate" is reported as the request's "rule.fixed_rate". Other
// errors are returned unchanged.
func prefixFields(prefix string, err error) error {
	var ve *rules.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	out := &rules.ValidationError{Violations: make([]rules.FieldViolation, len(ve.Violations))}
	for i, v := range ve.Violations {
		out.Violations[i] = rules.FieldViolation{Field: prefix + v.Field, Description: v.Description}
	}
	return out
}

// toStatus is the one place where domain errors become gRPC statuses. Errors
// that are not part of the API (bugs) are logged here and reach the client
// only as a generic message, so no Redis error text or internal detail leaks.
// An unreachable store is not logged per call: the interceptors count it in
// a condition that logs when it begins and ends.
func toStatus(ctx context.Context, log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var ve *rules.ValidationError
	switch {
	case errors.Is(err, auth.ErrUnauthenticated), errors.Is(err, auth.ErrPermissionDenied), errors.Is(err, auth.ErrLimited):
		// Refusals of access control inside a handler (a scoped principal
		// editing outside its services), mapped as the interceptors map
		// theirs.
		return auth.GRPCStatus(err)
	case errors.As(err, &ve):
		br := &errdetails.BadRequest{}
		for _, v := range ve.Violations {
			br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{Field: v.Field, Description: v.Description})
		}
		st, derr := status.New(codes.InvalidArgument, ve.Error()).WithDetails(br)
		if derr != nil {
			return status.Error(codes.InvalidArgument, ve.Error())
		}
		return st.Err()
	case errors.Is(err, rules.ErrDefaultRule):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, store.ErrRuleLimit):
		// FAILED_PRECONDITION, not RESOURCE_EXHAUSTED: gRPC's guide keeps
		// the first for calls the client must not retry until the state
		// is fixed (a rule deleted), while clients and proxies retry the
		// second, which also means rate limits and oversized messages here.
		// A retry at the limit never succeeds by itself; X-Ray's
		// RuleLimitExceededException is likewise an HTTP 400, not its 429.
		st, derr := status.New(codes.FailedPrecondition, err.Error()).WithDetails(&errdetails.PreconditionFailure{
			Violations: []*errdetails.PreconditionFailure_Violation{{
				Type: "RULE_LIMIT", Subject: "rules",
				Description: "the control plane holds as many rules as it may; delete one first",
			}},
		})
		if derr != nil {
			return status.Error(codes.FailedPrecondition, err.Error())
		}
		return st.Err()
	case errors.Is(err, auth.ErrNoSealingKey):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, secrets.ErrNoKey), errors.Is(err, secrets.ErrCorrupt):
		// A webhook secret sealed under a key this replica does not have.
		log.WarnContext(ctx, "cannot open a sealed secret", "method", method, "err", err)
		return status.Error(codes.FailedPrecondition, "a stored secret is sealed with a key this server does not have: "+
			"give every replica the same --secrets-key-file (with the old key on a later line after a rotation)")
	case errors.Is(err, store.ErrLimit):
		return status.Error(codes.FailedPrecondition, err.Error()+"; revoke or let some expire first")
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, store.ErrConflict):
		return status.Error(codes.Aborted, err.Error()+"; read the resource again and retry with its current etag")
	case errors.Is(err, simulate.ErrBusy):
		st, derr := status.New(codes.ResourceExhausted, err.Error()+"; retry later").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(busyRetryDelay)})
		if derr != nil {
			return status.Error(codes.ResourceExhausted, err.Error())
		}
		return st.Err()
	case errors.Is(err, store.ErrNotReplicated):
		log.WarnContext(ctx, "edit not confirmed by a replica", "method", method, "err", err)
		return status.Error(codes.Unavailable, "the edit is applied, but no replica of the store confirmed it in time: "+
			"a failover now could lose it; read it back before sending it again")
	case errors.Is(err, store.ErrUnavailable) && ctx.Err() == nil:
		// The store's own deadline (shorter than the caller's, so that a
		// report is answered before its quotas lapse) ran out, not the
		// caller's: the store is unavailable.
		return status.Error(codes.Unavailable, "the rule store is unavailable; retry later")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, store.ErrUnavailable):
		return status.Error(codes.Unavailable, "the rule store is unavailable; retry later")
	default:
		log.ErrorContext(ctx, "internal error", "method", method, "err", err)
		return status.Error(codes.Internal, "internal error")
	}
}
