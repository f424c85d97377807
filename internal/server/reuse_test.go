package server

import (
	"fmt"
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
			reused := reusedRequest{new(pb.StreamSamplingRequest)}
			for i, b := range tc.messages {
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
					t.Fatalf("message %d: error %v, in a new message %v", i, err, wantErr)
				}
				if diff := cmp.Diff(fresh, reused.StreamSamplingRequest, protocmp.Transform()); diff != "" {
					t.Errorf("message %d decoded into the reused message differs from a new one's (-new +reused):\n%s", i, diff)
				}
				if (fresh.GetReport() == nil) != (reused.GetReport() == nil) {
					t.Errorf("message %d: report %v, in a new message %v", i, reused.GetReport(), fresh.GetReport())
				}
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
			reused := reusedRequest{new(pb.StreamSamplingRequest)}
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
