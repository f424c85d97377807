// Package sampler is the Go SDK of the trace-sampling control plane: an
// OpenTelemetry sdktrace.Sampler that decides every span start locally, in
// nanoseconds and without allocating, from the rules and quotas the control
// plane streams to it.
//
// A decision, in order (see Explain for the "why" of any one):
//
//  1. Parent: a span with a parent follows the parent's decision, so a trace
//     stays whole across services.
//  2. The first matching rule, by priority then name. The service-level parts
//     of every rule are resolved once when rules arrive, so a span start only
//     checks host, method, path and attributes.
//  3. Reservoir: a token from this instance's share of the rule's fleet-wide
//     reservoir (fractional shares work: 0.25/s is one trace every 4 s).
//  4. Borrowed: with no quota yet, or an expired one, at most one trace per
//     second per rule, reported as borrowed.
//  5. Fixed rate: the rule's fixed_rate (possibly lowered by a budget),
//     decided from the trace ID exactly as OpenTelemetry's TraceIDRatioBased
//     sampler does, so every service decides alike for the same trace.
//
// If the control plane cannot be reached, the sampler keeps its last rules
// and quotas until they expire, then decides with a local default (one trace
// per second plus 5 %): never everything, never nothing. It never blocks a
// span start on the network.
package sampler
