package server

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// fillEvery sets every field of m, recursively, to a value that is not its
// default (lists get two elements, the last field of a oneof wins), and
// adds an unknown field; seed makes the values of two calls differ.
func fillEvery(t *testing.T, m protoreflect.Message, seed int) {
	t.Helper()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		value := func(j int) protoreflect.Value {
			n := seed + i + j + 1
			switch fd.Kind() {
			case protoreflect.StringKind:
				return protoreflect.ValueOfString(string(rune('a' + n%26)))
			case protoreflect.BoolKind:
				return protoreflect.ValueOfBool(true)
			case protoreflect.DoubleKind:
				return protoreflect.ValueOfFloat64(float64(n) + 0.5)
			case protoreflect.Int64Kind:
				return protoreflect.ValueOfInt64(int64(n))
			case protoreflect.Int32Kind:
				return protoreflect.ValueOfInt32(int32(n))
			case protoreflect.Uint64Kind:
				return protoreflect.ValueOfUint64(uint64(n))
			case protoreflect.Uint32Kind:
				return protoreflect.ValueOfUint32(uint32(n))
			case protoreflect.MessageKind:
				var sub protoreflect.Message
				if fd.IsList() {
					sub = m.Mutable(fd).List().NewElement().Message()
				} else {
					sub = m.NewField(fd).Message()
				}
				fillEvery(t, sub, n)
				return protoreflect.ValueOfMessage(sub)
			}
			t.Fatalf("%s: fillEvery does not do %v", fd.FullName(), fd.Kind())
			return protoreflect.Value{}
		}
		switch {
		case fd.IsMap():
			t.Fatalf("%s: fillEvery does not do maps", fd.FullName())
		case fd.IsList():
			l := m.Mutable(fd).List()
			l.Append(value(0))
			l.Append(value(1))
		default:
			m.Set(fd, value(0))
		}
	}
	m.SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 999, protowire.VarintType), uint64(seed+1)))
}

// decodeBoth decodes b through the server's codec into a new message and,
// after reset, into reused, and fails t unless both fail or both decode to
// the same message.
func decodeBoth(t *testing.T, codec *lenientCodec, reused *reusedRequest, b []byte) {
	t.Helper()
	fresh := new(pb.StreamSamplingRequest)
	wantErr := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, fresh)
	if wantErr == nil {
		wantErr = codec.check(fresh)
	}
	reused.reset()
	err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, reused)
	if err == nil {
		err = codec.check(reused)
	}
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("%x: error %v, in a new message %v", b, err, wantErr)
	}
	if diff := cmp.Diff(fresh, reused.StreamSamplingRequest, protocmp.Transform()); diff != "" {
		t.Fatalf("%x decoded into the reused message differs from a new one's (-new +reused):\n%s", b, diff)
	}
	if (fresh.GetReport() == nil) != (reused.GetReport() == nil) {
		t.Fatalf("%x: report %v, in a new message %v", b, reused.GetReport(), fresh.GetReport())
	}
}

// TestReusedRequestDecodesAsNew: a stream receives every report into one
// message (reusedRequest), through the server's codec. Whatever the message
// before it held — every field set, unknown fields, bytes that did not
// decode — each message decodes to what it does in a new message: no field
// of one report leaks into the next.
func TestReusedRequestDecodesAsNew(t *testing.T) {
	full := &pb.Report{}
	fillEvery(t, full.ProtoReflect(), 0)
	if len(full.GetStatistics()) != 2 || full.GetStatistics()[1].GetBoost() == nil || full.GetSeq() == 0 || !full.GetResent() {
		t.Fatalf("fillEvery left fields unset: %v", full)
	}
	report := func(r *pb.Report) []byte {
		b, err := proto.Marshal(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: r}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	hello, err := proto.Marshal(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Hello{Hello: &pb.Hello{ClientId: "c", ServiceName: "s"}}})
	if err != nil {
		t.Fatal(err)
	}
	one := report(&pb.Report{Statistics: []*pb.SamplingStatistics{{RuleName: "r", RequestCount: 3}}})
	// A report, then a hello: the last field of the oneof wins.
	helloThenReport := append(append([]byte(nil), hello...), one...)
	reportThenHello := append(append([]byte(nil), one...), hello...)
	many := report(&pb.Report{Statistics: make([]*pb.SamplingStatistics, maxStatistics+1)})
	garbage := []byte{0x12, 0xff, 0x01} // a report longer than the bytes

	for _, tc := range []struct {
		name     string
		messages [][]byte
	}{
		{"every field, then none", [][]byte{report(full), report(&pb.Report{})}},
		{"every field, then no report", [][]byte{report(full), {}}},
		{"every field, then one document", [][]byte{report(full), one, report(full), one}},
		{"every field, then a hello", [][]byte{report(full), hello, one}},
		{"a report twice in one message", [][]byte{report(full), append(one, one...)}},
		{"a hello and a report in one message", [][]byte{report(full), helloThenReport, reportThenHello, one}},
		{"more documents than a report may have", [][]byte{many, one, many, report(&pb.Report{})}},
		{"bytes that do not decode", [][]byte{report(full), garbage, one, garbage, report(&pb.Report{})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			codec := newLenientCodec()
			reused := newReusedRequest()
			for _, b := range tc.messages {
				decodeBoth(t, codec, reused, b)
			}
			reused.reset()
			if n := cap(reused.GetReport().GetStatistics()); n > maxStatistics {
				t.Errorf("the reused message keeps room for %d documents, more than a report may have (%d)", n, maxStatistics)
			}
		})
	}
}

// BenchmarkReceiveReport decodes a one-document report as bench/reportcost
// sends it, through the server's codec, into a new message each time (as
// Recv does) and into one reused message (as a stream's reports are):
//
//	go test -run '^$' -bench ReceiveReport -benchmem ./internal/server
func BenchmarkReceiveReport(b *testing.B) {
	now := time.Now()
	data, err := proto.Marshal(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: &pb.Report{
		Statistics: []*pb.SamplingStatistics{{RuleName: "rule-0", RequestCount: 100, SampledCount: 2, EndTime: timestamppb.New(now), Interval: durationpb.New(time.Second)}},
	}}})
	if err != nil {
		b.Fatal(err)
	}
	codec := newLenientCodec()
	for _, reuse := range []bool{false, true} {
		b.Run(fmt.Sprintf("reused=%v", reuse), func(b *testing.B) {
			reused := newReusedRequest()
			b.ReportAllocs()
			for b.Loop() {
				var m any = reused
				if reuse {
					reused.reset()
				} else {
					m = new(pb.StreamSamplingRequest)
				}
				if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// wireGen makes requests as an SDK or a hostile client might encode them,
// field by field: plain reports (every field of an SDK's report, with its
// wire type, some given twice) and, with odd set, anything else too
// (unknown fields, wrong wire types, invalid UTF-8, a hello, cut bytes).
type wireGen struct {
	rng *rand.Rand
	odd bool // this message may hold what decodeReport leaves to protobuf
}

func (g *wireGen) varint() uint64 {
	switch g.rng.IntN(4) {
	case 0:
		return 0
	case 1:
		return g.rng.Uint64()
	default:
		return uint64(g.rng.IntN(1000))
	}
}

func (g *wireGen) str(b []byte, num protowire.Number) []byte {
	names := []string{"rule-0", "rule-1", "", "ünïcode", "a longer rule name than the others"}
	s := names[g.rng.IntN(len(names))]
	if g.odd && g.rng.IntN(8) == 0 {
		s = "bad\xff"
	}
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
}

// ints appends a message of varint fields 1..n, some absent, some twice.
func (g *wireGen) ints(n int) []byte {
	var b []byte
	for range g.rng.IntN(2 * n) {
		num := protowire.Number(1 + g.rng.IntN(n))
		if g.odd && g.rng.IntN(10) == 0 {
			num = protowire.Number(n + 1) // unknown
		}
		b = protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), g.varint())
	}
	return b
}

func (g *wireGen) doc() []byte {
	var b []byte
	for range g.rng.IntN(10) {
		switch f := g.rng.IntN(9); f {
		case 0, 1:
			b = g.str(b, []protowire.Number{1, 7}[f])
		case 2:
			b = protowire.AppendVarint(protowire.AppendTag(b, protowire.Number(2+g.rng.IntN(3)), protowire.VarintType), g.varint())
		case 3, 4:
			b = protowire.AppendBytes(protowire.AppendTag(b, protowire.Number(5+f-3), protowire.BytesType), g.ints(2))
		case 5:
			b = protowire.AppendBytes(protowire.AppendTag(b, 20, protowire.BytesType), g.ints(3))
		default:
			if g.odd {
				num := []protowire.Number{1, 2, 5, 8, 19, 999}[g.rng.IntN(6)]
				b = protowire.AppendVarint(protowire.AppendTag(b, num, []protowire.Type{protowire.VarintType, protowire.Fixed64Type}[g.rng.IntN(2)]), 7)
			}
		}
	}
	return b
}

func (g *wireGen) report() []byte {
	var b []byte
	for range g.rng.IntN(8) {
		switch f := g.rng.IntN(6); {
		case f < 3:
			b = protowire.AppendBytes(protowire.AppendTag(b, 1, protowire.BytesType), g.doc())
		case f < 5:
			b = protowire.AppendVarint(protowire.AppendTag(b, protowire.Number(2+g.rng.IntN(3)), protowire.VarintType), g.varint())
		case g.odd:
			b = protowire.AppendBytes(protowire.AppendTag(b, protowire.Number(1+g.rng.IntN(6)), protowire.BytesType), []byte{8, 1})
		}
	}
	return b
}

func (g *wireGen) request() []byte {
	var b []byte
	for range 1 + g.rng.IntN(2) {
		switch {
		case g.odd && g.rng.IntN(6) == 0:
			b = protowire.AppendBytes(protowire.AppendTag(b, 1, protowire.BytesType), []byte{10, 1, 'c'}) // a hello
		case g.odd && g.rng.IntN(6) == 0:
			b = protowire.AppendVarint(protowire.AppendTag(b, reportField, protowire.VarintType), 48) // not a report: an unknown field
		default:
			b = protowire.AppendBytes(protowire.AppendTag(b, reportField, protowire.BytesType), g.report())
		}
	}
	if g.odd && g.rng.IntN(6) == 0 && len(b) > 0 {
		b = b[:g.rng.IntN(len(b))]
	}
	return b
}

// TestFastDecodingAgreesWithProtobuf: a stream's reports are decoded by
// decodeReport where they hold what an SDK's report does, and by protobuf
// otherwise. Over random requests, one after the other into the reused
// message, each decodes to what protobuf makes of it in a new message, and
// fails where protobuf fails; the plain ones take decodeReport's way.
func TestFastDecodingAgreesWithProtobuf(t *testing.T) {
	codec := newLenientCodec()
	reused := newReusedRequest()
	g := &wireGen{rng: rand.New(rand.NewPCG(1, 2))}
	fast := 0
	for i := range 30_000 {
		g.odd = i%2 == 1
		b := g.request()
		if !g.odd {
			reused.reset()
			if !reused.decodeReport(b) {
				t.Fatalf("message %d (%x): a plain report left to protobuf", i, b)
			}
			fast++
		}
		decodeBoth(t, codec, reused, b)
	}
	if fast == 0 {
		t.Fatal("no message took decodeReport's way")
	}
}

// FuzzReusedRequest holds decodeReport to protobuf's decoding over any
// bytes, after the message the reused request last held:
//
//	go test -run '^$' -fuzz FuzzReusedRequest ./internal/server
func FuzzReusedRequest(f *testing.F) {
	g := &wireGen{rng: rand.New(rand.NewPCG(3, 4))}
	for i := range 40 {
		g.odd = i%2 == 1
		f.Add(g.request(), g.request())
	}
	codec := newLenientCodec()
	f.Fuzz(func(t *testing.T, before, b []byte) {
		reused := newReusedRequest()
		for _, m := range [][]byte{before, b} {
			decodeBoth(t, codec, reused, m)
		}
	})
}

// TestReusedRequestKeepsLittle: what a stream keeps between reports is
// bounded whatever the last report held: a report of the most documents
// a report may have, with long rule names and receipts, leaves at most
// keptDocs documents behind, none with its receipt or a name longer than
// a rule's may be.
func TestReusedRequestKeepsLittle(t *testing.T) {
	long := strings.Repeat("n", 4096)
	docs := make([]*pb.SamplingStatistics, maxStatistics)
	for i := range docs {
		docs[i] = &pb.SamplingStatistics{RuleName: fmt.Sprintf("%s%d", long, i), Receipt: long, RequestCount: 1}
	}
	docs[0].RuleName = "rule-0"
	b, err := proto.Marshal(&pb.StreamSamplingRequest{Message: &pb.StreamSamplingRequest_Report{Report: &pb.Report{Statistics: docs}}})
	if err != nil {
		t.Fatal(err)
	}
	codec := newLenientCodec()
	reused := newReusedRequest()
	reused.reset()
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, reused); err != nil {
		t.Fatal(err)
	}
	if n := len(reused.GetReport().GetStatistics()); n != maxStatistics {
		t.Fatalf("%d documents decoded, want %d", n, maxStatistics)
	}
	reused.reset()
	if len(reused.docs) > keptDocs || cap(reused.docs) > keptDocs {
		t.Errorf("%d documents kept (room for %d), want at most %d", len(reused.docs), cap(reused.docs), keptDocs)
	}
	for i, d := range reused.docs {
		if d.doc.GetReceipt() != "" || len(d.doc.GetRuleName()) > maxKeptName {
			t.Errorf("document %d keeps a receipt of %d bytes and a name of %d", i, len(d.doc.GetReceipt()), len(d.doc.GetRuleName()))
		}
	}
	if got := reused.docs[0].doc.GetRuleName(); got != "rule-0" {
		t.Errorf("the first document's name %q was not kept for the next report", got)
	}
}
