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
	"hash"
	"math"
	"sync"
	"time"

	"github.com/tracesampling/controlplane/pkg/reservoir"
)

// Claim is what a receipt vouches for.
type Claim struct {
	// Receipt is the client's contribution to the rule's ledger: its rate
	// and the quota it was granted (before budgets), in the bucket of its
	// report.
	reservoir.Receipt
	// Issued is the end of the time the report it answers covered, to the
	// millisecond: the next report's counts begin there. It is when the
	// target was handed out for a client's first report, and after that
	// the previous claim's end plus the interval the report says (within
	// the time since, see package sampling's bound): not the replica's
	// clock, which differs between replicas, nor the time the report was
	// handled, which a store outage or a replica's death puts off.
	Issued time.Time
	// FixedRate is the fixed rate in force in the target (budgets applied).
	FixedRate float64
	// Overlap is how many traces the client may sample after Issued on
	// the quota it held before this one, if that was larger: it samples
	// on it until the answer reaches it, which under load is a good part
	// of a second after its counts end (a fleet's first quotas fall from
	// R to R/n in one report).
	Overlap float64
	// BoundOnly marks the claim of a report sent again (ResendKeeper): it
	// bounds what the report may claim, but it is not the client's
	// contribution to retract, since the first send may have retracted it
	// already. It is not part of the token.
	BoundOnly bool
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

// Token layout: version 2 adds the sampled rate to version 1's body,
// version 3 the rule version the client was counted as running, and
// version 4 the overlap. Open takes all four, so that the receipts a replica
// of a version before handed out still count during a rolling upgrade (what
// they lack as 0).
const (
	version    = 4
	bodyLenV1  = 1 + 4 + 8*5   // version, key ID, bucket, rate, quota, issued, fixed rate
	bodyLenV2  = bodyLenV1 + 8 // and the sampled rate
	bodyLenV3  = bodyLenV2 + 8 // and the applied rule version
	bodyLen    = bodyLenV3 + 8 // and the overlap
	macLen     = 16
	tokenLen   = bodyLen + macLen
	tokenLenV3 = bodyLenV3 + macLen
	tokenLenV2 = bodyLenV2 + macLen
	tokenLenV1 = bodyLenV1 + macLen
	// encodedLen is the length of a token: tokenLen bytes in unpadded
	// base64.
	encodedLen = (tokenLen*8 + 5) / 6
)

// Sign returns the token of c for client and rule, signed with the ring's
// first key. It returns "" for an empty ring.
func (r Ring) Sign(client, rule string, c Claim) string {
	if len(r) == 0 {
		return ""
	}
	return sign(&r[0], nil, client, rule, c)
}

// sign returns the token of c for client and rule, signed with k; macs, if
// not nil, holds k's HMAC states for reuse.
func sign(k *Key, macs *macPool, client, rule string, c Claim) string {
	var b [tokenLen]byte
	b[0] = version
	binary.BigEndian.PutUint32(b[1:5], k.ID)
	binary.BigEndian.PutUint64(b[5:13], uint64(c.Bucket))
	binary.BigEndian.PutUint64(b[13:21], math.Float64bits(c.Rate))
	binary.BigEndian.PutUint64(b[21:29], math.Float64bits(c.Quota))
	binary.BigEndian.PutUint64(b[29:37], uint64(c.Issued.UnixMilli()))
	binary.BigEndian.PutUint64(b[37:45], math.Float64bits(c.FixedRate))
	binary.BigEndian.PutUint64(b[45:53], math.Float64bits(c.Sampled))
	binary.BigEndian.PutUint64(b[53:61], uint64(c.Applied))
	binary.BigEndian.PutUint64(b[61:69], math.Float64bits(c.Overlap))
	macs.mac((*[macLen]byte)(b[bodyLen:]), k.Secret, b[:bodyLen], client, rule)
	var out [encodedLen]byte
	base64.RawURLEncoding.Encode(out[:], b[:])
	return string(out[:])
}

// Open checks a token that Sign made for client and rule, with any key of
// the ring, and returns its claim.
func (r Ring) Open(token, client, rule string) (Claim, error) {
	return open(r, nil, token, client, rule)
}

// open is Open; macs, if not nil, holds the HMAC states of ring's keys, in
// the same order.
func open(ring Ring, macs []*macPool, token, client, rule string) (Claim, error) {
	if len(token) > MaxTokenLen {
		return Claim{}, ErrMalformed
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || !(len(b) == tokenLen && b[0] == version || len(b) == tokenLenV3 && b[0] == 3 || len(b) == tokenLenV2 && b[0] == 2 || len(b) == tokenLenV1 && b[0] == 1) {
		return Claim{}, ErrMalformed
	}
	body := len(b) - macLen
	id := binary.BigEndian.Uint32(b[1:5])
	var (
		k    *Key
		pool *macPool
	)
	for i := range ring {
		if ring[i].ID == id {
			k = &ring[i]
			if macs != nil {
				pool = macs[i]
			}
		}
	}
	if k == nil {
		return Claim{}, ErrUnknownKey
	}
	var sum [macLen]byte
	pool.mac(&sum, k.Secret, b[:body], client, rule)
	if !hmac.Equal(b[body:], sum[:]) {
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
	if body >= bodyLenV2 {
		c.Sampled = math.Float64frombits(binary.BigEndian.Uint64(b[45:53]))
	}
	if body >= bodyLenV3 {
		c.Applied = int64(binary.BigEndian.Uint64(b[53:61]))
	}
	if body == bodyLen {
		c.Overlap = math.Float64frombits(binary.BigEndian.Uint64(b[61:69]))
	}
	// Only a bug signs these, but nothing unchecked reaches the ledger.
	if c.Bucket < 0 || c.Applied < 0 || !finite(c.Rate) || !finite(c.Quota) || !finite(c.Sampled) || !finite(c.Overlap) || !(c.FixedRate >= 0 && c.FixedRate <= 1) {
		return Claim{}, ErrMalformed
	}
	return c, nil
}

func finite(x float64) bool { return x >= 0 && !math.IsInf(x, 0) }

// macPool keeps HMAC-SHA256 states of one key, ready to take a token's
// input: a report signs a receipt for each of its rules, and a new HMAC
// costs two more SHA-256 blocks (the padded key, inner and outer) and
// allocations. It is safe for concurrent use; the nil *macPool makes a new
// state for each MAC.
type macPool struct {
	pool sync.Pool // of *macState
}

type macState struct {
	h   hash.Hash
	buf []byte // the MAC's input after the body, then its sum
}

// sum returns HMAC-SHA256 of the token's body, the client and the rule,
// each length-prefixed so that no two pairs give the same input, in st.buf.
// st.h must be fresh or reset.
func (st *macState) sum(body []byte, client, rule string) []byte {
	buf := append(st.buf[:0], body...)
	buf = binary.AppendUvarint(buf, uint64(len(client)))
	buf = append(buf, client...)
	buf = binary.AppendUvarint(buf, uint64(len(rule)))
	buf = append(buf, rule...)
	st.h.Write(buf)
	st.buf = st.h.Sum(buf[:0])
	return st.buf
}

// mac is a token's MAC, HMAC-SHA256 with secret of its body, the client and
// the rule cut to 128 bits, made with a new HMAC state.
func mac(secret, body []byte, client, rule string) []byte {
	st := macState{h: hmac.New(sha256.New, secret)}
	return st.sum(body, client, rule)[:macLen]
}

// mac writes to dst a token's MAC (see the function mac) with a state of
// p's, whose key is secret; a nil p makes a new state.
func (p *macPool) mac(dst *[macLen]byte, secret, body []byte, client, rule string) {
	if p == nil {
		copy(dst[:], mac(secret, body, client, rule))
		return
	}
	st, _ := p.pool.Get().(*macState)
	if st == nil {
		st = &macState{h: hmac.New(sha256.New, secret), buf: make([]byte, 0, 128)}
	}
	copy(dst[:], st.sum(body, client, rule))
	st.h.Reset()
	p.pool.Put(st)
}
