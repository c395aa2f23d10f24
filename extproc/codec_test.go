package extproc

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/envoytest"
	"github.com/llmrouter/llmrouter/internal/prompthash"
)

// frames cuts b into buffers of at most size bytes, as gRPC hands a message
// read from several HTTP/2 frames to the codec.
func frames(b []byte, size int) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > 0 {
		n := min(size, len(b))
		s = append(s, mem.SliceBuffer(bytes.Clone(b[:n])))
		b = b[n:]
	}
	return s
}

// sameAsProto decodes wire with the codec (cut into frames of each size) and
// with proto.Unmarshal, and fails unless both fail or both give equal
// messages.
func sameAsProto(t *testing.T, wire []byte) {
	t.Helper()
	want := &extprocv3.ProcessingRequest{}
	wantErr := proto.Unmarshal(wire, want)
	for _, size := range []int{1, 7, 16 << 10, len(wire) + 1} {
		got := &extprocv3.ProcessingRequest{}
		err := Codec().Unmarshal(frames(wire, size), got)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("frames of %d: codec error %v, proto error %v", size, err, wantErr)
		}
		if err == nil && !proto.Equal(got, want) {
			t.Fatalf("frames of %d: codec decoded a different message", size)
		}
	}
}

func bodyRequest(body []byte) *extprocv3.ProcessingRequest {
	md, _ := structpb.NewStruct(map[string]any{"k": "v"})
	return &extprocv3.ProcessingRequest{
		Request:         &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}},
		MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"ns": md}},
	}
}

// The codec decodes what proto.Unmarshal decodes, however the message is cut
// into frames, including the encodings its shortcut must refuse: body not
// first, a repeated body (the last wins), a second oneof member.
func TestCodecDecodesLikeProto(t *testing.T) {
	big := []byte(strings.Repeat(`{"model":"m","messages":[]} `, 10000))
	wire, err := proto.Marshal(bodyRequest(big))
	if err != nil {
		t.Fatal(err)
	}
	sameAsProto(t, wire)

	hdrs := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "x", RawValue: big[:2000]}}}}}}
	hwire, _ := proto.Marshal(hdrs)
	sameAsProto(t, hwire)

	// end_of_stream before body, then a second body field: the last wins.
	var inner []byte
	inner = protowire.AppendTag(inner, 2, protowire.VarintType)
	inner = protowire.AppendVarint(inner, 1)
	inner = protowire.AppendTag(inner, 1, protowire.BytesType)
	inner = protowire.AppendBytes(inner, big[:3000])
	inner = protowire.AppendTag(inner, 1, protowire.BytesType)
	inner = protowire.AppendBytes(inner, big[100:200])
	var outer []byte
	outer = protowire.AppendTag(outer, fieldRequestBody, protowire.BytesType)
	outer = protowire.AppendBytes(outer, inner)
	sameAsProto(t, outer)

	// body first but repeated later inside the same HttpBody.
	inner = inner[:0]
	inner = protowire.AppendTag(inner, 1, protowire.BytesType)
	inner = protowire.AppendBytes(inner, big[:3000])
	inner = protowire.AppendTag(inner, 1, protowire.BytesType)
	inner = protowire.AppendBytes(inner, nil)
	outer = protowire.AppendTag(outer[:0], fieldRequestBody, protowire.BytesType)
	outer = protowire.AppendBytes(outer, inner)
	sameAsProto(t, outer)

	// a second request_body after the first: proto merges them.
	merged := append(bytes.Clone(wire), wire...)
	sameAsProto(t, merged)

	// request_body then request_headers: the last oneof member wins.
	sameAsProto(t, append(bytes.Clone(wire), hwire...))

	// truncated and corrupt input fail as proto fails.
	sameAsProto(t, wire[:len(wire)/2])
	bad := bytes.Clone(wire)
	bad[1] = 0xff
	sameAsProto(t, bad)
}

// A body decoded by the codec lives in a pooled buffer: releasing it hands
// the buffer back, and the next body of a similar size reuses it instead of
// allocating.
func TestCodecBodyBufferIsReused(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 100<<10)
	wire, _ := proto.Marshal(bodyRequest(body))
	reused := false
	for range 20 { // sync.Pool may drop an entry now and then
		first := &extprocv3.ProcessingRequest{}
		if err := Codec().Unmarshal(frames(wire, 16<<10), first); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first.GetRequestBody().GetBody(), body) {
			t.Fatal("body decoded wrong")
		}
		p := &first.GetRequestBody().GetBody()[0]
		releaseBody(first.GetRequestBody())
		if first.GetRequestBody().Body != nil {
			t.Fatal("released body still attached to the message")
		}
		second := &extprocv3.ProcessingRequest{}
		if err := Codec().Unmarshal(frames(wire, 16<<10), second); err != nil {
			t.Fatal(err)
		}
		if &second.GetRequestBody().GetBody()[0] == p {
			reused = true
			break
		}
	}
	if !reused {
		t.Fatal("a released body buffer was never reused")
	}
}

// The codec's marshalling round-trips through proto.
func TestCodecMarshal(t *testing.T) {
	for _, body := range [][]byte{[]byte("small"), bytes.Repeat([]byte("y"), 64<<10)} {
		data, err := Codec().Marshal(bodyRequest(body))
		if err != nil {
			t.Fatal(err)
		}
		got := &extprocv3.ProcessingRequest{}
		if err := proto.Unmarshal(data.Materialize(), got); err != nil || !proto.Equal(got, bodyRequest(body)) {
			t.Fatalf("round trip of a %d-byte body: %v", len(body), err)
		}
		data.Free()
	}
	if _, err := Codec().Marshal("not a message"); err == nil {
		t.Fatal("marshalling a string succeeded")
	}
}

// FuzzCodecUnmarshal: on any input and any framing the codec agrees with
// proto.Unmarshal. The body shortcut is taken at any size here, so small
// inputs (which the fuzzer mutates far faster) exercise it.
func FuzzCodecUnmarshal(f *testing.F) {
	wire, _ := proto.Marshal(bodyRequest(bytes.Repeat([]byte("z"), 40)))
	f.Add(wire, uint16(100))
	f.Add(append(bytes.Clone(wire), wire...), uint16(7))
	f.Fuzz(func(t *testing.T, wire []byte, cut uint16) {
		want := &extprocv3.ProcessingRequest{}
		wantErr := proto.Unmarshal(wire, want)
		got := &extprocv3.ProcessingRequest{}
		err := Codec().(codec).unmarshal(frames(wire, int(cut)%64+1), got, 0)
		if (err != nil) != (wantErr != nil) || (err == nil && !proto.Equal(got, want)) {
			t.Fatalf("codec (err %v) and proto (err %v) disagree", err, wantErr)
		}
	})
}

// Large buffered bodies sent concurrently through the server (decoded by the
// codec into pooled buffers that are recycled after each request) are each
// routed and hashed from their own text, not another request's.
func TestLargeBodiesThroughServerKeepTheirOwnHashes(t *testing.T) {
	fake := newFake(routed("10.0.0.1:8000"))
	opt := testOptions()
	// A 16 KiB fine window, so most of each 40 KiB body is hashed in tail
	// blocks (the defaults').
	opt.MaxPrefixChars = 16 << 10
	// What is asserted is the text each pick was hashed from, not latency:
	// 64 bodies of 40 KiB at once missed the 200 ms message timeout on a
	// busy 2-core machine (failed open, "not routed"), and could miss the
	// 150 ms pick timeout.
	opt.PickTimeout = 10 * time.Second
	h := newHarness(t, fake, opt)
	h.f.MessageTimeout = 10 * time.Second
	const n = 64
	want := map[string][]uint64{}
	bodies := map[string][]byte{}
	for i := range n {
		id := fmt.Sprintf("big-%d", i)
		text := strings.Repeat(fmt.Sprintf("request %d says hello. ", i), (40<<10)/20)
		// The model names the body in the pick (its request id is the
		// gateway's own pick id).
		bodies[id] = []byte(fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}]}`, id, text))
		rendered := prompthash.RenderChat([]prompthash.Message{{Role: "user", Content: text}})
		want[id], _ = prompthash.Tiered(nil, prompthash.Seed(id, ""), rendered, opt.BlockChars, opt.MaxPrefixChars, config.Default().Gateway.TailBlockChars, config.Default().Gateway.MaxHashedChars)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for id, body := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(envoytest.Header{Key: "x-request-id", Value: id}), Body: body})
			if res.Err != nil || len(headerValues(res.Headers, HeaderDestination)) != 1 {
				errs <- fmt.Errorf("%s: not routed: %v", id, res.Err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if len(fake.picks) != n {
		t.Fatalf("%d picks, want %d", len(fake.picks), n)
	}
	for _, p := range fake.picks {
		if !slices.Equal(p.PromptBlockHashes, want[p.Model]) {
			t.Errorf("%s: block hashes differ from its body's", p.Model)
		}
	}
}
