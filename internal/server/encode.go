package server

import (
	"math"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// encodedMessage is a message encoded before SendMsg, which the server's
// codec sends as it is. A stream's targets answer is encoded this way
// (encodeTargets): protobuf's encoding of it, and the answer and encoding
// made anew for each report (gRPC lets nothing change a message given to
// SendMsg), were about a tenth of a report's cost (issue 17). With the
// encoding its own, a stream reuses one answer message, which gRPC never
// sees.
type encodedMessage struct {
	data [1]mem.Buffer // what the codec returns, made with the message
}

// encodeTargets encodes m, a targets answer. Its encoding is protobuf's,
// field by field, but for unknown fields, which the answers the server
// makes have none of. TestEncodeTargetsAsProtobuf holds it to protobuf's.
// It returns nil for a string that is not valid UTF-8, which protobuf
// refuses to encode. The buffer is p's, which gRPC gives back once written.
func (p *answerPool) encodeTargets(m *pb.StreamSamplingResponse) *encodedMessage {
	set := m.GetTargets()
	if !validStrings(set) {
		return nil
	}
	n := sizeTargetSet(set)
	buf := p.Get(protowire.SizeTag(2) + protowire.SizeBytes(n))
	b := protowire.AppendTag((*buf)[:0], 2, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	*buf = appendTargetSet(b, set)
	return &encodedMessage{data: [1]mem.Buffer{mem.NewBuffer(buf, p)}}
}

// answerPool holds the buffers answers are encoded into, which gRPC gives
// back once written: an answer is about 180 bytes, and gRPC takes back only
// buffers of more than mem.BufferPoolingThreshold (1 KiB), so they are made
// larger than that, rather than each answer's being memory for the
// collector. The sampling service has one; its zero value is ready.
type answerPool struct{ pool sync.Pool }

// answerBufferCap is the capacity of the buffers kept: above gRPC's
// threshold, and room for a one-target answer many times over.
const answerBufferCap = 2048

func (p *answerPool) Get(n int) *[]byte {
	if n > answerBufferCap {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.pool.Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, answerBufferCap)
	return &b
}

func (p *answerPool) Put(b *[]byte) {
	if cap(*b) == answerBufferCap {
		p.pool.Put(b)
	}
}

func validStrings(s *pb.TargetSet) bool {
	for _, t := range s.GetTargets() {
		if !utf8.ValidString(t.GetRuleName()) || !utf8.ValidString(t.GetReceipt()) {
			return false
		}
	}
	for _, r := range s.GetRejected() {
		if !utf8.ValidString(r.GetRuleName()) || !utf8.ValidString(r.GetCode()) || !utf8.ValidString(r.GetMessage()) {
			return false
		}
	}
	return true
}

// The sizes and encodings below follow protobuf's for proto3 fields:
// scalars at their zero value are left out (a double only if its bits are
// zero: -0 is sent), message fields set are sent even if empty, in the
// order of their numbers.

func sizeTargetSet(s *pb.TargetSet) int {
	n := 0
	for _, t := range s.GetTargets() {
		n += protowire.SizeTag(1) + protowire.SizeBytes(sizeTarget(t))
	}
	for _, r := range s.GetRejected() {
		n += protowire.SizeTag(2) + protowire.SizeBytes(sizeRejected(r))
	}
	n += sizeVarintField(3, uint64(s.GetRulesVersion()))
	if d := s.GetReportInterval(); d != nil {
		n += protowire.SizeTag(4) + protowire.SizeBytes(sizeDuration(d))
	}
	return n + sizeVarintField(5, s.GetAckedSeq())
}

func appendTargetSet(b []byte, s *pb.TargetSet) []byte {
	for _, t := range s.GetTargets() {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizeTarget(t)))
		b = appendTarget(b, t)
	}
	for _, r := range s.GetRejected() {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizeRejected(r)))
		b = appendRejected(b, r)
	}
	b = appendVarintField(b, 3, uint64(s.GetRulesVersion()))
	if d := s.GetReportInterval(); d != nil {
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizeDuration(d)))
		b = appendSecondsNanos(b, d.GetSeconds(), d.GetNanos())
	}
	return appendVarintField(b, 5, s.GetAckedSeq())
}

func sizeTarget(t *pb.SamplingTarget) int {
	n := sizeStringField(1, t.GetRuleName()) + sizeDoubleField(2, t.GetReservoirQuota())
	if ts := t.GetReservoirQuotaExpireTime(); ts != nil {
		n += protowire.SizeTag(3) + protowire.SizeBytes(sizeTimestamp(ts))
	}
	n += sizeDoubleField(4, t.GetFixedRate()) + sizeStringField(5, t.GetReceipt())
	if bo := t.GetBoost(); bo != nil {
		n += protowire.SizeTag(20) + protowire.SizeBytes(sizeBoost(bo))
	}
	return n
}

func appendTarget(b []byte, t *pb.SamplingTarget) []byte {
	b = appendStringField(b, 1, t.GetRuleName())
	b = appendDoubleField(b, 2, t.GetReservoirQuota())
	if ts := t.GetReservoirQuotaExpireTime(); ts != nil {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizeTimestamp(ts)))
		b = appendSecondsNanos(b, ts.GetSeconds(), ts.GetNanos())
	}
	b = appendDoubleField(b, 4, t.GetFixedRate())
	b = appendStringField(b, 5, t.GetReceipt())
	if bo := t.GetBoost(); bo != nil {
		b = protowire.AppendTag(b, 20, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizeBoost(bo)))
		b = appendBoost(b, bo)
	}
	return b
}

func sizeBoost(bo *pb.SamplingBoost) int {
	n := sizeDoubleField(1, bo.GetRate())
	if ts := bo.GetExpireTime(); ts != nil {
		n += protowire.SizeTag(2) + protowire.SizeBytes(sizeTimestamp(ts))
	}
	return n
}

func appendBoost(b []byte, bo *pb.SamplingBoost) []byte {
	b = appendDoubleField(b, 1, bo.GetRate())
	if ts := bo.GetExpireTime(); ts != nil {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(sizeTimestamp(ts)))
		b = appendSecondsNanos(b, ts.GetSeconds(), ts.GetNanos())
	}
	return b
}

func sizeRejected(r *pb.RejectedStatistics) int {
	return sizeStringField(1, r.GetRuleName()) + sizeVarintField(2, uint64(int64(r.GetIndex()))) +
		sizeStringField(3, r.GetCode()) + sizeStringField(4, r.GetMessage())
}

func appendRejected(b []byte, r *pb.RejectedStatistics) []byte {
	b = appendStringField(b, 1, r.GetRuleName())
	b = appendVarintField(b, 2, uint64(int64(r.GetIndex()))) // an int32 is sign-extended
	b = appendStringField(b, 3, r.GetCode())
	return appendStringField(b, 4, r.GetMessage())
}

func sizeTimestamp(ts *timestamppb.Timestamp) int {
	return sizeVarintField(1, uint64(ts.GetSeconds())) + sizeVarintField(2, uint64(int64(ts.GetNanos())))
}

func sizeDuration(d *durationpb.Duration) int {
	return sizeVarintField(1, uint64(d.GetSeconds())) + sizeVarintField(2, uint64(int64(d.GetNanos())))
}

func appendSecondsNanos(b []byte, seconds int64, nanos int32) []byte {
	b = appendVarintField(b, 1, uint64(seconds))
	return appendVarintField(b, 2, uint64(int64(nanos)))
}

func sizeVarintField(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
}

func sizeDoubleField(num protowire.Number, v float64) int {
	if math.Float64bits(v) == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeFixed64()
}

func appendDoubleField(b []byte, num protowire.Number, v float64) []byte {
	if math.Float64bits(v) == 0 {
		return b
	}
	return protowire.AppendFixed64(protowire.AppendTag(b, num, protowire.Fixed64Type), math.Float64bits(v))
}

func sizeStringField(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

func appendStringField(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
}
