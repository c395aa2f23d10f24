package extproc

import (
	"encoding/binary"
	"fmt"
	"io"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// Codec is the gRPC codec the ext_proc server runs with (GRPCServerOptions).
// It is gRPC's proto codec with two changes that matter for buffered request
// bodies of hundreds of KiB:
//
//   - buffers come from BufferPool (no clearing, power-of-two tiers), not
//     gRPC's default pool, which the stock codec uses whatever the server's
//     pool option says;
//   - a request_body message's body is copied once, straight from the
//     received frames into a pooled buffer, instead of being joined into one
//     buffer and then copied again by proto.Unmarshal into a fresh allocation.
//     The gateway hands the buffer back (releaseBody) once it has read the
//     body, so a buffered body makes no garbage.
//
// A client may use it too (the overhead benchmark's Envoy stand-in does, so
// the generator's marshalling costs what Envoy's would, not a 1 MiB clear).
func Codec() encoding.CodecV2 { return codec{pool: sharedPool} }

type codec struct{ pool *bufferPool }

func (codec) Name() string { return "proto" }

func messageOf(v any) (proto.Message, error) {
	switch m := v.(type) {
	case proto.Message:
		return m, nil
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(m), nil
	}
	return nil, fmt.Errorf("extproc codec: %T is not a protobuf message", v)
}

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	m, err := messageOf(v)
	if err != nil {
		return nil, err
	}
	size := proto.Size(m)
	// UseCachedSize is safe right after Size on a message nobody mutates.
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := c.pool.Get(size)
	if _, err := opts.MarshalAppend((*buf)[:0], m); err != nil {
		c.pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	return c.unmarshal(data, v, minPooledBody)
}

// unmarshal takes the body shortcut for messages of at least minBody bytes
// (tests pass 0 to exercise it on small inputs).
func (c codec) unmarshal(data mem.BufferSlice, v any, minBody int) error {
	if req, ok := v.(*extprocv3.ProcessingRequest); ok && data.Len() >= minBody {
		if c.unmarshalBody(data, req) {
			return nil
		}
	}
	m, err := messageOf(v)
	if err != nil {
		return err
	}
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// minPooledBody: smaller messages take the stock path (a small copy).
const minPooledBody = 1 << 10

// Field numbers of envoy.service.ext_proc.v3.ProcessingRequest and HttpBody.
const (
	fieldRequestHeaders   = 2 // the oneof "request" spans fields 2 to 7
	fieldRequestBody      = 4
	fieldResponseTrailers = 7
	fieldHTTPBodyBody     = 1
)

// unmarshalBody decodes a ProcessingRequest holding a request_body with the
// body read from the frames straight into a pooled buffer; every other field
// is decoded by proto.Unmarshal from a small copy. Whatever this shortcut
// could decode differently from proto.Unmarshal (a repeated body or oneof
// member, which proto merges or lets the last win, groups, bad input)
// returns false and takes the stock path; data is left intact for it.
func (c codec) unmarshalBody(data mem.BufferSlice, req *extprocv3.ProcessingRequest) bool {
	r := data.Reader()
	defer r.Close()
	outerHead, outer, ok := readUntil(r, r.Remaining(), fieldRequestBody)
	if !ok {
		return false
	}
	before := r.Remaining()
	innerHead, n, ok := readUntil(r, outer, fieldHTTPBodyBody)
	if !ok {
		return false
	}
	used := before - r.Remaining() // of outer, up to the body's bytes
	if n > outer-used {
		return false
	}
	body := c.pool.Get(n)
	if _, err := io.ReadFull(r, *body); err != nil {
		c.pool.Put(body)
		return false
	}
	innerRest := append(innerHead, make([]byte, outer-used-n)...)
	outerRest := append(outerHead, make([]byte, r.Remaining()-(outer-used-n))...)
	_, err1 := io.ReadFull(r, innerRest[len(innerHead):])
	_, err2 := io.ReadFull(r, outerRest[len(outerHead):])
	hb := &extprocv3.HttpBody{}
	if err1 != nil || err2 != nil || hasField(innerRest, fieldHTTPBodyBody, fieldHTTPBodyBody) ||
		hasField(outerRest, fieldRequestHeaders, fieldResponseTrailers) ||
		proto.Unmarshal(innerRest, hb) != nil || proto.Unmarshal(outerRest, req) != nil {
		c.pool.Put(body)
		return false
	}
	hb.Body = *body
	req.Request = &extprocv3.ProcessingRequest_RequestBody{RequestBody: hb}
	return true
}

// readUntil reads fields from r, within limit bytes, up to the first field
// numbered want of the bytes wire type, and returns the fields before it
// (re-encoded, for proto.Unmarshal) and its length; r is left at its value.
// Not finding it, groups, or bad input: ok is false.
func readUntil(r *mem.Reader, limit int, want protowire.Number) (before []byte, n int, ok bool) {
	end := r.Remaining() - limit
	for r.Remaining() > end {
		num, typ, ok := readTag(r)
		if !ok {
			return nil, 0, false
		}
		if num == want && typ == protowire.BytesType {
			n, ok := readLen(r)
			return before, n, ok && r.Remaining()-n >= end
		}
		before = protowire.AppendTag(before, num, typ)
		switch typ {
		case protowire.VarintType:
			v, err := binary.ReadUvarint(r)
			if err != nil {
				return nil, 0, false
			}
			before = protowire.AppendVarint(before, v)
		case protowire.Fixed32Type, protowire.Fixed64Type, protowire.BytesType:
			size := 4
			if typ == protowire.Fixed64Type {
				size = 8
			} else if typ == protowire.BytesType {
				if size, ok = readLen(r); !ok {
					return nil, 0, false
				}
				before = protowire.AppendVarint(before, uint64(size))
			}
			if size > r.Remaining()-end {
				return nil, 0, false
			}
			before = append(before, make([]byte, size)...)
			if _, err := io.ReadFull(r, before[len(before)-size:]); err != nil {
				return nil, 0, false
			}
		default:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

func readTag(r io.ByteReader) (protowire.Number, protowire.Type, bool) {
	v, err := binary.ReadUvarint(r)
	if err != nil || v>>3 == 0 || v>>3 > uint64(protowire.MaxValidNumber) {
		return 0, 0, false
	}
	return protowire.Number(v >> 3), protowire.Type(v & 7), true
}

func readLen(r *mem.Reader) (int, bool) {
	v, err := binary.ReadUvarint(r)
	if err != nil || v > uint64(r.Remaining()) {
		return 0, false
	}
	return int(v), true
}

// hasField reports whether b, a message's encoding, holds a field numbered
// lo to hi (or does not parse, which sends it to the stock path too).
func hasField(b []byte, lo, hi protowire.Number) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return true
		}
		if num >= lo && num <= hi {
			return true
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return true
		}
		b = b[m:]
	}
	return false
}

// releaseBody gives a request body's buffer back to the pool once the
// gateway is done with it. Only the blocking filter's body handler calls it,
// after which nothing refers to the body. A body that did not come from the
// pool (small, or decoded by the stock path) is dropped or, if its capacity
// happens to be a tier's, recycled: either is safe for a buffer nobody holds.
func releaseBody(b *extprocv3.HttpBody) {
	if b == nil || cap(b.Body) < 1<<minPoolShift {
		return
	}
	buf := b.Body[:0]
	b.Body = nil
	sharedPool.Put(&buf)
}
