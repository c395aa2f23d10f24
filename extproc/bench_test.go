package extproc

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.uber.org/zap"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/envoytest"
)

// benchBody is a chat request whose prompt is about size bytes, in a few
// messages, JSON-escaped like real clients send (newlines, quotes).
func benchBody(size int) []byte {
	para := "The quick brown fox \"jumps\" over the lazy dog.\nPack my box with five dozen liquor jugs. "
	text := strings.Repeat(para, size/len(para)+1)[:size]
	msgs := []map[string]string{
		{"role": "system", "content": "You are a helpful assistant."},
		{"role": "user", "content": text[:size/2]},
		{"role": "assistant", "content": "Noted."},
		{"role": "user", "content": text[size/2:]},
	}
	b, _ := json.Marshal(map[string]any{"model": "llama-3-8b", "messages": msgs, "stream": true, "max_tokens": 256, "user": "bench"})
	return b
}

var benchSizes = []int{4 << 10, 256 << 10}

func productionOptions() Options { return OptionsFromConfig(config.Default().Gateway) }

// BenchmarkParseBody: the parser alone.
func BenchmarkParseBody(b *testing.B) {
	for _, size := range benchSizes {
		body := benchBody(size)
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			buf := make([]byte, 0, 64<<10)
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				out, err := ParseBody(llmrouterv1.ApiKind_API_KIND_CHAT_COMPLETIONS, body, 65536, buf[:0])
				if err != nil {
					b.Fatal(err)
				}
				buf = out.Prefix[:0]
			}
		})
	}
}

// nopStream stands in for the gRPC stream when the body handler is timed
// without transport.
type nopStream struct {
	extprocv3.ExternalProcessor_ProcessServer
}

func (nopStream) Context() context.Context { return context.Background() }

// BenchmarkHandleBody: the gateway's own work on a request body (parse,
// hash the bounded prefix, build the pick request and Envoy's answer) with
// an instant scheduler, at production settings. This is the gateway's share
// of the added latency; p99 is reported.
func BenchmarkHandleBody(b *testing.B) {
	for _, size := range benchSizes {
		body := benchBody(size)
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			srv := New(productionOptions(), newFake(routed("10.0.0.1:8000", "10.0.0.2:8000")), newRegistryForTest(), zap.NewNop())
			defer srv.Close()
			fake := srv.sched.(*fakeSched)
			var lat []time.Duration
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				st := &reqState{api: llmrouterv1.ApiKind_API_KIND_CHAT_COMPLETIONS, requestID: "bench", stream: nopStream{}}
				t0 := time.Now()
				resp := srv.onRequestBody(context.Background(), st, &extprocv3.HttpBody{Body: body, EndOfStream: true})
				lat = append(lat, time.Since(t0))
				if resp.GetRequestBody() == nil {
					b.Fatal("no body response")
				}
				fake.mu.Lock()
				fake.picks = fake.picks[:0]
				fake.mu.Unlock()
			}
			reportPercentiles(b, lat)
		})
	}
}

// BenchmarkRequestPath: one whole request through ext_proc over loopback
// gRPC, as Envoy drives it (headers message and answer, buffered body
// message and answer), with an instant scheduler. Includes the transport, so
// it bounds what Envoy would add per request.
func BenchmarkRequestPath(b *testing.B) {
	for _, size := range benchSizes {
		body := benchBody(size)
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			fake := newFake(routed("10.0.0.1:8000", "10.0.0.2:8000"))
			h := newHarness(b, fake, productionOptions())
			h.f.MessageTimeout = 5 * time.Second // measure, do not fail open, on a busy machine
			req := envoytest.Request{Headers: chatHeaders(envoytest.Header{Key: "x-request-id", Value: "bench"}), Body: body}
			var lat []time.Duration
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				t0 := time.Now()
				res := h.f.Do(context.Background(), req)
				lat = append(lat, time.Since(t0))
				if res.Err != nil || len(headerValues(res.Headers, HeaderDestination)) != 1 {
					b.Fatalf("err=%v", res.Err)
				}
				fake.mu.Lock()
				fake.picks = fake.picks[:0]
				fake.mu.Unlock()
			}
			reportPercentiles(b, lat)
		})
	}
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	p := func(q float64) float64 { return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))].Microseconds()) }
	b.ReportMetric(p(0.5), "p50-µs")
	b.ReportMetric(p(0.99), "p99-µs")
}
