package receipt

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Key is a secret that receipts are signed with.
type Key struct {
	ID      uint32    `json:"id"`
	Secret  []byte    `json:"secret"`
	Created time.Time `json:"created"`
}

// NewKey returns a random 256-bit key created at now.
func NewKey(now time.Time) Key {
	k := Key{Secret: make([]byte, 32), Created: now}
	rand.Read(k.Secret) // never fails (crypto/rand)
	var id [4]byte
	rand.Read(id[:])
	k.ID = binary.BigEndian.Uint32(id[:])
	return k
}

// Ring is the keys that a replica accepts receipts of; the first one signs.
type Ring []Key

// Rotation of the keys. A key signs for RotateEvery; then a next key is
// added, which every replica accepts once it has reloaded its ring (Refresh)
// and which signs from Promote on; the key before keeps being accepted until
// the next rotation, far longer than a receipt is good for.
const (
	RotateEvery = 7 * 24 * time.Hour
	Promote     = 10 * time.Minute
	Refresh     = time.Minute
)

// KeySet is the keys as the store keeps them.
type KeySet struct {
	Current  Key  `json:"current"`
	Next     *Key `json:"next,omitempty"`     // accepted, not signing yet
	Previous *Key `json:"previous,omitempty"` // signed receipts that may still come back
}

// Ring returns the keys to sign with (first) and to accept.
func (s KeySet) Ring() Ring {
	r := Ring{s.Current}
	for _, k := range []*Key{s.Next, s.Previous} {
		if k != nil {
			r = append(r, *k)
		}
	}
	return r
}

// Rotate returns the key set after what is due at now: the first key when
// there is none (ok false), a next key (candidate) once the current one is
// RotateEvery old, and that key signing once it is Promote old. changed says
// whether there is anything to store. Stores apply it atomically, so that
// every replica gets the same keys.
func Rotate(s KeySet, ok bool, now time.Time, candidate Key) (_ KeySet, changed bool) {
	switch {
	case !ok:
		return KeySet{Current: candidate}, true
	case s.Next != nil && now.Sub(s.Next.Created) >= Promote:
		return KeySet{Current: *s.Next, Previous: &s.Current}, true
	case s.Next == nil && now.Sub(s.Current.Created) >= RotateEvery:
		s.Next = &candidate
		return s, true
	}
	return s, false
}

// MarshalKeySet and UnmarshalKeySet are the stores' encoding of a key set.
func MarshalKeySet(s KeySet) ([]byte, error) { return json.Marshal(s) }

func UnmarshalKeySet(b []byte) (KeySet, error) {
	var s KeySet
	if err := json.Unmarshal(b, &s); err != nil {
		return KeySet{}, fmt.Errorf("receipt keys: %w", err)
	}
	if len(s.Current.Secret) == 0 {
		return KeySet{}, fmt.Errorf("receipt keys: no current key")
	}
	return s, nil
}

// KeySource keeps the key set where every replica finds it: the store.
type KeySource interface {
	// ReceiptKeys returns the key set after applying Rotate at now,
	// atomically.
	ReceiptKeys(ctx context.Context, now time.Time) (KeySet, error)
}

// Keys is a replica's copy of the key ring, reloaded from the store every
// Refresh. It is safe for concurrent use.
type Keys struct {
	src     KeySource
	now     func() time.Time
	timeout time.Duration

	load chan struct{} // one load at a time
	mu   sync.Mutex
	ring Ring
	err  error     // of the last load, while there is no ring
	next time.Time // when to load again
	// cur is ring with its keys' HMAC states, which every report signs
	// with: read without the lock.
	cur atomic.Pointer[prepared]
	// nextNano is next in Unix nanoseconds, read without the lock: Ring,
	// which every report calls, then takes mu only when a load is due.
	nextNano atomic.Int64
}

// prepared is a ring with an HMAC state pool for each of its keys, in the
// same order.
type prepared struct {
	ring Ring
	macs []*macPool
}

func prepare(r Ring) *prepared {
	p := &prepared{ring: r, macs: make([]*macPool, len(r))}
	for i := range r {
		p.macs[i] = &macPool{}
	}
	return p
}

// sign is Ring.Sign; a nil p is an empty ring.
func (p *prepared) sign(client, rule string, c Claim) string {
	if p == nil || len(p.ring) == 0 {
		return ""
	}
	return sign(&p.ring[0], p.macs[0], client, rule, c)
}

// open is Ring.Open; a nil p is an empty ring.
func (p *prepared) open(token, client, rule string) (Claim, error) {
	if p == nil {
		return open(nil, nil, token, client, rule)
	}
	return open(p.ring, p.macs, token, client, rule)
}

// NewKeys returns the replica's copy of the keys of src. A load waits at
// most timeout for the store.
func NewKeys(src KeySource, now func() time.Time, timeout time.Duration) *Keys {
	return &Keys{src: src, now: now, timeout: timeout, load: make(chan struct{}, 1)}
}

// Cached returns the ring in memory, nil before the first load, without
// going to the store.
func (k *Keys) Cached() Ring {
	if p := k.cur.Load(); p != nil {
		return p.ring
	}
	return nil
}

// retryAfter is how long a replica goes on with the ring it has after a
// failed reload, so that a store outage costs one slow call a while, not
// one per report.
const retryAfter = 5 * time.Second

// Ring returns the ring, reloaded first if it is due. If the store cannot
// be reached, it returns the ring it has, or an error if it has none yet.
func (k *Keys) Ring(ctx context.Context) (Ring, error) {
	return k.RingAt(ctx, k.now())
}

// RingAt is Ring for a caller that has just read the clock (Keys' own),
// which is then not read again unless a load is due: the report path
// calls it once a report, and a clock read is a good part of what it
// costs when nothing is due.
func (k *Keys) RingAt(ctx context.Context, now time.Time) (Ring, error) {
	if p := k.cur.Load(); p != nil && now.UnixNano() < k.nextNano.Load() {
		return p.ring, nil
	}
	k.mu.Lock()
	ring, due, lastErr := k.ring, !k.now().Before(k.next), k.err
	k.mu.Unlock()
	if !due {
		if ring == nil {
			return nil, lastErr
		}
		return ring, nil
	}
	if ring != nil {
		// Someone else is loading: the ring we have will do.
		select {
		case k.load <- struct{}{}:
		default:
			return ring, nil
		}
	} else {
		select {
		case k.load <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	defer func() { <-k.load }()
	k.mu.Lock()
	ring, due, lastErr = k.ring, !k.now().Before(k.next), k.err
	k.mu.Unlock()
	if !due {
		if ring == nil {
			return nil, lastErr
		}
		return ring, nil
	}
	// One caller giving up must not fail the load for the others.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.timeout)
	defer cancel()
	set, err := k.src.ReceiptKeys(lctx, k.now())
	k.mu.Lock()
	defer k.mu.Unlock()
	if err != nil {
		k.next = k.now().Add(retryAfter)
		k.nextNano.Store(k.next.UnixNano())
		if k.ring != nil {
			return k.ring, nil
		}
		k.err = fmt.Errorf("load receipt keys: %w", err)
		return nil, k.err
	}
	k.ring, k.err, k.next = set.Ring(), nil, k.now().Add(Refresh)
	k.cur.Store(prepare(k.ring))
	k.nextNano.Store(k.next.UnixNano())
	return k.ring, nil
}
