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
//     decided by OpenTelemetry's consistent probability sampling: kept when
//     the trace's randomness (the tracestate's `ot` rv, else the trace ID's
//     last 56 bits) is at or above the rate's threshold, so that every
//     service and Collector stage that follows the specification keeps the
//     same traces at the same rate, and a subset at a lower one. A span
//     kept this way carries the threshold in its tracestate (`ot=th:…`),
//     from which the Collector counts it as 1/rate spans; the spans of
//     steps 3 and 4 carry none, as their counts are not probabilities.
//
// A span with a parent carries the parent's threshold on, unless the
// parent's decision contradicts it (then none): see ShouldSample.
//
// If the control plane cannot be reached, the sampler keeps its last rules
// and quotas until they expire, then decides with a local default (one trace
// per second plus 5 %): never everything, never nothing. It never blocks a
// span start on the network.
package sampler
