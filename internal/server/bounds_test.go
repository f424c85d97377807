package server

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
	"github.com/tracesampling/controlplane/internal/promtest"
	"github.com/tracesampling/controlplane/internal/servetest"
)

// rawCodec sends and receives bytes as they are, under the proto codec's
// name, so a test can put on the wire what no generated client would.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }

func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = slices.Clone(data)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// badUTF8Rule is a CreateRuleRequest whose rule name is not UTF-8.
func badUTF8Rule() []byte {
	rule := protowire.AppendTag(nil, 1, protowire.BytesType)
	rule = protowire.AppendBytes(rule, []byte("bad\xff\xfe"))
	req := protowire.AppendTag(nil, 1, protowire.BytesType)
	return protowire.AppendBytes(req, rule)
}

// badUTF8Hello is a StreamSamplingRequest whose hello's client ID is not
// UTF-8.
func badUTF8Hello() []byte {
	hello := protowire.AppendTag(nil, 1, protowire.BytesType)
	hello = protowire.AppendBytes(hello, []byte("c\xc3"))
	req := protowire.AppendTag(nil, 1, protowire.BytesType)
	return protowire.AppendBytes(req, hello)
}

// TestUndecodableRequests: bytes that are not the request message get
// INVALID_ARGUMENT naming the message, on unary and streaming calls alike,
// over a real connection, and change nothing.
func TestUndecodableRequests(t *testing.T) {
	rep := startReplica(t, newMemStore(t), time.Now)
	conn := rep.conn
	garbage := []byte{0xff, 0xff, 0xff, 0xff, 0x0f}
	tests := []struct {
		name    string
		method  string
		stream  bool
		payload []byte
		message string // the message named in the violation
	}{
		{"unary garbage", "/controlplane.v1.RuleService/CreateRule", false, garbage, "controlplane.v1.CreateRuleRequest"},
		{"unary invalid UTF-8", "/controlplane.v1.RuleService/CreateRule", false, badUTF8Rule(), "controlplane.v1.CreateRuleRequest"},
		{"unary sampling garbage", "/controlplane.v1.SamplingService/GetSamplingTargets", false, garbage, "controlplane.v1.GetSamplingTargetsRequest"},
		{"health garbage", "/grpc.health.v1.Health/Check", false, garbage, "grpc.health.v1.HealthCheckRequest"},
		{"stream garbage", "/controlplane.v1.SamplingService/StreamSampling", true, garbage, "controlplane.v1.StreamSamplingRequest"},
		{"stream invalid UTF-8", "/controlplane.v1.SamplingService/StreamSampling", true, badUTF8Hello(), "controlplane.v1.StreamSamplingRequest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxT(t)
			before := rep.catalog.Current().Version
			var err error
			if tt.stream {
				var s grpc.ClientStream
				s, err = conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, tt.method, grpc.ForceCodec(rawCodec{}))
				if err != nil {
					t.Fatal(err)
				}
				if err := s.SendMsg(&tt.payload); err != nil {
					t.Fatal(err)
				}
				var out []byte
				err = s.RecvMsg(&out)
			} else {
				var out []byte
				err = conn.Invoke(ctx, tt.method, &tt.payload, &out, grpc.ForceCodec(rawCodec{}))
			}
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("got %v, want InvalidArgument", err)
			}
			if got := fieldViolations(t, err); !slices.Equal(got, []string{tt.message}) {
				t.Errorf("field violations %q, want [%q]", got, tt.message)
			}
			if v, err := rep.rules.ListRules(ctx, &pb.ListRulesRequest{}); err != nil || v.GetRulesVersion() != before {
				t.Errorf("after the refused call: rules version %d, %v; want %d", v.GetRulesVersion(), err, before)
			}
		})
	}
}

// h2 is a raw HTTP/2 client connection, for requests no gRPC client would
// send: more streams than the server allows, oversized metadata, pings
// without end.
type h2 struct {
	t      *testing.T
	conn   net.Conn
	fr     *http2.Framer
	enc    *hpack.Encoder
	encBuf bytes.Buffer
	// settings the server announced
	settings map[http2.SettingID]uint32
	// writeErr is the first write that failed: the server closed the
	// connection, which outcome reports.
	writeErr error
}

func dialH2(t *testing.T, addr string) *h2 {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	c := &h2{t: t, conn: conn, fr: http2.NewFramer(conn, conn), settings: map[http2.SettingID]uint32{}}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.encBuf)
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	// The server's settings come first.
	f := c.next()
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		t.Fatalf("first frame from the server: %v, want its settings", f)
	}
	_ = sf.ForeachSetting(func(s http2.Setting) error { c.settings[s.ID] = s.Val; return nil })
	if err := c.fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	return c
}

// next returns the next frame, answering the server's settings and pings.
func (c *h2) next() http2.Frame {
	c.t.Helper()
	f, err := c.read()
	if err != nil {
		c.t.Fatalf("read frame: %v", err)
	}
	return f
}

// read is next, with the error of a connection that ended.
func (c *h2) read() (http2.Frame, error) {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			if len(c.settings) > 0 {
				if err := c.fr.WriteSettingsAck(); err != nil {
					return nil, err
				}
				continue
			}
		case *http2.PingFrame:
			if f.IsAck() {
				return f, nil
			}
			if err := c.fr.WritePing(true, f.Data); err != nil {
				return nil, err
			}
			continue
		case *http2.WindowUpdateFrame:
			continue
		}
		return f, nil
	}
}

// open starts a gRPC call on stream id with extra metadata, its request not
// yet sent.
func (c *h2) open(id uint32, method string, md map[string]string) {
	c.t.Helper()
	c.encBuf.Reset()
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: method}, {Name: ":authority", Value: "test"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	} {
		_ = c.enc.WriteField(f)
	}
	for k, v := range md {
		_ = c.enc.WriteField(hpack.HeaderField{Name: k, Value: v})
	}
	block := c.encBuf.Bytes()
	// Frames of at most 16 KiB: HEADERS, then CONTINUATION.
	const frame = 16 << 10
	first := block[:min(len(block), frame)]
	if c.writeErr == nil {
		c.writeErr = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndHeaders: len(block) <= frame})
	}
	for rest := block[len(first):]; len(rest) > 0 && c.writeErr == nil; {
		n := min(len(rest), frame)
		c.writeErr = c.fr.WriteContinuation(id, n == len(rest), rest[:n])
		rest = rest[n:]
	}
}

// finish sends stream id an empty request message and ends it.
func (c *h2) finish(id uint32) {
	if c.writeErr == nil {
		c.writeErr = c.fr.WriteData(id, true, make([]byte, 5))
	}
}

// outcome waits for how the server ends stream id: its grpc-status, the
// code of its RST_STREAM or of a GOAWAY, or the connection closed.
func (c *h2) outcome(id uint32) string {
	c.t.Helper()
	for {
		f, err := c.read()
		if err != nil {
			if c.writeErr != nil {
				return "closed (" + c.writeErr.Error() + ")"
			}
			return "closed"
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "RST_STREAM " + f.ErrCode.String()
			}
		case *http2.GoAwayFrame:
			return "GOAWAY " + f.ErrCode.String() + " " + string(f.DebugData())
		case *http2.MetaHeadersFrame:
			if f.StreamID != id {
				continue
			}
			if s := f.PseudoValue("status"); s != "" && s != "200" {
				return "HTTP " + s
			}
			for _, hf := range f.Fields {
				if hf.Name == "grpc-status" {
					return "grpc-status " + hf.Value
				}
			}
		}
	}
}

func startBoundedServer(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	opts.Rules = newMemStore(t)
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := New(opts)
	_, addr := servetest.Serve(t, srv)
	return srv, addr
}

// TestHTTP2Bounds: the server announces its bounds in its HTTP/2 settings
// and enforces them on a client that ignores them.
func TestHTTP2Bounds(t *testing.T) {
	_, addr := startBoundedServer(t, Options{MaxStreamsPerConnection: 2, MaxHeaderBytes: 8 << 10})
	const listRules = "/controlplane.v1.RuleService/ListRules"

	t.Run("settings", func(t *testing.T) {
		c := dialH2(t, addr)
		want := map[http2.SettingID]uint32{
			http2.SettingMaxConcurrentStreams: 2,
			http2.SettingMaxHeaderListSize:    8 << 10,
			http2.SettingInitialWindowSize:    DefaultStreamWindowBytes,
		}
		for id, v := range want {
			if got, ok := c.settings[id]; !ok || got != v {
				t.Errorf("setting %v = %d (announced %v), want %d", id, got, ok, v)
			}
		}
	})
	t.Run("streams per connection", func(t *testing.T) {
		c := dialH2(t, addr)
		// Two calls left open (no request yet), then a third.
		c.open(1, listRules, nil)
		c.open(3, listRules, nil)
		c.open(5, listRules, nil)
		if got := c.outcome(5); got != "RST_STREAM REFUSED_STREAM" {
			t.Errorf("third stream on a connection allowing 2: %s, want RST_STREAM REFUSED_STREAM", got)
		}
	})
	t.Run("metadata size", func(t *testing.T) {
		c := dialH2(t, addr)
		c.open(1, listRules, map[string]string{"x-small": strings.Repeat("m", 4<<10)})
		c.finish(1)
		if got := c.outcome(1); got != "grpc-status 0" {
			t.Fatalf("4 KiB of metadata: %s, want the call answered", got)
		}
		c.open(3, listRules, map[string]string{"x-big": strings.Repeat("m", 64<<10)})
		c.finish(3)
		if got := c.outcome(3); got == "grpc-status 0" {
			t.Errorf("64 KiB of metadata against a limit of 8 KiB: %s, want the call refused", got)
		}
	})
	t.Run("ping flood", func(t *testing.T) {
		c := dialH2(t, addr)
		for i := range 10 {
			if err := c.fr.WritePing(false, [8]byte{byte(i)}); err != nil {
				break // the server may already have closed the connection
			}
		}
		for {
			if g, ok := c.next().(*http2.GoAwayFrame); ok {
				if g.ErrCode != http2.ErrCodeEnhanceYourCalm || string(g.DebugData()) != "too_many_pings" {
					t.Errorf("GOAWAY %v %q, want ENHANCE_YOUR_CALM too_many_pings", g.ErrCode, g.DebugData())
				}
				return
			}
		}
	})
}

// TestCallLimit: past MaxStreams calls open at once, a new call is refused
// with RESOURCE_EXHAUSTED saying which limit, before its request is read;
// once a call ends, calls are taken again.
func TestCallLimit(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, addr := startBoundedServer(t, Options{MaxStreams: 3, Registerer: reg})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rules := pb.NewRuleServiceClient(conn)
	ctx := ctxT(t)
	if _, err := rules.ListRules(ctx, &pb.ListRulesRequest{}); err != nil {
		t.Fatal(err)
	}

	// The call above counts as open until its context's AfterFunc runs,
	// which a loaded machine can delay past the raw calls below: one of
	// them would then be refused.
	pollUntilT(t, "no call open", func() bool { return promtest.Value(t, reg, "controlplane_grpc_calls_open") == 0 })
	// Three calls held open: their requests never finish.
	raw := dialH2(t, addr)
	for _, id := range []uint32{1, 3, 5} {
		raw.open(id, "/controlplane.v1.RuleService/ListRules", nil)
	}
	pollUntilT(t, "three calls open", func() bool { return promtest.Value(t, reg, "controlplane_grpc_calls_open") == 3 })
	_, err = rules.ListRules(ctx, &pb.ListRulesRequest{})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a fourth call: %v, want ResourceExhausted", err)
	}
	var quota *errdetails.QuotaFailure
	for _, d := range status.Convert(err).Details() {
		if q, ok := d.(*errdetails.QuotaFailure); ok {
			quota = q
		}
	}
	if quota == nil || !strings.Contains(quota.GetViolations()[0].GetDescription(), "--max-streams") {
		t.Errorf("the refusal's details %v do not name the limit", status.Convert(err).Details())
	}
	if n := promtest.Value(t, reg, "controlplane_grpc_calls_refused_total"); n != 1 {
		t.Errorf("controlplane_grpc_calls_refused_total = %v, want 1", n)
	}

	raw.finish(1)
	if got := raw.outcome(1); got != "grpc-status 0" {
		t.Fatalf("finishing a held call: %s", got)
	}
	pollUntilT(t, "a call is taken again", func() bool {
		_, err := rules.ListRules(ctx, &pb.ListRulesRequest{})
		return err == nil
	})
}

// pollUntilT polls cond until it holds, for up to 10 s.
func pollUntilT(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not true within 10 s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestConnectionLimit: past MaxConnections, a new connection waits to be
// accepted until one closes; and the server still stops while one waits.
func TestConnectionLimit(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, addr := startBoundedServer(t, Options{MaxConnections: 2, Registerer: reg})
	first, _ := dialH2(t, addr), dialH2(t, addr)

	// served says when a connection that sent its preface gets the
	// server's settings.
	served := func() (sent, got <-chan bool) {
		s, g := make(chan bool, 1), make(chan bool, 1)
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		go func() {
			fr := http2.NewFramer(conn, conn)
			_, err := conn.Write([]byte(http2.ClientPreface))
			s <- err == nil && fr.WriteSettings() == nil
			_, err = fr.ReadFrame()
			g <- err == nil
		}()
		return s, g
	}
	sent, got := served()
	if !<-sent {
		t.Fatal("the third client could not send its preface")
	}
	if n := promtest.Value(t, reg, "controlplane_grpc_connections"); n != 2 {
		t.Fatalf("controlplane_grpc_connections = %v with two clients, want 2", n)
	}
	// A negative check: it can only miss a defect on a slow machine, never
	// fail a correct server.
	select {
	case <-got:
		t.Fatal("a third connection was served with two allowed")
	case <-time.After(100 * time.Millisecond):
	}
	first.conn.Close()
	if !<-got {
		t.Fatal("the third connection was not served once the first closed")
	}
	// A fourth waits: the server must still stop.
	if sent, _ := served(); !<-sent {
		t.Fatal("the fourth client could not send its preface")
	}
	stopped := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		srv.Stop(ctx)
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("the server does not stop while a connection waits to be accepted")
	}
}
