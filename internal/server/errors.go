package server

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tracesampling/controlplane/internal/rules"
	"github.com/tracesampling/controlplane/internal/store"
)

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
// that are not part of the API (storage failures, bugs) are logged here and
// reach the client only as a generic message, so no Redis error text or
// internal detail leaks.
func toStatus(ctx context.Context, log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var ve *rules.ValidationError
	switch {
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
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrAlreadyExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, store.ErrConflict):
		return status.Error(codes.Aborted, err.Error()+"; read the resource again and retry with its current etag")
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	case errors.Is(err, store.ErrNotReplicated):
		log.WarnContext(ctx, "edit not confirmed by a replica", "method", method, "err", err)
		return status.Error(codes.Unavailable, "the edit is applied, but no replica of the store confirmed it in time: "+
			"a failover now could lose it; read it back before sending it again")
	case errors.Is(err, store.ErrUnavailable):
		log.WarnContext(ctx, "store unavailable", "method", method, "err", err)
		return status.Error(codes.Unavailable, "the rule store is unavailable; retry later")
	default:
		log.ErrorContext(ctx, "internal error", "method", method, "err", err)
		return status.Error(codes.Internal, "internal error")
	}
}
