// Package faults is the control plane's fault suite. For each fault it runs
// the control plane as it is deployed — `controlplane serve` replicas on a
// real redis-server, a fleet of real SDK instances (clients/go/sampler) with
// known traffic, a rule editor making acknowledged edits and a budget over
// the fleet's service — breaks one thing under that load, and measures what
// the fault cost: SDK decisions that failed or blocked, acknowledged edits
// lost, budget spend lost or billed twice, the fleet's sampled rate against
// the rule's reservoir during and after the fault, and the time it took to
// come back.
//
// Everything runs on loopback. TestFaults drives it (a bounded mode by
// default, the full mode with -faults.full); scripts/faults is the command,
// and docs/RELIABILITY.md ("Fault suite") holds the figures of a full run.
package faults
