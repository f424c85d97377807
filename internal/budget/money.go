package budget

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// Money is kept as an integer number of micros, millionths of a unit of the
// budget's currency (1 USD = 1,000,000 micros, and so is 1 JPY), so that an
// amount a client sets comes back exactly as it was set. Six decimal places
// hold the minor unit of every ISO 4217 currency (at most four). Amounts the
// control plane computes from trace counts (spend, forecasts, costs) are
// computed in float64 and rounded to the nearest micro by Micros.
const MicrosPerUnit = 1_000_000

// Limits and defaults of a budget's amounts, in micros.
const (
	// MaxMonthlyAmountMicros is 1e12 units: room for any month of tracing in
	// any currency, and far from the int64 limit of about 9.2e12 units.
	MaxMonthlyAmountMicros = 1_000_000_000_000 * MicrosPerUnit
	// MaxPricePerMillionMicros is 1e6 units per million traces.
	MaxPricePerMillionMicros = 1_000_000 * MicrosPerUnit
	// DefaultPricePerMillionMicros is 5.00 per million traces.
	DefaultPricePerMillionMicros = 5 * MicrosPerUnit
)

// Units returns micros as a number of currency units, for the maths.
func Units(micros int64) float64 { return float64(micros) / MicrosPerUnit }

// Micros returns a computed amount of units in micros: rounded to the
// nearest micro, halves away from zero; NaN is 0, and amounts beyond the
// int64 range are its ends.
func Micros(units float64) int64 {
	x := math.Round(units * MicrosPerUnit)
	switch {
	case math.IsNaN(x):
		return 0
	case x >= math.MaxInt64: // float64(MaxInt64) is 2^63, already out of range
		return math.MaxInt64
	case x <= math.MinInt64:
		return math.MinInt64
	}
	return int64(x)
}

// ParseMicros reads a decimal amount of units, such as "500", "12.25",
// "0.000001" or "1e3", exactly. More than six decimal places, or an amount
// beyond the int64 range of micros, is an error: nothing is rounded.
func ParseMicros(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.Trim(s, "0123456789.eE+-") != "" {
		return 0, fmt.Errorf("want a decimal amount such as 12.50, got %q", s)
	}
	if _, err := strconv.ParseFloat(s, 64); err != nil {
		return 0, fmt.Errorf("want a decimal amount such as 12.50, got %q", s)
	}
	// big.Rat reads the decimal exactly; ParseFloat above has checked it is
	// one number, in the syntax Go and YAML share.
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return 0, fmt.Errorf("want a decimal amount such as 12.50, got %q", s)
	}
	r.Mul(r, big.NewRat(MicrosPerUnit, 1))
	if !r.IsInt() {
		return 0, errors.New("at most 6 decimal places (micros), got " + s)
	}
	if !r.Num().IsInt64() {
		return 0, fmt.Errorf("%s is too large", s)
	}
	return r.Num().Int64(), nil
}

// FormatMicros writes micros as the shortest exact decimal of units:
// "500", "12.25", "0.000001", "-3.5".
func FormatMicros(m int64) string {
	sign := ""
	u := uint64(m)
	if m < 0 {
		sign, u = "-", -u
	}
	whole, frac := u/MicrosPerUnit, u%MicrosPerUnit
	if frac == 0 {
		return sign + strconv.FormatUint(whole, 10)
	}
	f := strings.TrimRight(fmt.Sprintf("%06d", frac), "0")
	return sign + strconv.FormatUint(whole, 10) + "." + f
}
