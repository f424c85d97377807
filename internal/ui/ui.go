// Package ui serves the dashboard at /ui on the HTTP port: a page of plain
// HTML, CSS and JavaScript embedded in the binary (no build step, nothing
// fetched from elsewhere, so it works offline), and the JSON it reads under
// /ui/api/, which this package answers by calling the same core functions as
// the gRPC API — package fleet for the rules' live figures and explain, the
// catalog and the store for budgets and alerts — and writing their API
// messages as protojson.
package ui

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/apiconv"
	"github.com/tracesampling/controlplane/internal/catalog"
	"github.com/tracesampling/controlplane/internal/fleet"
	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/pkg/rules"
)

//go:embed assets
var assets embed.FS

// Bounds of what one API call reads and answers.
const (
	// maxBudgets is how many budgets (by name) the page shows with their
	// burn-down charts: each is one usage read per refresh.
	maxBudgets = 50
	// maxAlerts is how many of the newest alerts the page lists; the
	// enforcement starts it marks on the charts are looked for among them.
	maxAlerts = 100
	// maxExplainBody bounds an explain request.
	maxExplainBody = 64 << 10
)

// Store is what the dashboard reads of the store besides the ledgers.
type Store interface {
	Alerts(ctx context.Context, budgetName string, pageSize int, pageToken string) (store.AlertPage, error)
}

// Options configure Handler. Fleet, Catalog, Store and History are
// required.
type Options struct {
	Fleet   *fleet.Service
	Catalog *catalog.Catalog
	Store   Store
	// History is where the burn-down charts' past comes from
	// (BudgetHistory: the store's hourly usage, as GetBudgetHistory has it).
	History History
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives errors that are not the caller's. Default
	// slog.Default().
	Logger *slog.Logger
}

// Handler serves the dashboard and its API under /ui/; mount it at "/ui/".
func Handler(o Options) http.Handler {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	h := &handler{opts: o}
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	mux := http.NewServeMux()
	for _, r := range h.routes(static) {
		mux.Handle(r.pattern, r.h)
	}
	return secure(mux)
}

type route struct {
	pattern string
	h       http.Handler
}

// routes are the dashboard's, as http.ServeMux patterns.
func (h *handler) routes(static fs.FS) []route {
	return []route{
		{"GET /ui/", http.StripPrefix("/ui/", http.FileServerFS(static))},
		{"GET /ui/api/fleet", http.HandlerFunc(h.fleet)},
		{"GET /ui/api/budgets", http.HandlerFunc(h.budgets)},
		{"GET /ui/api/alerts", http.HandlerFunc(h.alerts)},
		{"POST /ui/api/explain", http.HandlerFunc(h.explain)},
		{"GET /ui/api/explain", http.HandlerFunc(h.explain)}, // says it takes a POST
		{"GET /ui/api/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusNotFound, errorBody{Error: "no such dashboard API: " + r.Method + " " + r.URL.Path})
		})},
	}
}

// Routes returns the patterns (http.ServeMux's) Handler serves, so that a
// test can hold every one against the access policy.
func Routes() []string {
	var out []string
	for _, r := range (&handler{}).routes(nil) {
		out = append(out, r.pattern)
	}
	return out
}

// secure sets headers that keep the page to its own assets: a content
// security policy that refuses scripts, styles and connections from
// anywhere else (nothing is ever fetched from a CDN), and no sniffing.
func secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}

type handler struct {
	opts Options
}

func (h *handler) fleet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	size := 0
	if s := q.Get("page_size"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			h.fail(w, r, &rules.ValidationError{Violations: []rules.FieldViolation{{Field: "page_size", Description: "not a number"}}})
			return
		}
		size = n
	}
	st, err := h.opts.Fleet.Status(r.Context(), fleet.Query{PageSize: size, PageToken: q.Get("page_token"), Service: q.Get("service_name")})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeProto(w, fleet.StatusToProto(&st))
}

func (h *handler) alerts(w http.ResponseWriter, r *http.Request) {
	page, err := h.opts.Store.Alerts(r.Context(), "", maxAlerts, "")
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := &pb.ListAlertsResponse{NextPageToken: page.NextToken}
	for i := range page.Alerts {
		out.Alerts = append(out.Alerts, apiconv.AlertToProto(&page.Alerts[i]))
	}
	writeProto(w, out)
}

func (h *handler) explain(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: "explain takes a POST of an ExplainRequest in JSON"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxExplainBody))
	if err != nil {
		writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{Error: "an explain request is at most 64 KiB"})
		return
	}
	var req pb.ExplainRequest
	if err := protojson.Unmarshal(body, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "not an ExplainRequest in JSON: " + err.Error()})
		return
	}
	e, err := h.opts.Fleet.Explain(fleet.ExplainRequestFromProto(&req))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeProto(w, fleet.ExplanationToProto(&e))
}

// errorBody is every error's JSON: a message, and for bad input the fields
// at fault, as the gRPC API's BadRequest names them.
type errorBody struct {
	Error      string      `json:"error"`
	Violations []violation `json:"violations,omitempty"`
}

type violation struct {
	Field       string `json:"field"`
	Description string `json:"description"`
}

// fail is the dashboard API's one mapping of errors to HTTP statuses. As
// with the gRPC API, errors that are not part of the API are logged and
// reach the page only as a generic message.
func (h *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ve *rules.ValidationError
	switch {
	case errors.As(err, &ve):
		body := errorBody{Error: ve.Error()}
		for _, v := range ve.Violations {
			body.Violations = append(body.Violations, violation{v.Field, v.Description})
		}
		writeJSON(w, http.StatusBadRequest, body)
	case errors.Is(err, store.ErrNotFound):
		writeJSON(w, http.StatusNotFound, errorBody{Error: err.Error()})
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "the request was canceled or timed out"})
	case errors.Is(err, store.ErrUnavailable):
		h.opts.Logger.WarnContext(r.Context(), "dashboard: store unavailable", "path", r.URL.Path, "err", err)
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "the store is unavailable; the figures will come back when it is"})
	default:
		h.opts.Logger.ErrorContext(r.Context(), "dashboard: internal error", "path", r.URL.Path, "err", err)
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: "internal error"})
	}
}

// marshal writes API messages as the CLI's JSON output does: field names
// as in the .proto files, zero values included.
var marshal = protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true}

func writeProto(w http.ResponseWriter, m proto.Message) {
	b, err := marshal.Marshal(m)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, errorBody{Error: "internal error"})
		return
	}
	writeBody(w, http.StatusOK, b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	writeBody(w, code, b)
}

func writeBody(w http.ResponseWriter, code int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
