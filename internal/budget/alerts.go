package budget

import (
	"math"
	"strconv"
	"time"
)

// DueAlerts returns every alert of b that is due at now given the controller's
// decision d, in this order: each spend threshold reached, each forecast
// threshold that the unenforced month-end forecast exceeds, enforcement
// started (the fixed-rate factor is below 1), exhausted.
//
// It returns what holds now, not what changed since prev: the caller fires
// each alert and the store drops repeats by Alert.DedupKey, so an alert whose
// delivery failed is simply due again at the next step. For the same reason
// prev, the decision of the step before, is not needed today: no alert is
// due only on a transition. It is part of the signature so that one can be
// added without changing the controller.
//
// Thresholds are shares of the budget's money: a spend threshold t is
// reached when Cost(Spent) >= t × MonthlyAmount. Without a free allowance
// that is Spent >= t × CapTraces; with one, "50 % spent" means half of the
// money, which is what the message says. A forecast threshold compares the
// forecast at factors 1 (d.ForecastUnenforced), so that it warns whether or
// not enforcement then keeps the month under the cap; a single threshold 0
// turns forecast alerts off.
//
// Alert.Spent and Alert.Cap are money; Alert.Forecast is the money of the
// forecast the alert is about: at factors 1 for forecast alerts, at the
// factors in force for the others.
func DueAlerts(b *Budget, d Decision, prev Decision, now time.Time) []Alert {
	_ = prev // see the doc comment
	if b == nil {
		return nil
	}
	nb := b.Normalize()
	amount := nb.MonthlyAmount()
	spent := finite(nb.Cost(d.Spent))
	forecast := finite(nb.Cost(d.Forecast))
	unenforced := finite(nb.Cost(d.ForecastUnenforced))
	money := func(x float64) string { return FormatMoney(x, nb.Currency) }
	monthStart := MonthStart(now)
	var out []Alert
	add := func(kind AlertKind, threshold, forecast float64, msg string) {
		out = append(out, Alert{
			Budget:     nb.Name,
			Kind:       kind,
			Threshold:  threshold,
			Time:       now,
			MonthStart: monthStart,
			Spent:      spent,
			Forecast:   forecast,
			Cap:        amount,
			Currency:   nb.Currency,
			Message:    "budget " + nb.Name + ": " + msg,
		})
	}
	// Messages are concatenated rather than formatted: the simulation calls
	// this every virtual minute of a month.
	for _, t := range nb.SpendThresholds {
		if t > 0 && spent >= t*amount {
			add(AlertSpend, t, forecast, percent(t)+" of "+money(amount)+" spent ("+money(spent)+"), forecast "+
				money(forecast)+" at month end")
		}
	}
	if !(len(nb.ForecastThresholds) == 1 && nb.ForecastThresholds[0] == 0) {
		for _, t := range nb.ForecastThresholds {
			if t > 0 && unenforced > t*amount {
				msg := "forecast " + money(unenforced) + " at month end at the rules' own rates, over " +
					percent(t) + " of " + money(amount) + " (" + money(spent) + " spent so far)"
				if nb.Mode == Enforce {
					msg += "; enforcing, forecast " + money(forecast)
				}
				add(AlertForecast, t, unenforced, msg)
			}
		}
	}
	if nb.Mode == Enforce && d.FixedRateFactor < 1 {
		msg := "enforcing " + money(amount) + ": fixed rates in scope scaled to " + percent(d.FixedRateFactor)
		if d.ReservoirFactor < 1 {
			msg += ", reservoirs to " + percent(d.ReservoirFactor)
		}
		msg += "; forecast " + money(forecast) + " at month end (" + money(unenforced) + " unenforced), " +
			money(spent) + " spent"
		add(AlertEnforcementStarted, 0, forecast, msg)
	}
	if d.Exhausted {
		msg := money(amount) + " exhausted (" + money(spent) + " spent); sampling in scope stopped"
		if nb.FloorPerSecond > 0 {
			msg += " except the floor of " + strconv.FormatFloat(nb.FloorPerSecond, 'g', 6, 64) + " traces/s"
		}
		add(AlertExhausted, 1, forecast, msg)
	}
	return out
}

// finite maps NaN and infinities to a printable number.
func finite(x float64) float64 {
	switch {
	case math.IsNaN(x):
		return 0
	case math.IsInf(x, 1):
		return math.MaxFloat64
	case math.IsInf(x, -1):
		return -math.MaxFloat64
	}
	return x
}

// percent formats a share as a percentage for people, to three significant
// digits: 0.8 → "80%", 0.125 → "12.5%", 0.20492 → "20.5%", 2.5 → "250%".
func percent(share float64) string {
	v := share * 100
	if v > 0 && v < 0.01 {
		return "<0.01%"
	}
	if math.Abs(v) >= 100 {
		return strconv.FormatFloat(math.Round(v), 'f', -1, 64) + "%"
	}
	return strconv.FormatFloat(v, 'g', 3, 64) + "%"
}

// currencySymbol is how a currency is written before an amount: a symbol
// for the few that have a well-known one, else the code ("CHF 500.00").
func currencySymbol(code string) string {
	switch code {
	case "USD":
		return "$"
	case "EUR":
		return "€"
	case "GBP":
		return "£"
	case "":
		return ""
	}
	return code + " "
}

// FormatMoney formats an amount for people: "$1,890.00", "CHF 12.50".
func FormatMoney(amount float64, currency string) string {
	cents := math.Round(math.Abs(amount) * 100)
	var digits string
	var c int64
	if cents < 1<<53 { // exact in an int64
		n := int64(cents)
		digits, c = strconv.FormatInt(n/100, 10), n%100
	} else {
		digits = strconv.FormatFloat(math.Floor(cents/100), 'f', 0, 64)
	}
	buf := make([]byte, 0, len(digits)*4/3+16)
	if amount < 0 && cents > 0 {
		buf = append(buf, '-')
	}
	buf = append(buf, currencySymbol(currency)...)
	for i := range len(digits) {
		if i > 0 && (len(digits)-i)%3 == 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, digits[i])
	}
	return string(append(buf, '.', byte('0'+c/10), byte('0'+c%10)))
}
