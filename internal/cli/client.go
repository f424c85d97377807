package cli

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/tlsfiles"
)

// connConfig says how to reach the server; every rules subcommand has these
// flags.
type connConfig struct {
	server string
	tls    bool
	tlsCA  string // PEM file of the CAs to trust instead of the system's
	// PEM files of a client certificate and key, for a server that wants
	// one (mutual TLS).
	tlsCert, tlsKey string
	timeout         time.Duration
	// token is the bearer token sent with every call (--token), else
	// envToken (CONTROLPLANE_TOKEN), kept apart so that --help never shows
	// a secret as a default.
	token, envToken string
}

// tokenEnv is the environment variable of the CLI's bearer token.
const tokenEnv = "CONTROLPLANE_TOKEN"

// maxAnswerBytes is the largest answer the CLI takes: a page of 1,000 rules
// at maximum field sizes is some 20 MB (see rules.MaxRules), over gRPC's
// default of 4 MiB.
const maxAnswerBytes = 64 << 20

// client is a connection to the control plane's RuleService.
type client struct {
	conn   *grpc.ClientConn
	rules  pb.RuleServiceClient
	status pb.StatusServiceClient
	addr   string
	to     time.Duration
	tls    bool // whether the connection speaks TLS
}

// dial prepares a connection; grpc connects lazily, so an unreachable server
// shows up as the first call's UNAVAILABLE error. Every call and stream
// carries the bearer token, if there is one, and every call times out after
// c.timeout.
func dial(c connConfig) (*client, error) {
	creds := insecure.NewCredentials()
	withTLS := c.tls || c.tlsCA != "" || c.tlsCert != "" || c.tlsKey != ""
	if withTLS {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12} // the system's roots
		if c.tlsCA != "" {
			pool, err := readCertPool(c.tlsCA)
			if err != nil {
				return nil, usageError(fmt.Errorf("--tls-ca: %w", err))
			}
			cfg.RootCAs = pool
		}
		if c.tlsCert != "" || c.tlsKey != "" {
			if c.tlsCert == "" || c.tlsKey == "" {
				return nil, usageError(errors.New("--tls-cert and --tls-key go together"))
			}
			cert, err := tls.LoadX509KeyPair(c.tlsCert, c.tlsKey)
			if err != nil {
				return nil, usageError(fmt.Errorf("--tls-cert, --tls-key: %w", err))
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		creds = credentials.NewTLS(cfg)
	}
	timeout := c.timeout
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent("controlplane-cli"),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxAnswerBytes)),
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			var trailer metadata.MD
			err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Trailer(&trailer))...)
			if err != nil && trailer != nil {
				return serverAnswered{err}
			}
			return err
		}),
	}
	if tok := cmp.Or(strings.TrimSpace(c.token), strings.TrimSpace(c.envToken)); tok != "" {
		dialOpts = append(dialOpts, grpc.WithPerRPCCredentials(bearerToken(tok)))
	}
	conn, err := grpc.NewClient(c.server, dialOpts...)
	if err != nil {
		return nil, usageError(fmt.Errorf("--server %q: %w", c.server, err))
	}
	return &client{conn: conn, rules: pb.NewRuleServiceClient(conn), status: pb.NewStatusServiceClient(conn), addr: c.server, to: timeout, tls: withTLS}, nil
}

func (c *client) Close() error { return c.conn.Close() }

// bearerToken sends "authorization: Bearer <token>" with every call and
// stream. It does not require TLS, so that the CLI works against a server
// on a trusted network without it; over plaintext the token can be read on
// the network (the README says to use TLS elsewhere).
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return false }

// listRules returns every rule matching filter, following page tokens.
func (c *client) listRules(ctx context.Context, filter string, pageSize int32) ([]*pb.Rule, error) {
	var all []*pb.Rule
	token := ""
	for {
		resp, err := c.rules.ListRules(ctx, &pb.ListRulesRequest{PageSize: pageSize, PageToken: token, Filter: filter})
		if err != nil {
			return nil, c.wrap("list rules", err)
		}
		all = append(all, resp.GetRules()...)
		token = resp.GetNextPageToken()
		if token == "" {
			return all, nil
		}
	}
}

// listEvents returns up to limit audit events (0: all), newest first, and
// whether the listing reached the oldest entry kept and older ones were
// trimmed by the log's retention.
func (c *client) listEvents(ctx context.Context, rule string, limit int) ([]*pb.RuleEvent, bool, error) {
	const maxPage = 1000
	var all []*pb.RuleEvent
	token := ""
	for {
		size := maxPage
		if limit > 0 {
			size = min(limit-len(all), maxPage)
		}
		resp, err := c.rules.ListRuleEvents(ctx, &pb.ListRuleEventsRequest{PageSize: int32(size), PageToken: token, RuleName: rule})
		if err != nil {
			return nil, false, c.wrap("list rule events", err)
		}
		all = append(all, resp.GetEvents()...)
		token = resp.GetNextPageToken()
		if token == "" || limit > 0 && len(all) >= limit {
			if limit > 0 && len(all) > limit {
				all = all[:limit]
			}
			return all, token == "" && resp.GetTrimmed(), nil
		}
	}
}

// serverAnswered is a failed call whose status the server sent (it came
// with trailers), as opposed to one the client made up because it could not
// reach the server. It keeps the status for status.FromError.
type serverAnswered struct{ error }

func (e serverAnswered) Unwrap() error              { return e.error }
func (e serverAnswered) GRPCStatus() *status.Status { return status.Convert(e.error) }

// rpcError is a failed call, printed as what was attempted, the server's
// message, and each field violation on its own line. It unwraps to the gRPC
// status error, so exitCode maps its code.
type rpcError struct {
	op   string // what was attempted, e.g. `update rule "checkout"`; may be empty
	addr string
	to   time.Duration
	hint string // what to change, when the failure says what
	err  error
}

func (c *client) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return &rpcError{op: op, addr: c.addr, to: c.to, hint: c.tlsHint(err), err: err}
}

func (e *rpcError) Unwrap() error { return e.err }

func (e *rpcError) Error() string {
	st := status.Convert(e.err)
	msg := st.Message()
	var violations []string
	for _, v := range fieldViolations(st) {
		violations = append(violations, v.GetField()+": "+v.GetDescription())
	}
	// The server's message usually repeats the violations on one line;
	// keep only its lead-in when it does, since they follow one per line.
	if len(violations) > 0 {
		if i := strings.Index(msg, violations[0]); i > 0 {
			msg = strings.TrimRight(msg[:i], ": ")
		}
	}
	switch st.Code() {
	case codes.Unavailable:
		if errors.As(e.err, new(serverAnswered)) {
			msg = fmt.Sprintf("the control plane at %s answered, but its store is unavailable: %s", e.addr, msg)
			break
		}
		msg = fmt.Sprintf("cannot reach the control plane at %s: %s", e.addr, msg)
	case codes.DeadlineExceeded:
		if errors.Is(e.err, context.DeadlineExceeded) || strings.Contains(msg, "deadline") {
			msg = fmt.Sprintf("no answer from the control plane at %s within %v: %s", e.addr, e.to, msg)
		}
	}
	var b strings.Builder
	// The server's message may already say what was attempted ("create
	// rule "x": already exists"): say it once.
	if e.op != "" && !strings.HasPrefix(msg, e.op+":") {
		b.WriteString(e.op + ": ")
	}
	b.WriteString(msg)
	for _, v := range violations {
		b.WriteString("\n  " + v)
	}
	if e.hint != "" {
		b.WriteString("\n  " + e.hint)
	}
	return b.String()
}

// tlsHint says what to change when a failure shows that the two ends
// disagree on TLS. A plaintext server answers a TLS handshake with HTTP/2,
// which the TLS client names. A TLS server closes a plaintext connection
// before its HTTP/2 preface, as a server that is not gRPC may too: a TLS
// handshake to the address (certificate unchecked: it only asks whether the
// server speaks TLS) tells them apart.
func (c *client) tlsHint(err error) string {
	st := status.Convert(err)
	if st.Code() != codes.Unavailable {
		return ""
	}
	switch msg := st.Message(); {
	case c.tls && strings.Contains(msg, "first record does not look like a TLS handshake"):
		return "the server speaks plaintext: leave out --tls and --tls-ca"
	case !c.tls && strings.Contains(msg, "error reading server preface") && speaksTLS(c.addr):
		return "the server speaks TLS: add --tls, or --tls-ca FILE for a private CA"
	}
	return ""
}

// speaksTLS says whether a TLS handshake with addr completes within 2 s.
func speaksTLS(addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}} // a probe: nothing is sent
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}

// fieldViolations returns the field violations an InvalidArgument status
// carries (google.rpc.BadRequest details).
func fieldViolations(st *status.Status) []*errdetails.BadRequest_FieldViolation {
	var out []*errdetails.BadRequest_FieldViolation
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			out = append(out, br.GetFieldViolations()...)
		}
	}
	return out
}

// readCertPool reads the PEM certificates of a file into a pool.
func readCertPool(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return tlsfiles.CertPool(file, data)
}
