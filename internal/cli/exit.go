package cli

import (
	"errors"
	"runtime/debug"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tracesampling/controlplane/internal/output"
)

// Exit codes, documented in the README so scripts can tell failures apart.
const (
	exitOK          = 0
	exitFailure     = 1 // anything not listed below
	exitUsage       = 2 // bad command line
	exitInvalid     = 3 // invalid input: a bad rules file, or INVALID_ARGUMENT
	exitNotFound    = 4 // NOT_FOUND
	exitConflict    = 5 // ALREADY_EXISTS, ABORTED (stale etag), FAILED_PRECONDITION
	exitUnavailable = 6 // the server cannot be reached, or UNAVAILABLE
)

type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func usageError(err error) error   { return &codedError{code: exitUsage, err: err} }
func invalidInput(err error) error { return &codedError{code: exitInvalid, err: err} }

// exitCode picks the process exit code for err.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.InvalidArgument, codes.OutOfRange:
			return exitInvalid
		case codes.NotFound:
			return exitNotFound
		case codes.AlreadyExists, codes.Aborted, codes.FailedPrecondition:
			return exitConflict
		case codes.Unavailable, codes.DeadlineExceeded:
			return exitUnavailable
		}
	}
	return exitFailure
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return "controlplane " + bi.Main.Version
	}
	return "controlplane (devel)"
}

// checkFormat refuses an unknown -o as a usage error.
func checkFormat(f string, more ...string) error {
	if err := output.Check(f, more...); err != nil {
		return usageError(err)
	}
	return nil
}
