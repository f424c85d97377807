package redisstore

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tracesampling/controlplane/internal/boost"
)

// The boost scripts. A redis.Script is its source and hash, never changed
// after this; they are not Store fields only so that this file stays the
// only one the boost storage touches until the report path is wired to it.
var (
	//go:embed boost.lua
	boostRecordLua string
	//go:embed boost_start.lua
	boostStartLua string

	boostRecordScript = redis.NewScript(boostRecordLua)
	boostStartScript  = redis.NewScript(boostStartLua)
)

// boostFields is how many fields boost.lua returns per rule.
const boostFields = 15

// boostKey is a rule's boost State: one small hash under the store's hash
// tag, so that a batch of rules is one script in one Cluster slot.
func (s *Store) boostKey(rule string) string { return s.tag + ":boost:" + rule }

// RecordBoostCounts implements boost.Store: one script, one round trip, for
// the whole batch, each rule's State updated as boost.State.Record does.
// Every call carries a key of its own, so that a call go-redis sends again
// adds nothing twice. Each hash lives boost.StateTTL after its last write.
func (s *Store) RecordBoostCounts(ctx context.Context, now time.Time, o boost.Options, adds []boost.Add) ([]boost.State, error) {
	if s.closed.Load() {
		return nil, errClosed
	}
	if len(adds) == 0 {
		return nil, nil
	}
	o = o.WithDefaults()
	keys := make([]string, 0, len(adds)+1)
	args := make([]any, 0, 5+3*len(adds))
	args = append(args, o.Bucket(now), strconv.FormatFloat(o.Decay(), 'g', -1, 64), boost.StateTTL.Milliseconds(), now.UnixMilli(), callTTL.Milliseconds())
	for _, a := range adds {
		keys = append(keys, s.boostKey(a.Rule))
		c := a.Counts.Clean()
		args = append(args, formatCount(c.Total), formatCount(c.Anomalies), formatCount(c.Sampled))
	}
	keys = append(keys, s.callKey(""))
	res, err := boostRecordScript.Run(ctx, s.client, keys, args...).Slice()
	if err != nil {
		return nil, unavailable("record boost counts", err)
	}
	if len(res) != boostFields*len(adds) {
		return nil, fmt.Errorf("redis: record boost counts: %d values for %d rules", len(res), len(adds))
	}
	out := make([]boost.State, len(adds))
	for i := range adds {
		st, err := parseBoostState(res[i*boostFields : (i+1)*boostFields])
		if err != nil {
			return nil, fmt.Errorf("redis: record boost counts: rule %q: %w", adds[i].Rule, err)
		}
		out[i] = st
	}
	return out, nil
}

// StartBoost implements boost.Store: a compare-and-set on the start of the
// rule's last boost, to the millisecond.
func (s *Store) StartBoost(ctx context.Context, rule string, prev time.Time, b boost.Boost) (boost.Boost, bool, error) {
	if s.closed.Load() {
		return boost.Boost{}, false, errClosed
	}
	var from int64
	if !prev.IsZero() {
		from = prev.UnixMilli()
	}
	res, err := boostStartScript.Run(ctx, s.client, []string{s.boostKey(rule)},
		from, formatCount(b.Rate), b.Start.UnixMilli(), b.Expiry.UnixMilli(), boost.StateTTL.Milliseconds()).StringSlice()
	if err != nil {
		return boost.Boost{}, false, unavailable("start boost", err)
	}
	if len(res) != 4 {
		return boost.Boost{}, false, fmt.Errorf("redis: start boost: %d values", len(res))
	}
	var v [3]float64
	for i := range v {
		if v[i], err = strconv.ParseFloat(res[i], 64); err != nil {
			return boost.Boost{}, false, fmt.Errorf("redis: start boost: %w", err)
		}
	}
	return boostOf(v[0], v[1], v[2]), res[3] == "1", nil
}

// parseBoostState reads boost.lua's fields of one rule: b, since, the
// recent buckets' and the baseline's counts, the boost and its capture.
func parseBoostState(vals []any) (boost.State, error) {
	var v [boostFields]float64
	var seen bool
	for i, x := range vals {
		if x == nil {
			continue
		}
		str, ok := x.(string)
		if !ok {
			return boost.State{}, fmt.Errorf("field %d: %T", i, x)
		}
		f, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return boost.State{}, fmt.Errorf("field %d: %w", i, err)
		}
		v[i] = f
		if i == 0 {
			seen = true
		}
	}
	st := boost.State{
		Recent: [2]boost.Counts{
			{Total: v[2], Anomalies: v[3], Sampled: v[4]},
			{Total: v[5], Anomalies: v[6], Sampled: v[7]},
		},
		Baseline: boost.Counts{Total: v[8], Anomalies: v[9], Sampled: v[10]},
		Boost:    boostOf(v[11], v[12], v[13]),
		Captured: v[14],
	}
	if seen {
		st.Bucket, st.Since, st.Seen = int64(v[0]), int64(v[1]), true
	}
	return st, nil
}

// boostOf is the boost of a rate and unix-ms start and expiry; the zero
// Boost for none.
func boostOf(rate, start, expiry float64) boost.Boost {
	if !(rate > 0) {
		return boost.Boost{}
	}
	return boost.Boost{Rate: rate, Start: time.UnixMilli(int64(start)).UTC(), Expiry: time.UnixMilli(int64(expiry)).UTC()}
}

// formatCount writes a float so that Lua's tonumber reads it back exactly.
func formatCount(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

var _ boost.Store = (*Store)(nil)
