package receipt

import (
	"errors"
	"hash/maphash"
	"sync"
	"time"
)

// Keeper finds the claim that a client's report for a rule replaces, and
// keeps the claim of the target that answers it. The report path of the
// server calls it, whatever the transport; what differs is who holds the
// claims: clients that echo tokens (Tokens), a stream for its client (Held),
// or — for clients that echo nothing, such as X-Ray SDKs, which send a
// client ID and counts only — a table on the server keyed by client and
// rule, with an expiry, which is one more Keeper.
type Keeper interface {
	// Previous returns the claim that the client's report for rule
	// replaces — the one held for it, or the one token vouches for (""
	// for none) — and false if there is none. The error says why a token
	// was not taken; the report then goes on as a new client's.
	Previous(client, rule, token string, now time.Time) (Claim, bool, error)
	// Keep records c as the client's claim for rule and returns the token
	// to send it.
	Keep(client, rule string, c Claim) string
}

// ResendKeeper is a Keeper that also finds the claims of a report sent
// again: a numbered report whose first send may have been handled (its
// answer was lost, or its replica died), which its client sends again,
// to this replica or another, with the receipts it was taken with, echoed
// or not. Those bound what the report may claim, so that an honest
// report is not cut, but the first send may have retracted them: the
// claim Resent returns is BoundOnly unless the keeper held it for the
// report's stream already.
type ResendKeeper interface {
	Keeper
	// Resent is Previous for a document of a report sent again.
	Resent(client, rule, token string, now time.Time) (Claim, bool, error)
}

// Tokens is the keeper of clients that echo their receipts: it opens the
// tokens they send and signs the ones they get with the ring Keys has in
// memory (Cached: it never waits for the store), and Guard, if not nil, takes each
// client's tokens once and in order.
type Tokens struct {
	Keys  *Keys
	Guard *Guard
}

func (t Tokens) Previous(client, rule, token string, now time.Time) (Claim, bool, error) {
	if token == "" {
		return Claim{}, false, nil
	}
	c, err := t.Keys.cur.Load().open(token, client, rule)
	if err != nil {
		return Claim{}, false, err
	}
	if t.Guard != nil {
		if err := t.Guard.take(client, rule, c.Issued, now); err != nil {
			return Claim{}, false, err
		}
	}
	return c, true, nil
}

// Resent opens a token of a report sent again for the bound only: the
// guard takes a token so at most once more on this replica after any take
// of it (a report sent again that the store failed, and that comes again
// on another stream).
func (t Tokens) Resent(client, rule, token string, now time.Time) (Claim, bool, error) {
	if token == "" {
		return Claim{}, false, nil
	}
	c, err := t.Keys.cur.Load().open(token, client, rule)
	if err != nil {
		return Claim{}, false, err
	}
	if t.Guard != nil {
		if err := t.Guard.takeFor(client, rule, c.Issued, now, true); err != nil {
			return Claim{}, false, err
		}
	}
	c.BoundOnly = true
	return c, true, nil
}

func (t Tokens) Keep(client, rule string, c Claim) string {
	return t.Keys.cur.Load().sign(client, rule, c)
}

// Held is a stream's memory of its client's last claims: only the first
// report of a stream needs its tokens (a client that reconnects echoes the
// ones it got on its previous stream). It is not safe for concurrent use; a
// stream owns it.
type Held struct {
	claims map[string]Claim
}

// NewHeld returns an empty Held.
func NewHeld() *Held { return &Held{claims: map[string]Claim{}} }

// Claim returns the last claim held for rule (BoundOnly, if it came from a
// report sent again and nothing was kept since).
func (h *Held) Claim(rule string) (Claim, bool) {
	c, ok := h.claims[rule]
	return c, ok
}

// Over returns a keeper that answers from h first and asks next (for
// tokens) only for rules h holds nothing of; what either returns or keeps,
// h holds from then on.
func (h *Held) Over(next Keeper) Keeper { return heldKeeper{h, next} }

type heldKeeper struct {
	h    *Held
	next Keeper
}

func (k heldKeeper) Previous(client, rule, token string, now time.Time) (Claim, bool, error) {
	if c, ok := k.h.claims[rule]; ok {
		return c, true, nil
	}
	c, ok, err := k.next.Previous(client, rule, token, now)
	if ok {
		// The token is used up: if this report's answer is lost, the
		// stream still knows what to retract next time.
		k.h.claims[rule] = c
	}
	return c, ok, err
}

// Resent answers from h first, as Previous does: a claim the stream holds
// is the stream's to retract, whatever the report. Else it asks next for
// the bound only, and holds what next returns as BoundOnly, so that the
// report, if the store fails it and it comes again on this stream, is
// bounded the same without taking the token again.
func (k heldKeeper) Resent(client, rule, token string, now time.Time) (Claim, bool, error) {
	if c, ok := k.h.claims[rule]; ok {
		return c, true, nil
	}
	next, ok := k.next.(ResendKeeper)
	if !ok {
		return Claim{}, false, nil
	}
	c, ok, err := next.Resent(client, rule, token, now)
	if ok {
		c.BoundOnly = true
		k.h.claims[rule] = c
	}
	return c, ok, err
}

func (k heldKeeper) Keep(client, rule string, c Claim) string {
	k.h.claims[rule] = c
	return k.next.Keep(client, rule, c)
}

// Guard takes each client's tokens for a rule once, in the order they were
// issued: a token no newer than the last one taken for the same client and
// rule is refused, so that it cannot be replayed to retract the same
// figures again. It is per replica, so a token can be replayed once on each
// replica: the damage is bounded by their number. A report sent again
// (ResendKeeper) may take the last token taken once more, for the bound
// only: so a token bounds at most two reports on each replica, and
// retracts at most once. It remembers a client and
// rule for MaxAge after the token taken and refuses older tokens; it holds
// at most Max pairs, and when full refuses the tokens of new ones, which
// only makes quotas smaller. It is safe for concurrent use.
type Guard struct {
	max    int
	maxAge time.Duration
	seed   maphash.Seed

	mu sync.Mutex
	// last maps a hash of client and rule to the issue time, unix ms, of
	// the last token taken, shifted left by one; the low bit says that it
	// was taken once more, for the bound only.
	last  map[uint64]int64
	swept time.Time
}

// NewGuard returns a guard of at most max pairs, each remembered for maxAge.
func NewGuard(max int, maxAge time.Duration) *Guard {
	return &Guard{max: max, maxAge: maxAge, seed: maphash.MakeSeed(), last: map[uint64]int64{}}
}

// ErrExpired and ErrFull are Guard's refusals besides ErrReplayed.
var (
	ErrExpired = errors.New("receipt older than the longest span a report may cover")
	ErrFull    = errors.New("too many clients to guard against replays")
)

func (g *Guard) take(client, rule string, issued, now time.Time) error {
	return g.takeFor(client, rule, issued, now, false)
}

// takeFor takes a token; boundOnly also takes the last token taken, once
// more.
func (g *Guard) takeFor(client, rule string, issued, now time.Time, boundOnly bool) error {
	if now.Sub(issued) > g.maxAge {
		return ErrExpired
	}
	var h maphash.Hash
	h.SetSeed(g.seed)
	h.WriteString(client)
	h.WriteByte(0)
	h.WriteString(rule)
	key, ms := h.Sum64(), issued.UnixMilli()<<1
	g.mu.Lock()
	defer g.mu.Unlock()
	last, ok := g.last[key]
	switch {
	case ok && boundOnly && ms == last:
		g.last[key] = ms | 1
		return nil
	case ok && ms <= last:
		return ErrReplayed
	case !ok && len(g.last) >= g.max:
		if now.Sub(g.swept) < time.Second {
			return ErrFull
		}
		g.swept = now
		oldest := now.Add(-g.maxAge).UnixMilli() << 1
		for k, v := range g.last {
			if v < oldest {
				delete(g.last, k)
			}
		}
		if len(g.last) >= g.max {
			return ErrFull
		}
	}
	g.last[key] = ms
	return nil
}

// Len returns how many client and rule pairs the guard holds.
func (g *Guard) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.last)
}
