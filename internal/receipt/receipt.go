// Package receipt owns the receipts that go with quotas: what a receipt
// vouches for (a client's last contribution to a rule's fleet ledger, and
// the terms of the target it came with), the signed token that clients echo,
// the keys that sign them (shared by the replicas through the store, and
// rotated), and who holds a client's last receipt — the client itself, or the
// server for a stream (Keeper).
//
// A receipt lets the next report retract the client's previous figures from
// the ledger. A forged one could retract other clients' traffic and quotas
// and multiply everyone's share, so a token is signed with HMAC-SHA256 and
// bound to the client and the rule it was issued to; a token is accepted once
// per client and rule on each replica (Guard), so one cannot be replayed
// either.
package receipt

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"time"

	"github.com/tracesampling/controlplane/internal/reservoir"
)

// Claim is what a receipt vouches for.
type Claim struct {
	// Receipt is the client's contribution to the rule's ledger: its rate
	// and the quota it was granted (before budgets), in the bucket of its
	// report.
	reservoir.Receipt
	// Issued is when the target was handed out, to the millisecond: the
	// next report covers the time since, whatever interval it claims.
	Issued time.Time
	// FixedRate is the fixed rate in force in the target (budgets applied).
	FixedRate float64
}

// Errors of Open. A token that fails to open counts as none: its report is
// processed as a new client's, which can only make quotas smaller until the
// old figure ages out.
var (
	ErrMalformed  = errors.New("malformed receipt")
	ErrUnknownKey = errors.New("receipt signed with a key this replica does not hold")
	ErrForged     = errors.New("receipt signature does not match")
	ErrReplayed   = errors.New("receipt used before")
)

// MaxTokenLen bounds what a client may send as a receipt: a token is far
// shorter.
const MaxTokenLen = 256

// Token layout: version 2 adds the sampled rate to version 1's body. Open
// takes both, so that the receipts a replica of the version before handed
// out still count during a rolling upgrade (their sampled rate as 0).
const (
	version    = 2
	bodyLenV1  = 1 + 4 + 8*5   // version, key ID, bucket, rate, quota, issued, fixed rate
	bodyLen    = bodyLenV1 + 8 // and the sampled rate
	macLen     = 16
	tokenLen   = bodyLen + macLen
	tokenLenV1 = bodyLenV1 + macLen
)

// Sign returns the token of c for client and rule, signed with the ring's
// first key. It returns "" for an empty ring.
func (r Ring) Sign(client, rule string, c Claim) string {
	if len(r) == 0 {
		return ""
	}
	k := r[0]
	var b [tokenLen]byte
	b[0] = version
	binary.BigEndian.PutUint32(b[1:5], k.ID)
	binary.BigEndian.PutUint64(b[5:13], uint64(c.Bucket))
	binary.BigEndian.PutUint64(b[13:21], math.Float64bits(c.Rate))
	binary.BigEndian.PutUint64(b[21:29], math.Float64bits(c.Quota))
	binary.BigEndian.PutUint64(b[29:37], uint64(c.Issued.UnixMilli()))
	binary.BigEndian.PutUint64(b[37:45], math.Float64bits(c.FixedRate))
	binary.BigEndian.PutUint64(b[45:53], math.Float64bits(c.Sampled))
	copy(b[bodyLen:], mac(k.Secret, b[:bodyLen], client, rule))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Open checks a token that Sign made for client and rule, with any key of
// the ring, and returns its claim.
func (r Ring) Open(token, client, rule string) (Claim, error) {
	if len(token) > MaxTokenLen {
		return Claim{}, ErrMalformed
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || !(len(b) == tokenLen && b[0] == version || len(b) == tokenLenV1 && b[0] == 1) {
		return Claim{}, ErrMalformed
	}
	body := len(b) - macLen
	id := binary.BigEndian.Uint32(b[1:5])
	var k *Key
	for i := range r {
		if r[i].ID == id {
			k = &r[i]
		}
	}
	if k == nil {
		return Claim{}, ErrUnknownKey
	}
	if !hmac.Equal(b[body:], mac(k.Secret, b[:body], client, rule)) {
		return Claim{}, ErrForged
	}
	c := Claim{
		Receipt: reservoir.Receipt{
			Bucket: int64(binary.BigEndian.Uint64(b[5:13])),
			Rate:   math.Float64frombits(binary.BigEndian.Uint64(b[13:21])),
			Quota:  math.Float64frombits(binary.BigEndian.Uint64(b[21:29])),
		},
		Issued:    time.UnixMilli(int64(binary.BigEndian.Uint64(b[29:37]))).UTC(),
		FixedRate: math.Float64frombits(binary.BigEndian.Uint64(b[37:45])),
	}
	if body == bodyLen {
		c.Sampled = math.Float64frombits(binary.BigEndian.Uint64(b[45:53]))
	}
	// Only a bug signs these, but nothing unchecked reaches the ledger.
	if c.Bucket < 0 || !finite(c.Rate) || !finite(c.Quota) || !finite(c.Sampled) || !(c.FixedRate >= 0 && c.FixedRate <= 1) {
		return Claim{}, ErrMalformed
	}
	return c, nil
}

func finite(x float64) bool { return x >= 0 && !math.IsInf(x, 0) }

// mac is HMAC-SHA256 of the token's body, the client and the rule (each
// length-prefixed, so that no two pairs give the same input), cut to 128
// bits.
func mac(secret, body []byte, client, rule string) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write(body)
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(client)))])
	h.Write([]byte(client))
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(rule)))])
	h.Write([]byte(rule))
	return h.Sum(nil)[:macLen]
}
