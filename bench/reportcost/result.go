package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Result is the JSON line the run ends with.
type Result struct {
	Streams    int     `json:"streams"`
	Conns      int     `json:"conns"`
	Rules      int     `json:"rules_per_report"`
	MeasureSec float64 `json:"measure_sec"`
	Rounds     int     `json:"rounds"`
	// Bracket: each ratio is over the echo windows beside the server's
	// (-bracket), not over the round's one.
	Bracket      bool          `json:"bracket,omitempty"`
	Measurements []Measurement `json:"measurements"`
	Summary      []Summary     `json:"summary"`
}

// Measurement is one server's figures in one round.
type Measurement struct {
	Round         int     `json:"round"`
	Server        string  `json:"server"`
	Reports       int64   `json:"reports"`
	ReportsPerSec float64 `json:"reports_per_sec"`
	// ServerCores is the server's CPU time over the wall-clock time.
	ServerCores float64 `json:"server_cores"`
	// ServerCPUus is the server's CPU time per report, in microseconds:
	// CPU-seconds per 1,000 reports, times 1,000.
	ServerCPUus float64 `json:"server_cpu_us_per_report"`
	DriverCPUus float64 `json:"driver_cpu_us_per_report"`
	// RedisCPUus is Redis's, for the server on Redis.
	RedisCPUus *float64 `json:"redis_cpu_us_per_report,omitempty"`
	// RatioToEcho is ServerCPUus over the echo's in the same round.
	RatioToEcho   *float64 `json:"ratio_to_echo,omitempty"`
	ResponseBytes float64  `json:"response_bytes"` // mean size of a targets message
}

// Summary is one server's medians over the rounds.
type Summary struct {
	Server        string   `json:"server"`
	ServerCPUus   float64  `json:"server_cpu_us_per_report"`
	RatioToEcho   *float64 `json:"ratio_to_echo,omitempty"`
	ReportsPerSec float64  `json:"reports_per_sec"`
	RedisCPUus    *float64 `json:"redis_cpu_us_per_report,omitempty"`
}

func measurement(round int, server string, w window) Measurement {
	n := float64(max(w.reports, 1))
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / n }
	m := Measurement{
		Round: round, Server: server, Reports: w.reports,
		ReportsPerSec: float64(w.reports) / w.wall.Seconds(),
		ServerCores:   w.server.Seconds() / w.wall.Seconds(),
		ServerCPUus:   us(w.server), DriverCPUus: us(w.driver),
		ResponseBytes: float64(w.respBytes) / n,
	}
	if strings.HasPrefix(server, "redis") {
		r := us(w.redis)
		m.RedisCPUus = &r
	}
	return m
}

func (r *Result) summarize(targets []target) {
	r.Summary = nil
	for _, t := range targets {
		var cpu, rate, ratio, redis []float64
		for _, m := range r.Measurements {
			if m.Server != t.name {
				continue
			}
			cpu, rate = append(cpu, m.ServerCPUus), append(rate, m.ReportsPerSec)
			if m.RatioToEcho != nil {
				ratio = append(ratio, *m.RatioToEcho)
			}
			if m.RedisCPUus != nil {
				redis = append(redis, *m.RedisCPUus)
			}
		}
		s := Summary{Server: t.name, ServerCPUus: median(cpu), ReportsPerSec: median(rate)}
		if len(ratio) > 0 {
			x := median(ratio)
			s.RatioToEcho = &x
		}
		if len(redis) > 0 {
			x := median(redis)
			s.RedisCPUus = &x
		}
		r.Summary = append(r.Summary, s)
	}
}

func (r *Result) print(w io.Writer) {
	fmt.Fprintf(w, "%d streams on %d connections, %d rule(s) per report, %d round(s) of %.0f s windows\n\n",
		r.Streams, r.Conns, r.Rules, r.Rounds, r.MeasureSec)
	fmt.Fprintln(w, "| round | server | reports/s | server cores | server µs CPU/report | ÷ echo | Redis µs CPU/report | driver µs CPU/report | response bytes |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, m := range r.Measurements {
		fmt.Fprintf(w, "| %d | %s | %.0f | %.2f | %.2f | %s | %s | %.2f | %.0f |\n",
			m.Round, m.Server, m.ReportsPerSec, m.ServerCores, m.ServerCPUus, ratioText(m.RatioToEcho), optText(m.RedisCPUus), m.DriverCPUus, m.ResponseBytes)
	}
	fmt.Fprintln(w)
	if r.Bracket {
		fmt.Fprintln(w, "Medians over the rounds (each ratio over the mean of the echo windows before and after the server's):")
	} else {
		fmt.Fprintln(w, "Medians over the rounds (the ratio is taken within each round):")
	}
	for _, s := range r.Summary {
		fmt.Fprintf(w, "  %-20s %7.2f µs CPU/report  %s  %8.0f reports/s", s.Server, s.ServerCPUus, ratioText(s.RatioToEcho), s.ReportsPerSec)
		if s.RedisCPUus != nil {
			fmt.Fprintf(w, "  (Redis %.2f µs/report)", *s.RedisCPUus)
		}
		fmt.Fprintln(w)
	}
}

func ratioText(r *float64) string {
	if r == nil {
		return "—"
	}
	return fmt.Sprintf("%.2f×", *r)
}

func optText(x *float64) string {
	if x == nil {
		return "—"
	}
	return fmt.Sprintf("%.2f", *x)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
