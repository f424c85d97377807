// Package sdke2e holds the Go SDK's tests against the real control plane
// (the gRPC server, the X-Ray core, the budget controller, Redis in each
// topology). They live in the server's module so that the SDK's own module,
// clients/go, needs none of the server's dependencies; the SDK's unit tests
// stay beside it.
package sdke2e
