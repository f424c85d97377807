// Package reservoir holds the quota math: how a rule's fleet-wide reservoir
// (traces per second) is split across SDK instances in proportion to their
// traffic, how the fleet's traffic is estimated from windowed counters, and
// the token bucket an instance spends its quota from. It is pure: no I/O, and
// time is always passed in.
package reservoir

import "math"

// Quota is one client's share of a reservoir of r traces per second:
// r × clientRate / fleetRate. A client that saw no traffic (no history) gets
// nothing, and may only borrow. fleetRate below clientRate (the fleet estimate
// always includes the client's own report, so only rounding gets it there) is
// treated as clientRate, so no client is ever given more than r.
func Quota(r, clientRate, fleetRate float64) float64 {
	if r <= 0 || !(clientRate > 0) || math.IsInf(clientRate, 0) {
		return 0
	}
	if !(fleetRate >= clientRate) || math.IsInf(fleetRate, 0) {
		fleetRate = clientRate
	}
	return r * (clientRate / fleetRate)
}

// Split divides a reservoir of r traces per second across clients in
// proportion to their request rates, so that the shares add up to r, never
// more. Clients with no traffic get nothing; if none has traffic nobody gets
// anything. Rates that are negative, NaN or infinite count as no traffic.
func Split(r float64, rates []float64) []float64 {
	shares := make([]float64, len(rates))
	if r <= 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		return shares
	}
	var total float64
	for _, rate := range rates {
		if usable(rate) {
			total += rate
		}
	}
	if total <= 0 || math.IsInf(total, 0) {
		return shares
	}
	var sum float64
	for i, rate := range rates {
		if usable(rate) {
			shares[i] = Quota(r, rate, total)
			sum += shares[i]
		}
	}
	// Rounding can leave the sum a few ulps above r; shave it off.
	for sum > r {
		scale := math.Nextafter(r/sum, 0)
		sum = 0
		for i := range shares {
			shares[i] *= scale
			sum += shares[i]
		}
	}
	return shares
}

func usable(rate float64) bool { return rate > 0 && !math.IsInf(rate, 0) }

// Grant is the quota a client gets of a reservoir of r traces per second:
// its share, but no more than what the quotas outstanding leave of r, and
// never less than nothing.
func Grant(r, share, outstanding float64) float64 {
	if !(share > 0) || !(r > outstanding) {
		return 0
	}
	return min(share, r-outstanding)
}
