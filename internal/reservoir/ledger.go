package reservoir

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"math"
	"time"
)

// Ledger describes how a rule's fleet-wide request rate is kept with storage
// that depends on time, never on the number of clients.
//
// Time is cut into buckets one report interval long. Each report adds the
// client's request rate to the bucket of the time it arrived, and retracts the
// client's previous rate from the bucket it went into, as named by the Receipt
// handed back with the previous quota. So the live buckets always add up to
// the sum of every reporting client's latest rate: exact, whatever the phases
// of the reports and however skewed the traffic. A client that stops
// reporting is never retracted, and drops out when its bucket ages out after
// Retain intervals.
type Ledger struct {
	// Interval is the bucket length and the clients' report interval.
	Interval time.Duration
	// Retain is how many buckets, the current one included, hold live
	// contributions. It must exceed one so that a report that arrives a little
	// late still finds its predecessor live.
	Retain int
}

// NewLedger returns the ledger of a control plane whose clients report every
// interval: three live buckets, so that a report that comes up to one
// interval late still finds its predecessor live.
func NewLedger(interval time.Duration) Ledger { return Ledger{Interval: interval, Retain: 3} }

// Bucket returns the index of the bucket that t falls in.
func (l Ledger) Bucket(t time.Time) int64 { return t.UnixNano() / int64(l.Interval) }

// Live reports whether bucket still holds live contributions at now.
//
// The bucket after now's counts as live too: replicas' clocks differ by a
// little, and one that is ahead writes into the next bucket just before the
// others reach it; its contributions must count, and must not be dropped as
// stale, on every replica.
func (l Ledger) Live(bucket int64, now time.Time) bool {
	cur := l.Bucket(now)
	return bucket <= cur+1 && bucket > cur-int64(l.Retain)
}

// TTL is how long storage must keep a bucket.
func (l Ledger) TTL() time.Duration { return time.Duration(l.Retain+1) * l.Interval }

// Receipt records one client's contribution to one rule's ledger, so that its
// next report can retract it.
type Receipt struct {
	Bucket int64
	Rate   float64
}

// Encode returns the receipt as an opaque token for clients to echo, bound
// to the rule it was issued for: a token echoed for another rule is refused
// rather than retracting the wrong rule's traffic.
func (r Receipt) Encode(rule string) string {
	var b [24]byte
	binary.BigEndian.PutUint64(b[:8], uint64(r.Bucket))
	binary.BigEndian.PutUint64(b[8:16], math.Float64bits(r.Rate))
	binary.BigEndian.PutUint64(b[16:], ruleTag(rule))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// ErrBadReceipt is returned for a token that Encode did not produce for the
// rule.
var ErrBadReceipt = errors.New("malformed receipt")

// DecodeReceipt parses a token that Encode produced for rule.
func DecodeReceipt(s, rule string) (Receipt, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 24 || binary.BigEndian.Uint64(b[16:]) != ruleTag(rule) {
		return Receipt{}, ErrBadReceipt
	}
	r := Receipt{
		Bucket: int64(binary.BigEndian.Uint64(b[:8])),
		Rate:   math.Float64frombits(binary.BigEndian.Uint64(b[8:16])),
	}
	if !(r.Rate >= 0) || math.IsInf(r.Rate, 0) || r.Bucket < 0 {
		return Receipt{}, ErrBadReceipt
	}
	return r, nil
}

// ruleTag is FNV-1a of the rule name.
func ruleTag(rule string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(rule))
	return h.Sum64()
}
