package jaeger

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"

	api "github.com/tracesampling/controlplane/gen/jaeger/api_v2"
	"github.com/tracesampling/controlplane/internal/store"
)

// Handler serves GET /sampling?service=NAME, the path of the OpenTelemetry
// samplers (Go, JS, Python) and of Jaeger's agent, and GET /?service=NAME,
// the agent's older path that legacy Jaeger clients (C#) still call. Other
// methods get 405, other paths 404.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, pattern := range Routes() {
		mux.HandleFunc(pattern, s.serveHTTP)
	}
	return mux
}

// Routes are the http.ServeMux patterns Handler serves: the collector's
// path, and the agent's older one that some clients still call.
func Routes() []string { return []string{"GET /sampling", "GET /{$}"} }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if len(q["service"]) != 1 {
		// Jaeger's own words, which its users will search for.
		http.Error(w, "'service' parameter must be provided once", http.StatusBadRequest)
		return
	}
	resp, err := s.Strategy(r.Context(), q.Get("service"), pollerOf(r.RemoteAddr))
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	body, err := MarshalJSON(resp)
	if err != nil {
		s.httpError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// httpError is the one place where errors become HTTP answers, in plain text
// as Jaeger writes them. Errors that are not the client's are logged here
// and reach it only as a generic message.
func (s *Server) httpError(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := httpStatus(err)
	if code == http.StatusInternalServerError {
		s.log.ErrorContext(r.Context(), "jaeger sampling: internal error", "err", err)
	} else if errors.Is(err, store.ErrUnavailable) {
		s.log.WarnContext(r.Context(), "jaeger sampling: store unavailable", "err", err)
	}
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	http.Error(w, msg, code)
}

// httpStatus maps an error to its HTTP status and message.
func httpStatus(err error) (int, string) {
	var bad *invalidServiceError
	switch {
	case errors.As(err, &bad):
		return http.StatusBadRequest, bad.Error()
	case errors.Is(err, store.ErrUnavailable):
		return http.StatusServiceUnavailable, "the rule store is unavailable; retry later"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "request canceled or timed out; retry later"
	default:
		return http.StatusInternalServerError, "internal error"
	}
}

// MarshalJSON encodes a strategy as Jaeger's collector does (gogo jsonpb with
// EmitDefaults, then nulls removed): field names in lowerCamelCase in field
// order, the enum by name, every scalar written even when zero, absent
// messages left out and empty lists written as []. Each client needs some of
// that: the Go sampler parses with gogo's jsonpb, which refuses unknown
// fields; Python takes a missing number for its own default (0.001), not 0;
// JS and Java read strategyType and probabilisticSampling when no operation
// is listed; Python iterates perOperationStrategies, so it must not be null.
// Encoding with protojson instead would write nulls and vary its spacing.
func MarshalJSON(resp *api.SamplingStrategyResponse) ([]byte, error) {
	out := jsonResponse{StrategyType: resp.GetStrategyType().String()}
	if p := resp.GetProbabilisticSampling(); p != nil {
		out.ProbabilisticSampling = &jsonProbabilistic{SamplingRate: p.GetSamplingRate()}
	}
	if rl := resp.GetRateLimitingSampling(); rl != nil {
		out.RateLimitingSampling = &jsonRateLimiting{MaxTracesPerSecond: rl.GetMaxTracesPerSecond()}
	}
	if per := resp.GetOperationSampling(); per != nil {
		o := &jsonPerOperation{
			DefaultSamplingProbability:       per.GetDefaultSamplingProbability(),
			DefaultLowerBoundTracesPerSecond: per.GetDefaultLowerBoundTracesPerSecond(),
			PerOperationStrategies:           make([]jsonOperation, len(per.GetPerOperationStrategies())),
			DefaultUpperBoundTracesPerSecond: per.GetDefaultUpperBoundTracesPerSecond(),
		}
		for i, op := range per.GetPerOperationStrategies() {
			// Every client reads the rate without checking for null (the
			// Go sampler would panic), so a missing one is written as 0.
			o.PerOperationStrategies[i] = jsonOperation{Operation: op.GetOperation(), ProbabilisticSampling: jsonProbabilistic{SamplingRate: op.GetProbabilisticSampling().GetSamplingRate()}}
		}
		out.OperationSampling = o
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

type jsonResponse struct {
	StrategyType          string             `json:"strategyType"`
	ProbabilisticSampling *jsonProbabilistic `json:"probabilisticSampling,omitempty"`
	RateLimitingSampling  *jsonRateLimiting  `json:"rateLimitingSampling,omitempty"`
	OperationSampling     *jsonPerOperation  `json:"operationSampling,omitempty"`
}

type jsonProbabilistic struct {
	SamplingRate float64 `json:"samplingRate"`
}

type jsonRateLimiting struct {
	MaxTracesPerSecond int32 `json:"maxTracesPerSecond"`
}

type jsonPerOperation struct {
	DefaultSamplingProbability       float64         `json:"defaultSamplingProbability"`
	DefaultLowerBoundTracesPerSecond float64         `json:"defaultLowerBoundTracesPerSecond"`
	PerOperationStrategies           []jsonOperation `json:"perOperationStrategies"`
	DefaultUpperBoundTracesPerSecond float64         `json:"defaultUpperBoundTracesPerSecond"`
}

type jsonOperation struct {
	Operation             string            `json:"operation"`
	ProbabilisticSampling jsonProbabilistic `json:"probabilisticSampling"`
}
