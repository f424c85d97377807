package budget

import (
	"cmp"
	"math"
	"strconv"
	"strings"
	"time"
)

// DueAlerts returns every alert of b that is due at now given the controller's
// decision d, in this order: each spend threshold reached, each forecast
// threshold that the unenforced month-end forecast exceeds, each burn-rate
// threshold the last hour ran at, enforcement started (an episode is open:
// some rate is lowered), enforcement ended (the last episode closed),
// exhausted.
//
// It returns what holds now, not what changed since the previous step: the
// caller fires each alert and the store drops repeats by Alert.DedupKey, so
// an alert whose delivery failed is simply due again at the next step.
// Alerts that may fire more than once a month carry an episode in their
// key: enforcement started and ended that of the episode (d.Memory.Episode,
// which a new episode moves on only after the last ended, EpisodeGap
// without enforcement), burn-rate alerts the day of the month. Every key
// holds the budget's incarnation (UID) and money generation: a budget
// created again under the same name, or whose amount or prices changed,
// alerts afresh.
//
// Thresholds are shares of the budget's money: a spend threshold t is
// reached when Cost(Spent) >= t × MonthlyAmount. Without a free allowance
// that is Spent >= t × CapTraces; with one, "50 % spent" means half of the
// money, which is what the message says. A forecast threshold compares the
// forecast at factors 1 (d.ForecastUnenforced), so that it warns whether or
// not enforcement then keeps the month under the cap; a single threshold 0
// turns forecast alerts off. A burn-rate threshold n is reached when the
// last 60 minutes cost n times the even rate, the amount spread over the
// hours of the month.
//
// Alert.Spent and Alert.Cap are money; Alert.Forecast is the money of the
// forecast the alert is about: at factors 1 for forecast alerts, at the
// factors in force for the others.
func DueAlerts(b *Budget, d Decision, now time.Time) []Alert {
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
	add := func(kind AlertKind, threshold, forecast float64, episode, msg string) {
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
			BudgetUID:  nb.UID,
			Generation: nb.Generation,
			Episode:    episode,
		})
	}
	// Messages are concatenated rather than formatted: the simulation calls
	// this every virtual minute of a month.
	for _, t := range nb.SpendThresholds {
		if t > 0 && spent >= t*amount {
			add(AlertSpend, t, forecast, "", percent(t)+" of "+money(amount)+" spent ("+money(spent)+"), forecast "+
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
				add(AlertForecast, t, unenforced, "", msg)
			}
		}
	}
	if len(nb.BurnRateThresholds) > 0 {
		even := amount / float64(HoursIn(monthStart)) // money an hour
		hour := finite(d.LastHour * nb.PricePerTrace())
		day := "d" + strconv.Itoa(now.UTC().Day())
		for _, t := range nb.BurnRateThresholds {
			if t > 0 && even > 0 && hour >= t*even {
				add(AlertBurnRate, t, forecast, day, "spent "+money(hour)+" in the last hour, "+
					strconv.FormatFloat(math.Round(hour/even*10)/10, 'f', -1, 64)+"× the even rate of "+money(even)+
					" an hour (alerting at "+strconv.FormatFloat(t, 'g', 6, 64)+"×); forecast "+money(forecast)+" at month end, "+
					money(spent)+" spent")
			}
		}
	}
	m := d.Memory
	ep := "e" + strconv.Itoa(m.Episode)
	if nb.Mode == Enforce && m.EpisodeOpen && m.Episode > 0 {
		msg := "enforcing " + money(amount) + ": " + cutSummary(&d) + "; forecast " + money(forecast) +
			" at month end (" + money(unenforced) + " unenforced), " + money(spent) + " spent"
		add(AlertEnforcementStarted, 0, forecast, ep, msg)
	}
	if nb.Mode == Enforce && !m.EpisodeOpen && m.Episode > 0 {
		add(AlertEnforcementEnded, 0, forecast, ep, "enforcement ended: every rule in scope has sampled at its own rates for "+
			EpisodeGap.String()+"; forecast "+money(forecast)+" at month end, "+money(spent)+" spent")
	}
	if d.Exhausted {
		msg := money(amount) + " exhausted (" + money(spent) + " spent); sampling in scope stopped"
		if nb.FloorPerSecond > 0 {
			msg += " except the floor of " + strconv.FormatFloat(nb.FloorPerSecond, 'g', 6, 64) + " traces/s"
		}
		add(AlertExhausted, 1, forecast, "", msg)
	}
	return out
}

// maxCutListed is how many rules an enforcement message names.
const maxCutListed = 5

// cutSummary says which rules a decision cuts, lowest priority first:
// "rules cut: health fixed rate 0%, reservoir 10%; search fixed rate 40%".
func cutSummary(d *Decision) string {
	type cutRule struct {
		name string
		p    RulePlan
	}
	var cuts []cutRule
	for _, p := range d.Rules {
		if p.FixedRateFactor < 1 || p.ReservoirFactor < 1 {
			cuts = append(cuts, cutRule{p.Name, p})
		}
	}
	if len(cuts) == 0 {
		if d.Exhausted {
			return "every rate in scope stopped"
		}
		return "fixed rates in scope scaled to " + percent(d.FixedRateFactor) + ", reservoirs to " + percent(d.ReservoirFactor)
	}
	less := func(a, b cutRule) int {
		if c := cmp.Compare(a.p.Priority, b.p.Priority); c != 0 {
			return c
		}
		return cmp.Compare(a.name, b.name)
	}
	// The first maxCutListed in order, without sorting them all: the
	// simulation asks for this every virtual minute.
	for i := 0; i < len(cuts) && i < maxCutListed; i++ {
		m := i
		for j := i + 1; j < len(cuts); j++ {
			if less(cuts[j], cuts[m]) < 0 {
				m = j
			}
		}
		cuts[i], cuts[m] = cuts[m], cuts[i]
	}
	var sb strings.Builder
	sb.WriteString("rules cut (lowest priority first): ")
	for i, c := range cuts {
		if i == maxCutListed {
			sb.WriteString("; and " + strconv.Itoa(len(cuts)-i) + " more")
			break
		}
		if i > 0 {
			sb.WriteString("; ")
		}
		sb.WriteString(c.name + " fixed rate " + percent(c.p.FixedRateFactor))
		if c.p.ReservoirFactor < 1 {
			sb.WriteString(", reservoir " + percent(c.p.ReservoirFactor))
		}
	}
	if kept := len(d.Rules) - len(cuts); kept > 0 {
		sb.WriteString("; " + strconv.Itoa(kept) + " rule")
		if kept > 1 {
			sb.WriteString("s")
		}
		sb.WriteString(" at their own rates")
	}
	return sb.String()
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
	if v >= 99.95 && v < 100 {
		return "99.9%" // not "100%": something was cut
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
