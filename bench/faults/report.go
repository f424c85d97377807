package faults

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// writeReport prints the results as Markdown: a summary table, then a table
// per fault with its rate per window.
func writeReport(w io.Writer, m Mode, results []Result) {
	fmt.Fprintf(w, "Fault suite, %s mode: %d SDK instances (%s req/s each, cycled), %d replicas, R = %d traces/s, fixed rate 0, report interval %v, windows of %v, on target within ±%.0f %% of R.\n\n",
		m.Name, m.Instances, joinRates(m.Rates), m.Replicas, m.Reservoir, m.Interval, m.Window, 100*m.Tolerance)
	if m.Race {
		fmt.Fprint(w, "The race detector is on (here and in the replicas): every call is many times slower.\n\n")
	}
	fmt.Fprintln(w, "| fault | decisions failed / over 1 ms (control) | Close() hung (goroutines left) | acked edits lost | spend: sampled counted → recorded | rate ×R before / during (max) / after | back on target |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- |")
	for _, r := range results {
		if r.NotRun != "" {
			fmt.Fprintf(w, "| %s | not run: %s | | | | | |\n", r.Fault, r.NotRun)
			continue
		}
		before, during, after, peak := r.phaseRates()
		fmt.Fprintf(w, "| %s | %d / %d (%d) | %d of %d (%d) | %d of %d | %d → %d (%s) | %.2f / %.2f (%.2f) / %.2f | %s |\n",
			r.Fault, r.Panics, r.Slow, r.ControlSlow, r.CloseHung, r.Instances, r.SDKGoroutinesLeft, r.EditsLost, r.EditsAcked,
			r.CountedSampled, r.RecordedSampled, signedPct(r.RecordedSampled, r.CountedSampled),
			before, during, peak, after, r.backText())
	}
	for _, r := range results {
		if r.NotRun != "" {
			continue
		}
		fmt.Fprintf(w, "\n#### %s\n\n", r.Fault)
		before, during, after, peak := r.phaseRates()
		fmt.Fprintln(w, "| figure | value | target |")
		fmt.Fprintln(w, "| --- | --- | --- |")
		fmt.Fprintf(w, "| SDK decisions | %d, %d panicked, %d over 1 ms (longest %v) | none failed or over 1 ms |\n", r.Decisions, r.Panics, r.Slow, r.MaxDecision.Round(time.Microsecond))
		fmt.Fprintf(w, "| the same calls to OpenTelemetry's TraceIDRatioBased, over 1 ms | %d (the machine's share) | |\n", r.ControlSlow)
		fmt.Fprintf(w, "| `Close()` returned within %v | %d of %d | all |\n", m.CloseWait, r.Instances-r.CloseHung, r.Instances)
		fmt.Fprintf(w, "| SDK goroutines left running after `Close()` | %d | 0 |\n", r.SDKGoroutinesLeft)
		fmt.Fprintf(w, "| acknowledged edits lost | %d of %d acknowledged (%d sent)%s | 0 |\n", r.EditsLost, r.EditsAcked, r.EditsSent, listed(r.LostEdits))
		fmt.Fprintf(w, "| sampled traces: counted by the SDKs → recorded in the budget | %d → %d (%s) | equal |\n", r.CountedSampled, r.RecordedSampled, signedPct(r.RecordedSampled, r.CountedSampled))
		fmt.Fprintf(w, "| requests: counted → recorded | %d → %d (%s) | equal |\n", r.CountedRequests, r.RecordedRequests, signedPct(r.RecordedRequests, r.CountedRequests))
		fmt.Fprintf(w, "| usage entries the replicas counted as dropped (`%s`) | %.0f | 0 |\n", droppedMetric, r.UsageDropped)
		fmt.Fprintf(w, "| sampled traces the replicas cut from reports (`%s`) | %.0f | 0 |\n", clampedMetric, r.Clamped)
		fmt.Fprintf(w, "| fleet's sampled rate ×R: before / during (highest window) / after | %.2f / %.2f (%.2f) / %.2f | 1 |\n", before, during, peak, after)
		fmt.Fprintf(w, "| first window off target | %s | none |\n", r.offText())
		fmt.Fprintf(w, "| back on target for good | %s | at once |\n", r.backText())
		fmt.Fprintf(w, "| replicas' log lines at WARN or above | %d | a few |\n", r.Warnings)
		for _, n := range r.Notes {
			fmt.Fprintf(w, "| note | %s | |\n", n)
		}
		fmt.Fprintf(w, "\nRate per %v window, ×R (the fault in brackets): %s\n", r.Window, r.series())
	}
}

func joinRates(rates []float64) string {
	s := make([]string, len(rates))
	for i, r := range rates {
		s[i] = fmt.Sprint(r)
	}
	return strings.Join(s, ", ")
}

// phaseRates returns the mean rate before, during and after the fault, and
// the highest window from the fault's start on.
func (r *Result) phaseRates() (before, during, after, peak float64) {
	mean := func(from, to int) float64 {
		to = min(to, len(r.Rates))
		if to <= from {
			return 0
		}
		s := 0.0
		for _, v := range r.Rates[from:to] {
			s += v
		}
		return s / float64(to-from)
	}
	for _, v := range r.Rates[min(r.FaultFrom, len(r.Rates)):] {
		peak = max(peak, v)
	}
	return mean(r.Baseline, r.FaultFrom), mean(r.FaultFrom, r.FaultTo), mean(r.FaultTo, len(r.Rates)), peak
}

func (r *Result) offText() string {
	if r.Off < 0 {
		return "none"
	}
	return fmt.Sprintf("%v after the fault began", time.Duration(r.Off-r.FaultFrom)*r.Window)
}

// backText says when the rate came back on target for good, counted from
// the fault's end, or from its start if it came back before the end.
func (r *Result) backText() string {
	switch {
	case r.Back < 0:
		return fmt.Sprintf("not within %v", time.Duration(len(r.Rates)-r.FaultTo)*r.Window)
	case r.Off < 0:
		return "never left"
	case r.Back == r.FaultFrom:
		return "never left for two windows in a row"
	}
	d := time.Duration(r.Back-r.FaultTo) * r.Window
	if d < 0 {
		return fmt.Sprintf("%v after it began, before it ended", time.Duration(r.Back-r.FaultFrom)*r.Window)
	}
	return fmt.Sprintf("%v after it ended", d)
}

func (r *Result) series() string {
	var b strings.Builder
	for i := r.Baseline; i < len(r.Rates); i++ {
		if i == r.FaultFrom {
			b.WriteString("[ ")
		}
		fmt.Fprintf(&b, "%.2f ", r.Rates[i])
		if i == r.FaultTo-1 {
			b.WriteString("] ")
		}
	}
	return strings.TrimSpace(b.String())
}

// signedPct is got against want as a signed difference and percentage.
func signedPct(got, want int64) string {
	if want == 0 {
		return fmt.Sprintf("%+d", got-want)
	}
	return fmt.Sprintf("%+d, %+.3f %%", got-want, 100*float64(got-want)/float64(want))
}

func listed(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return ": " + strings.Join(s, ", ")
}
