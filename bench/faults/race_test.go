//go:build race

package faults

// raceEnabled: the suite runs under the race detector, and so do the
// replicas it builds.
const raceEnabled = true
