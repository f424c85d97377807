package xray

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

// X-Ray's error types (the "__type" of an error body and its
// x-amzn-ErrorType header), as the AWS SDKs match them.
const (
	typeInvalidRequest     = "InvalidRequestException"
	typeThrottled          = "ThrottledException"
	typeRuleLimit          = "RuleLimitExceededException"
	typeResourceNotFound   = "ResourceNotFoundException"
	typeTooManyTags        = "TooManyTagsException"
	typeIncompleteSig      = "IncompleteSignatureException"
	typeInvalidSignature   = "InvalidSignatureException"
	typeAccessDenied       = "AccessDeniedException"
	typeUnknownOperation   = "UnknownOperationException"
	typeServiceUnavailable = "ServiceUnavailableException"
	typeInternal           = "InternalFailure"
)

// apiError is an error as X-Ray sends it: an HTTP status and a body
// {"__type": Type, "Message": Message}, with ResourceName for the errors
// that name one.
type apiError struct {
	Status       int
	Type         string
	Message      string
	ResourceName string
}

func (e *apiError) Error() string { return e.Type + ": " + e.Message }

func invalidRequest(msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Message: msg}
}

// invalidField returns a validation error for one field, named as X-Ray
// names it ("SamplingRule.Version").
func invalidField(field, description string) error {
	return &rules.ValidationError{Violations: []rules.FieldViolation{{Field: field, Description: description}}}
}

// Operations, for the error mapping: a rule that does not exist is
// InvalidRequestException on the rule calls (the only error, with
// ThrottledException, that the AWS SDKs model for them) and
// ResourceNotFoundException on the tag calls.
const (
	opGetSamplingRules     = "GetSamplingRules"
	opGetSamplingTargets   = "GetSamplingTargets"
	opGetSamplingSummaries = "GetSamplingStatisticSummaries"
	opCreateSamplingRule   = "CreateSamplingRule"
	opUpdateSamplingRule   = "UpdateSamplingRule"
	opDeleteSamplingRule   = "DeleteSamplingRule"
	opTagResource          = "TagResource"
	opUntagResource        = "UntagResource"
	opListTagsForResource  = "ListTagsForResource"
)

func isTagOp(op string) bool {
	return op == opTagResource || op == opUntagResource || op == opListTagsForResource
}

// mapError is the one place where errors become X-Ray's error shapes: the
// core's (store.ErrNotFound, ErrAlreadyExists, ErrConflict, ErrUnavailable,
// *rules.ValidationError, rules.ErrDefaultRule, this package's sentinels)
// and this adapter's own. resource names the rule or ARN of the call, for
// the errors that carry one. Errors that are not part of the API are logged
// here and reach the client only as a generic message, so no storage error
// text leaks.
func mapError(ctx context.Context, log *slog.Logger, op, resource string, err error) *apiError {
	var ae *apiError
	var ve *rules.ValidationError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &ve):
		return invalidRequest(validationMessage(ve))
	case errors.Is(err, rules.ErrDefaultRule):
		return invalidRequest(err.Error())
	case errors.Is(err, store.ErrNotFound):
		if isTagOp(op) {
			return &apiError{Status: http.StatusNotFound, Type: typeResourceNotFound, Message: "no sampling rule has this ARN", ResourceName: resource}
		}
		return invalidRequest("sampling rule does not exist: " + resource)
	case errors.Is(err, store.ErrAlreadyExists):
		return invalidRequest("a sampling rule with this name already exists: " + resource)
	case errors.Is(err, ErrRuleLimit):
		return &apiError{Status: http.StatusBadRequest, Type: typeRuleLimit, Message: "the control plane holds as many sampling rules as it allows"}
	case errors.Is(err, ErrTooManyTags):
		return &apiError{Status: http.StatusBadRequest, Type: typeTooManyTags, Message: "the sampling rule would have more tags than allowed", ResourceName: resource}
	case errors.Is(err, ErrThrottled):
		// A limit's refusal says which limit and what to do (the caller's
		// own client IDs, its edit rate): no store text reaches it here.
		return &apiError{Status: http.StatusTooManyRequests, Type: typeThrottled, Message: err.Error()}
	case errors.Is(err, store.ErrConflict):
		// A conflict that the core's retries did not get past is a burst of
		// concurrent edits: the AWS SDKs retry ThrottledException with
		// backoff, which is what the caller should do.
		return &apiError{Status: http.StatusTooManyRequests, Type: typeThrottled, Message: "too many concurrent edits; retry later"}
	case errors.Is(err, errBadAuthorization):
		return &apiError{Status: http.StatusBadRequest, Type: typeIncompleteSig, Message: err.Error()}
	case errors.Is(err, ErrSignature):
		return &apiError{Status: http.StatusForbidden, Type: typeInvalidSignature, Message: "the request signature does not match"}
	case errors.Is(err, ErrAccessDenied):
		return &apiError{Status: http.StatusForbidden, Type: typeAccessDenied, Message: "not allowed to call " + op}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &apiError{Status: http.StatusServiceUnavailable, Type: typeServiceUnavailable, Message: "the request was canceled or timed out; retry"}
	case errors.Is(err, store.ErrUnavailable):
		log.WarnContext(ctx, "store unavailable", "op", op, "err", err)
		return &apiError{Status: http.StatusServiceUnavailable, Type: typeServiceUnavailable, Message: "the rule store is unavailable; retry later"}
	default:
		log.ErrorContext(ctx, "internal error", "op", op, "err", err)
		return &apiError{Status: http.StatusInternalServerError, Type: typeInternal, Message: "internal error"}
	}
}

// validationMessage lists every violation with X-Ray's field names.
func validationMessage(ve *rules.ValidationError) string {
	parts := make([]string, len(ve.Violations))
	for i, v := range ve.Violations {
		parts[i] = xrayField(v.Field) + ": " + v.Description
	}
	return strings.Join(parts, "; ")
}

// coreFields names the core's rule fields as X-Ray does.
var coreFields = map[string]string{
	"name":             "RuleName",
	FieldPriority:      "Priority",
	FieldFixedRate:     "FixedRate",
	FieldReservoirSize: "ReservoirSize",
	FieldServiceName:   "ServiceName",
	FieldServiceType:   "ServiceType",
	FieldHost:          "Host",
	FieldHTTPMethod:    "HTTPMethod",
	FieldURLPath:       "URLPath",
	FieldResourceARN:   "ResourceARN",
	FieldAttributes:    "Attributes",
	FieldBoost:         "SamplingRateBoost",
}

// xrayField turns a core field path ("rule.fixed_rate", "attributes.tier")
// into X-Ray's ("FixedRate", "Attributes.tier"); names it does not know
// (this adapter's own, already in X-Ray's form) pass unchanged.
func xrayField(f string) string {
	f = strings.TrimPrefix(f, "rule.")
	head, rest, _ := strings.Cut(f, ".")
	if x, ok := coreFields[f]; ok {
		return x
	}
	if x, ok := coreFields[head]; ok {
		return x + "." + rest
	}
	return f
}
