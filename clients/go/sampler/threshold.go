package sampler

// OpenTelemetry's consistent probability sampling: the rejection threshold T
// and randomness value R of the OpenTelemetry specification
// (trace/tracestate-probability-sampling.md), as they travel in the `ot`
// entry of the W3C tracestate (trace/tracestate-handling.md: `th` and `rv`).
// A span is kept when R >= T; R is the trace ID's last 56 bits unless the
// tracestate carries an explicit `rv`. Writing `th` on a probability decision
// lets the Collector (span metrics, the probabilistic and tail samplers)
// count each span as 1/probability spans.
//
// Everything here is pure and, but for Threshold.TValue, does not allocate:
// parsing works on the string it is given and encoding appends to a buffer
// the caller owns.

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

const (
	// MaxAdjustedCount is 2^56, the number of distinct 56-bit randomness
	// values, and one more than the largest threshold.
	MaxAdjustedCount = 1 << 56
	// MinProbability is the smallest probability a threshold expresses,
	// 2^-56; zero ("never") is not a probability.
	MinProbability = 1.0 / MaxAdjustedCount
	// DefaultThresholdPrecision is the number of significant hex digits
	// the specification recommends SDKs write.
	DefaultThresholdPrecision = 4
	// maxOTelLen bounds the `ot` entry's value (the specification's 256
	// characters).
	maxOTelLen    = 256
	thresholdHex  = 14 // hex digits of a 56-bit value
	randomnessMax = MaxAdjustedCount - 1
)

// Errors of this file; each is wrapped by nothing, so compare with errors.Is.
var (
	ErrProbabilityRange = errors.New("sampler: probability must be between 2^-56 and 1")
	ErrThresholdSyntax  = errors.New("sampler: th must be 1 to 14 lowercase hex digits")
	ErrRandomnessSyntax = errors.New("sampler: rv must be 14 lowercase hex digits")
	ErrOTelSyntax       = errors.New("sampler: malformed ot tracestate value")
	ErrOTelTooLong      = errors.New("sampler: ot tracestate value over 256 characters")
)

// Threshold is a rejection threshold T, below MaxAdjustedCount: a span is
// kept when its randomness R >= T. Zero keeps every span.
type Threshold uint64

// Randomness is a trace's 56-bit randomness value R.
type Randomness uint64

// ProbabilityToThreshold returns the threshold of probability p, rounded
// (half up) to precision significant hex digits (1 to 14, clamped), as the
// specification's reference algorithm does: the precision grows by one digit
// for every leading 'f' that a small probability has, so 0.001 at precision 4
// is ffbe77, not ffbe.
func ProbabilityToThreshold(p float64, precision int) (Threshold, error) {
	if !(p >= MinProbability && p <= 1) {
		return 0, ErrProbabilityRange
	}
	if p == 1 {
		return 0, nil
	}
	_, exp := math.Frexp(p) // p = f × 2^exp, f in [0.5, 1), so exp <= 0 here
	precision = min(thresholdHex, max(1, min(precision, thresholdHex)+exp/-4))
	t := uint64(MaxAdjustedCount) - uint64(math.Round(p*MaxAdjustedCount))
	if shift := 4 * (thresholdHex - precision); shift > 0 {
		t = (t + 1<<(shift-1)) >> shift << shift
		if t >= MaxAdjustedCount { // rounded up to "never": keep the largest
			t = MaxAdjustedCount - 1<<shift
		}
	}
	return Threshold(t), nil
}

// Probability returns the probability a span is kept at t.
func (t Threshold) Probability() float64 {
	return float64(MaxAdjustedCount-uint64(t)) / MaxAdjustedCount
}

// AdjustedCount returns how many spans a span kept at t stands for,
// 1 / Probability.
func (t Threshold) AdjustedCount() float64 {
	return MaxAdjustedCount / float64(MaxAdjustedCount-uint64(t))
}

// ShouldSample reports whether a trace of randomness r is kept at t.
func (t Threshold) ShouldSample(r Randomness) bool { return uint64(r) >= uint64(t) }

// AppendTValue appends t's `th` value to dst: 14 hex digits without their
// trailing zeros, or "0".
func (t Threshold) AppendTValue(dst []byte) []byte {
	if t == 0 {
		return append(dst, '0')
	}
	var digits [thresholdHex]byte
	n := 0
	for i := range digits {
		digits[i] = hexDigits[uint64(t)>>(4*(thresholdHex-1-i))&0xf]
		if digits[i] != '0' {
			n = i + 1
		}
	}
	return append(dst, digits[:n]...)
}

// TValue returns t's `th` value.
func (t Threshold) TValue() string { return string(t.AppendTValue(make([]byte, 0, thresholdHex))) }

// Scale returns the threshold of keeping, with probability p, what t kept:
// ProbabilityToThreshold(p × t.Probability()), the specification's
// proportional composition. It fails when the product is below
// MinProbability, where the span is not kept.
func (t Threshold) Scale(p float64, precision int) (Threshold, error) {
	if !(p >= 0 && p <= 1) {
		return 0, ErrProbabilityRange
	}
	return ProbabilityToThreshold(p*t.Probability(), precision)
}

// RateThreshold returns the threshold this package decides a fixed rate
// by: ProbabilityToThreshold at DefaultThresholdPrecision, and 0 for rates
// of 1 and above. ok is false for a rate that keeps nothing (zero, below
// MinProbability, negative or NaN): "never" is not a probability and has
// no threshold.
func RateThreshold(rate float64) (t Threshold, ok bool) {
	if rate >= 1 {
		return 0, true
	}
	t, err := ProbabilityToThreshold(rate, DefaultThresholdPrecision)
	return t, err == nil
}

// ParseThreshold parses a `th` value: 1 to 14 lowercase hex digits, extended
// with trailing zeros to 14.
func ParseThreshold(s string) (Threshold, error) {
	v, ok := parseHex(s)
	if !ok || len(s) == 0 || len(s) > thresholdHex {
		return 0, ErrThresholdSyntax
	}
	return Threshold(v << (4 * (thresholdHex - len(s)))), nil
}

// ParseRandomness parses an `rv` value: exactly 14 lowercase hex digits.
func ParseRandomness(s string) (Randomness, error) {
	v, ok := parseHex(s)
	if !ok || len(s) != thresholdHex {
		return 0, ErrRandomnessSyntax
	}
	return Randomness(v), nil
}

// RandomnessFromTraceID returns the randomness a trace ID carries: its last
// 7 bytes, as W3C Trace Context Level 2 defines them.
func RandomnessFromTraceID(id trace.TraceID) Randomness {
	return Randomness(binary.BigEndian.Uint64(id[8:]) & randomnessMax)
}

// OTelTraceState holds what this package reads from the `ot` tracestate
// entry: the threshold and the explicit randomness, when present.
type OTelTraceState struct {
	Threshold     Threshold
	HasThreshold  bool
	Randomness    Randomness
	HasRandomness bool
}

// ParseOTelTraceState parses the value of the `ot` tracestate entry
// ("th:c;rv:6e6d1a75832a2f;k1:v"): members key:value separated by ';', keys
// of lowercase letters and digits starting with a letter, unique, values of
// letters, digits, '.', '_' and '-', at most 256 characters in all. Members
// other than th and rv are checked and skipped. An empty value is valid.
func ParseOTelTraceState(ot string) (OTelTraceState, error) {
	var st OTelTraceState
	if len(ot) > maxOTelLen {
		return st, ErrOTelTooLong
	}
	for pos := 0; pos >= 0 && ot != ""; {
		start := pos
		key, value, next, ok := nextMember(ot, pos)
		if !ok {
			return OTelTraceState{}, ErrOTelSyntax
		}
		pos = next
		switch key {
		case "th":
			if st.HasThreshold {
				return OTelTraceState{}, ErrOTelSyntax
			}
			t, err := ParseThreshold(value)
			if err != nil {
				return OTelTraceState{}, err
			}
			st.Threshold, st.HasThreshold = t, true
		case "rv":
			if st.HasRandomness {
				return OTelTraceState{}, ErrOTelSyntax
			}
			r, err := ParseRandomness(value)
			if err != nil {
				return OTelTraceState{}, err
			}
			st.Randomness, st.HasRandomness = r, true
		default:
			if !validValue(value) || hasKey(ot[:start], key) {
				return OTelTraceState{}, ErrOTelSyntax
			}
		}
	}
	return st, nil
}

// AppendOTelTraceState appends to dst the `ot` value ot with its threshold
// replaced by t (removed when set is false): the other members keep their
// order, and th comes last, as the specification's examples set a value. It
// fails, appending nothing, if ot is malformed or the result would exceed
// 256 characters.
func AppendOTelTraceState(dst []byte, ot string, t Threshold, set bool) ([]byte, error) {
	if len(ot) > maxOTelLen {
		return dst, ErrOTelTooLong
	}
	start := len(dst)
	for pos := 0; pos >= 0 && ot != ""; {
		begin := pos
		key, value, next, ok := nextMember(ot, pos)
		if !ok || !validValue(value) || hasKey(ot[:begin], key) {
			return dst[:start], ErrOTelSyntax
		}
		pos = next
		if key == "th" {
			continue
		}
		if len(dst) > start {
			dst = append(dst, ';')
		}
		dst = append(dst, key...)
		dst = append(dst, ':')
		dst = append(dst, value...)
	}
	if set {
		if len(dst) > start {
			dst = append(dst, ';')
		}
		dst = append(dst, "th:"...)
		dst = t.AppendTValue(dst)
	}
	if len(dst)-start > maxOTelLen {
		return dst[:start], ErrOTelTooLong
	}
	return dst, nil
}

// WithThreshold returns ts with its `ot` entry's threshold set to t, or
// removed when set is false (and the entry with it if nothing else is
// left), as AppendOTelTraceState rewrites it; other vendors' entries are
// kept, and the ot entry moves to the front, as W3C Trace Context has a
// modified entry do. It returns ts unchanged, with the error, if ts's ot
// value is malformed or the new one would exceed 256 characters. It
// allocates, but for an unchanged ts.
func WithThreshold(ts trace.TraceState, t Threshold, set bool) (trace.TraceState, error) {
	ot := ts.Get("ot")
	if ot == "" && !set {
		return ts, nil
	}
	var buf [maxOTelLen + len(";th:") + thresholdHex]byte
	v, err := AppendOTelTraceState(buf[:0], ot, t, set)
	if err != nil {
		return ts, err
	}
	if len(v) == 0 {
		return ts.Delete("ot"), nil
	}
	return ts.Insert("ot", string(v))
}

// ParentThreshold returns the threshold a span that follows its parent's
// decision carries on: the parent's, if the parent was sampled, had one, and
// it is consistent with the parent's decision (r >= threshold); otherwise
// none, since the span's probability is then unknown. st is the parent's
// `ot` state and r the trace's randomness (st's rv if it has one).
func ParentThreshold(st OTelTraceState, sampled bool, r Randomness) (Threshold, bool) {
	if !sampled || !st.HasThreshold || !st.Threshold.ShouldSample(r) {
		return 0, false
	}
	return st.Threshold, true
}

// nextMember reads the key:value member of an `ot` value that starts at
// pos, checking its key: lowercase letters and digits, starting with a
// letter. next is where the member after it starts, or -1 if it is the
// last. The value is the caller's to check (validValue), as th and rv
// values are checked by their parsers: a sampled parent's tracestate is
// read on every child span.
func nextMember(ot string, pos int) (key, value string, next int, ok bool) {
	i := pos
	if i >= len(ot) || ot[i]-'a' >= 26 {
		return "", "", 0, false
	}
	for i++; i < len(ot) && ot[i] != ':'; i++ {
		if c := ot[i]; c-'a' >= 26 && c-'0' >= 10 {
			return "", "", 0, false
		}
	}
	if i == len(ot) {
		return "", "", 0, false
	}
	key, value = ot[pos:i], ot[i+1:]
	next = -1
	if j := strings.IndexByte(value, ';'); j >= 0 {
		value, next = value[:j], i+1+j+1
	}
	return key, value, next, true
}

// validValue reports whether v is a valid `ot` member value: letters,
// digits, '.', '_' and '-'. th and rv values need no such check: their
// parsers accept only hex digits.
func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c-'a' >= 26 && c-'A' >= 26 && c-'0' >= 10 && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// memberValue returns the value of the first member of an `ot` value with
// a two-letter key (th, rv), checking nothing else. Byte by byte: the
// entry is short, and library calls cost more than they save here.
func memberValue(ot string, key [2]byte) (string, bool) {
	for start := 0; start+2 < len(ot); {
		end := start
		for end < len(ot) && ot[end] != ';' {
			end++
		}
		if ot[start] == key[0] && ot[start+1] == key[1] && ot[start+2] == ':' {
			return ot[start+3 : end], true
		}
		start = end + 1
	}
	return "", false
}

// hasKey reports whether members, checked members each ended by ';', has
// one of this key. 256 characters hold few members, so a scan is cheap.
func hasKey(members, key string) bool {
	for members != "" {
		end := strings.IndexByte(members, ';')
		if m := members[:end]; len(m) > len(key) && m[len(key)] == ':' && m[:len(key)] == key {
			return true
		}
		members = members[end+1:]
	}
	return false
}

// parseHex parses up to 16 lowercase hex digits.
func parseHex(s string) (uint64, bool) {
	if len(s) > 16 {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		d := s[i] - '0'
		if d >= 10 {
			if d = s[i] - 'a'; d >= 6 {
				return 0, false
			}
			d += 10
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}

const hexDigits = "0123456789abcdef"
