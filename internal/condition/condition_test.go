package condition

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tracesampling/controlplane/pkg/clocktest"
)

func TestCondition(t *testing.T) {
	type step struct {
		after    time.Duration // clock moves on by this first
		occurred bool          // else cleared
	}
	fail, ok := func(d time.Duration) step { return step{d, true} }, func(d time.Duration) step { return step{d, false} }
	tests := []struct {
		name  string
		steps []step
		want  []string // log lines: level and message
		count float64
	}{
		{"clear stays silent", []step{ok(0), ok(time.Minute)}, nil, 0},
		{"an outage is two lines", []step{fail(0), fail(time.Second), fail(time.Second), ok(Quiet), ok(time.Second)},
			[]string{"WARN store unavailable", "INFO store unavailable: over"}, 3},
		{"over only after a quiet spell", []step{fail(0), ok(time.Second), fail(time.Second), ok(time.Second), ok(Quiet - 2*time.Second)},
			[]string{"WARN store unavailable"}, 2},
		{"two outages", []step{fail(0), ok(Quiet), fail(time.Minute), ok(Quiet)},
			[]string{"WARN store unavailable", "INFO store unavailable: over", "WARN store unavailable", "INFO store unavailable: over"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			}}))
			counter := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
			c := New(log, "store unavailable", counter)
			clk := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			c.now = clk.Now
			for _, s := range tt.steps {
				clk.Add(s.after)
				if s.occurred {
					c.Occurred(context.Background(), errors.New("boom"))
				} else {
					c.Cleared(context.Background())
				}
			}
			var got []string
			for line := range strings.Lines(buf.String()) {
				level, _, _ := strings.Cut(strings.TrimPrefix(line, "level="), " ")
				_, msg, _ := strings.Cut(line, "msg=")
				msg = strings.Trim(msg[:strings.Index(msg+" ", `" `)+1], `"`)
				got = append(got, level+" "+msg)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("log lines (-want +got):\n%s\nlog:\n%s", d, buf.String())
			}
			var m dto.Metric
			if err := counter.Write(&m); err != nil {
				t.Fatal(err)
			}
			if n := m.GetCounter().GetValue(); n != tt.count {
				t.Errorf("counted %v occurrences, want %v", n, tt.count)
			}
		})
	}
}
