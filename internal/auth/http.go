package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tracesampling/controlplane/internal/store"
	"github.com/tracesampling/controlplane/internal/xray"
)

// HTTPStatus maps an error of Check (or of the Limiter) to an HTTP status
// code and, for a limit, the seconds for Retry-After.
func HTTPStatus(err error) (code int, retryAfter int) {
	var le *LimitError
	switch {
	case errors.As(err, &le):
		return http.StatusTooManyRequests, int(math.Ceil(le.RetryAfter.Seconds()))
	case errors.Is(err, ErrUnauthenticated):
		return http.StatusUnauthorized, 0
	case errors.Is(err, ErrPermissionDenied):
		return http.StatusForbidden, 0
	case errors.Is(err, store.ErrUnavailable):
		return http.StatusServiceUnavailable, 5
	default:
		return http.StatusInternalServerError, 0
	}
}

// WriteHTTPError writes a refusal as plain text, with WWW-Authenticate on a
// 401 and Retry-After on a 429 or 503.
func WriteHTTPError(w http.ResponseWriter, err error) {
	code, retry := HTTPStatus(err)
	msg := err.Error()
	switch code {
	case http.StatusUnauthorized:
		w.Header().Add("WWW-Authenticate", `Bearer realm="controlplane"`)
	case http.StatusServiceUnavailable:
		msg = "the token store is unavailable; retry later"
	case http.StatusInternalServerError:
		msg = "internal error"
	}
	if retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retry))
	}
	http.Error(w, msg, code)
}

// writeXRayError writes a refusal in the X-Ray API's shape, which the AWS
// SDKs parse: an x-amzn-ErrorType header and a {"__type", "Message"} body.
func writeXRayError(w http.ResponseWriter, r *http.Request, err error) {
	code, retry := HTTPStatus(err)
	typ := "AccessDeniedException"
	msg := err.Error()
	switch {
	case code == http.StatusTooManyRequests:
		typ = "ThrottledException"
	case code == http.StatusServiceUnavailable:
		typ, msg = "ServiceUnavailableException", "the token store is unavailable; retry later"
	case code == http.StatusInternalServerError:
		typ, msg = "InternalFailure", "internal error"
	case errors.Is(err, errSignature):
		typ, code = "InvalidSignatureException", http.StatusForbidden
	case code == http.StatusUnauthorized && r.Header.Get("Authorization") == "":
		typ, code = "MissingAuthenticationTokenException", http.StatusForbidden
		msg += "; or sign the request with SigV4, using an access key from `controlplane tokens create NAME --aws`"
	case code == http.StatusUnauthorized:
		// AWS answers 403 to credentials it does not know.
		typ, code = "UnrecognizedClientException", http.StatusForbidden
	}
	if retry > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retry))
	}
	b, _ := json.Marshal(map[string]string{"__type": typ, "Message": msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-Errortype", typ)
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func httpCredentials(r *http.Request) Credentials {
	c := Credentials{Authorization: r.Header.Values("Authorization")}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		c.Peer = ap.Addr()
	} else if r.RemoteAddr == "@" || strings.HasPrefix(r.RemoteAddr, "/") {
		c.Local = true // a Unix socket
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		c.Cert = r.TLS.VerifiedChains[0][0]
	}
	return c
}

// Middleware checks every HTTP request against the policy before next
// sees it, and passes the principal in the request's context. On the X-Ray
// routes it verifies SigV4 signatures (reading the body, at most
// xray.DefaultMaxBodyBytes, and handing it on) and answers refusals in
// X-Ray's error shape; on the Jaeger routes it checks the service
// parameter against the principal's scope. It never trusts forwarding
// headers (X-Forwarded-For): the peer is the connection's.
func (g *Guard) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Path
		isXRay := xrayRoutes[path]
		fail := WriteHTTPError
		if isXRay {
			fail = func(w http.ResponseWriter, err error) { writeXRayError(w, r, err) }
		}
		rule, ok := RouteRule(path)
		if !ok {
			g.refusals.WithLabelValues("permission_denied").Inc()
			fail(w, denied("%s has no access policy, so it is refused", path))
			return
		}
		call := Call{Name: path, Rule: rule}
		if jaegerRoutes[path] {
			call.Services = r.URL.Query()["service"]
		}
		creds := httpCredentials(r)
		if isDashboard(path) {
			// A browser cannot send a bearer token by itself: the dashboard
			// also takes one as the password of HTTP Basic authentication,
			// and asks for it so. Only its routes, which only read: a
			// browser resends Basic credentials on other sites' requests
			// too, and no route that changes anything may take them.
			creds.Authorization = basicAsBearer(creds.Authorization)
			fail = func(w http.ResponseWriter, err error) {
				w.Header().Add("WWW-Authenticate", `Basic realm="controlplane dashboard: any user name, a token as the password", charset="UTF-8"`)
				WriteHTTPError(w, err)
			}
		}
		ctx := r.Context()
		var p *Principal
		var err error
		if isXRay && isSigV4(r.Header.Get("Authorization")) {
			var body []byte
			body, err = xray.ReadBody(w, r, xray.DefaultMaxBodyBytes, g.bodyTime)
			if err != nil {
				var mbe *http.MaxBytesError
				var ne net.Error
				switch {
				case errors.As(err, &mbe):
					err = denied("the request body is over %d bytes", xray.DefaultMaxBodyBytes)
				case errors.As(err, &ne) && ne.Timeout():
					err = denied("the request body did not arrive within %v", g.bodyTime)
				default:
					err = badSignature("cannot read the request body")
				}
				fail(w, err)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			p, err = g.checkSigV4(ctx, r, body, call)
		} else {
			p, err = g.Check(ctx, creds, call)
		}
		if err != nil {
			fail(w, err)
			return
		}
		if p != nil {
			ctx = NewContext(ctx, p)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// isDashboard reports whether path is the dashboard's (/ui and below).
func isDashboard(path string) bool { return path == "/ui" || strings.HasPrefix(path, "/ui/") }

// basicAsBearer returns authorization values with an HTTP Basic one turned
// into the bearer token that is its password; others are left alone.
func basicAsBearer(values []string) []string {
	if len(values) != 1 {
		return values
	}
	scheme, rest, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
	if !strings.EqualFold(scheme, "Basic") {
		return values
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
	if err != nil {
		return values // refused as not a bearer token
	}
	_, password, _ := strings.Cut(string(raw), ":")
	return []string{"Bearer " + password}
}
