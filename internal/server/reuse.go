package server

import (
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	protov2 "google.golang.org/protobuf/proto"

	pb "github.com/tracesampling/controlplane/gen/controlplane/v1"
)

// reusedRequest is the message a stream receives its reports into, one
// after the other (issue 17: decoding a report made the request, its oneof
// wrapper, the report and its statistics slice anew, a fifth of the
// objects a report allocates). The codec merges into it (mergeFrom) where it would
// reset a message, and reset leaves it as a new message but for those
// parts, emptied, which the merge fills in place: what a report decodes to
// is what it would in a new message. The handler keeps no part of a report
// past its answer (statisticsFromProtoInto copies the documents).
type reusedRequest struct{ *pb.StreamSamplingRequest }

// reportField is the number of StreamSamplingRequest's report.
var reportField = pb.File_controlplane_v1_sampling_proto.Messages().ByName("StreamSamplingRequest").Fields().ByName("report").Number()

// mergeFrom decodes data into r.
func (r reusedRequest) mergeFrom(data mem.BufferSlice) error {
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	b := buf.ReadOnlyData()
	if !hasField(b, reportField) {
		// No report to decode into the one kept: it would be left set,
		// empty, where a new message has none.
		r.Message = nil
	}
	return protov2.UnmarshalOptions{Merge: true}.Unmarshal(b, r.StreamSamplingRequest)
}

// hasField reports whether the encoded message b has a field numbered n at
// its top level; false if b does not parse (the decoding will say why).
func hasField(b []byte, n protowire.Number) bool {
	for len(b) > 0 {
		num, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return false
		}
		if num == n {
			return true
		}
		b = b[l:]
		if l = protowire.ConsumeFieldValue(num, typ, b); l < 0 {
			return false
		}
		b = b[l:]
	}
	return false
}

// reset empties r for the next message, keeping a report's wrapper, the
// report and its statistics slice (but one longer than a report may be,
// which would keep the memory of a refused message).
func (r reusedRequest) reset() {
	w, _ := r.Message.(*pb.StreamSamplingRequest_Report)
	protov2.Reset(r.StreamSamplingRequest)
	if w == nil || w.Report == nil {
		return
	}
	stats := w.Report.Statistics
	protov2.Reset(w.Report)
	if cap(stats) <= maxStatistics {
		clear(stats)
		w.Report.Statistics = stats[:0]
	}
	r.Message = w
}
