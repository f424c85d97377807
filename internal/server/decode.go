package server

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	protov2 "google.golang.org/protobuf/proto"
)

// Bytes that are not the request message (garbage, invalid UTF-8 in a string
// field) are the client's error, INVALID_ARGUMENT. grpc-go says INTERNAL,
// and sends it itself from RecvMsg before the handler or an interceptor can
// map it, so the mapping starts one step earlier: the server's codec
// (lenientCodec) does not fail a request that does not decode, but remembers
// the failure for the message, and every handler (checkedDecoding) asks for
// it as soon as it has received a message.

// lenientCodec is the proto codec, except that a request that does not
// decode leaves the message empty and its error in failed, for
// checkedDecoding to return. It is safe for concurrent use.
type lenientCodec struct {
	encoding.CodecV2
	failed sync.Map // message (a pointer) -> its decoding error
	// nfailed counts the entries of failed, so that check, which every
	// message received goes through, looks in it only when there is
	// something to find (issue 17). A message's failure is stored before
	// the goroutine that received it checks it.
	nfailed atomic.Int64
}

func newLenientCodec() *lenientCodec {
	return &lenientCodec{CodecV2: encoding.GetCodecV2(proto.Name)}
}

func (c *lenientCodec) Unmarshal(data mem.BufferSlice, v any) error {
	var err error
	if r, ok := v.(*reusedRequest); ok {
		err = r.mergeFrom(data)
	} else {
		err = c.CodecV2.Unmarshal(data, v)
	}
	if err == nil {
		return nil
	}
	m, ok := v.(protov2.Message)
	if !ok {
		return err
	}
	protov2.Reset(m)
	c.nfailed.Add(1)
	if _, loaded := c.failed.Swap(v, err); loaded {
		c.nfailed.Add(-1) // the message's earlier failure, never checked
	}
	return nil
}

// Marshal sends a message encoded before SendMsg (encodedMessage) as it is.
func (c *lenientCodec) Marshal(v any) (mem.BufferSlice, error) {
	if e, ok := v.(*encodedMessage); ok {
		return e.data[:], nil
	}
	return c.CodecV2.Marshal(v)
}

// check returns the validation error for v if it did not decode, and
// forgets it.
func (c *lenientCodec) check(v any) error {
	if c.nfailed.Load() == 0 {
		return nil
	}
	err, ok := c.failed.LoadAndDelete(v)
	if !ok {
		return nil
	}
	c.nfailed.Add(-1)
	// The violation names the message: no one field is to blame.
	name := string(v.(protov2.Message).ProtoReflect().Descriptor().FullName())
	return invalid(name, "the bytes received do not decode as this message: "+err.(error).Error())
}

// checkedDecoding registers services on a grpc.Server with each received
// message checked against the codec's failures. A unary request that does not
// decode never reaches the interceptor, so its refusal is put through it
// here, to be logged and counted like any call.
type checkedDecoding struct {
	*grpc.Server
	codec *lenientCodec
}

func (r checkedDecoding) RegisterService(sd *grpc.ServiceDesc, impl any) {
	d := *sd
	d.Methods = slices.Clone(sd.Methods)
	for i := range d.Methods {
		handler := d.Methods[i].Handler
		method := "/" + sd.ServiceName + "/" + d.Methods[i].MethodName
		d.Methods[i].Handler = func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			var bad error
			resp, err := handler(srv, ctx, func(m any) error {
				err := dec(m)
				if bad = r.codec.check(m); bad != nil {
					return bad
				}
				return err
			}, ic)
			if bad == nil || ic == nil {
				return resp, err
			}
			return ic(ctx, nil, &grpc.UnaryServerInfo{Server: srv, FullMethod: method}, func(context.Context, any) (any, error) {
				return nil, bad
			})
		}
	}
	d.Streams = slices.Clone(sd.Streams)
	for i := range d.Streams {
		handler := d.Streams[i].Handler
		d.Streams[i].Handler = func(srv any, ss grpc.ServerStream) error {
			return handler(srv, checkedStream{ServerStream: ss, codec: r.codec})
		}
	}
	r.Server.RegisterService(&d, impl)
}

// checkedStream returns a validation error for a message that did not
// decode.
type checkedStream struct {
	grpc.ServerStream
	codec *lenientCodec
}

func (s checkedStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if bad := s.codec.check(m); bad != nil {
		return bad
	}
	return err
}
