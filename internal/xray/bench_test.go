package xray_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tracesampling/controlplane/internal/xray"
)

// fixedCore answers every report with one target per document and does no
// work of its own, so that the benchmark measures the X-Ray layer alone:
// decode, checks, whole quotas, encode.
type fixedCore struct{ xray.Core }

func (fixedCore) Report(_ context.Context, r xray.Report) (xray.Targets, error) {
	ts := xray.Targets{Targets: make([]xray.Target, len(r.Statistics))}
	for i, s := range r.Statistics {
		ts.Targets[i] = xray.Target{Rule: s.Rule, FixedRate: 0.05, Quota: 0.37, Expiry: t0.Add(20 * time.Second), Interval: 10 * time.Second}
	}
	return ts, nil
}

func (fixedCore) RulesModified(context.Context) (time.Time, error) { return t0, nil }

// BenchmarkSamplingTargets is one /SamplingTargets call of an SDK with
// docs rules, through the handler (no network).
func BenchmarkSamplingTargets(b *testing.B) {
	for _, docs := range []int{1, 5, 25} {
		b.Run(fmt.Sprintf("docs=%d", docs), func(b *testing.B) {
			h, err := xray.NewHandler(fixedCore{}, xray.Options{Now: func() time.Time { return t0 }, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			in := map[string]any{}
			var ds []any
			for i := range docs {
				ds = append(ds, map[string]any{"ClientID": "0123456789abcdef01234567", "RuleName": fmt.Sprintf("rule-%d", i),
					"RequestCount": 1234, "SampledCount": 60, "BorrowCount": 1, "Timestamp": 1735787045.123})
			}
			in["SamplingStatisticsDocuments"] = ds
			body, err := json.Marshal(in)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/SamplingTargets", bytes.NewReader(body)))
				if w.Code != http.StatusOK {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}
