package extproc

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/structpb"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/envoytest"
	"github.com/llmrouter/llmrouter/internal/promtest"
)

// fixtureSSE returns the recorded vLLM stream without its comment header.
func fixtureSSE(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/vllm-sse-chat-usage.txt")
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if !strings.HasPrefix(l, "#") {
			keep = append(keep, l)
		}
	}
	return []byte(strings.Join(keep, ""))
}

// chunks cuts b into pieces of n bytes (lines split across chunks on
// purpose), the first after firstDelay, the rest every delay.
func chunks(b []byte, n int, firstDelay, delay time.Duration) []envoytest.Chunk {
	var out []envoytest.Chunk
	for len(b) > 0 {
		k := min(n, len(b))
		d := delay
		if len(out) == 0 {
			d = firstDelay
		}
		out = append(out, envoytest.Chunk{Data: b[:k], Delay: d})
		b = b[k:]
	}
	return out
}

// pickFirst runs filter #1 for request id so the gateway tracks a pick.
func pickFirst(t *testing.T, h *harness, id string) {
	t.Helper()
	res := h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(envoytest.Header{Key: "x-request-id", Value: id}), Body: []byte(chatBody)})
	if res.Err != nil || len(headerValues(res.Headers, HeaderDestination)) != 1 {
		t.Fatalf("filter #1: err=%v headers=%v", res.Err, res.Headers)
	}
}

func waitReport(t *testing.T, f *fakeSched) *llmrouterv1.OutcomeReport {
	t.Helper()
	select {
	case r := <-f.reports:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no outcome report")
		return nil
	}
}

func TestObserveSSEFixture(t *testing.T) {
	fake := newFake(routed("10.0.0.1:8000", "10.0.0.2:8000"))
	h := newHarness(t, fake, testOptions())
	pickFirst(t, h, "sse-1")

	sse := fixtureSSE(t)
	res, err := h.obs.Observe(context.Background(), envoytest.Exchange{
		RequestHeaders:  chatHeaders(envoytest.Header{Key: "x-request-id", Value: "sse-1"}),
		ResponseHeaders: []envoytest.Header{{Key: ":status", Value: "200"}, {Key: "content-type", Value: "text/event-stream; charset=utf-8"}},
		Chunks:          chunks(sse, 700, 30*time.Millisecond, 3*time.Millisecond),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Answers != 0 {
		t.Fatalf("gateway answered %d observability messages; Envoy ignores them and they cost work", res.Answers)
	}
	r := waitReport(t, fake)
	if r.RequestId != fake.lastPick().RequestId || r.Endpoint != "10.0.0.1:8000" || r.Model != "llama" || !r.Success || r.HttpStatus != 200 {
		t.Fatalf("report = %v", r)
	}
	// The fixture's final usage: prompt 46, completion 26.
	if r.PromptTokens != 46 || r.CompletionTokens != 26 {
		t.Fatalf("tokens = %d/%d, want 46/26 from the final usage chunk", r.PromptTokens, r.CompletionTokens)
	}
	if r.Ttft.AsDuration() < 30*time.Millisecond || r.Tpot.AsDuration() <= 0 || r.Duration.AsDuration() < r.Ttft.AsDuration() {
		t.Fatalf("ttft=%v tpot=%v duration=%v", r.Ttft.AsDuration(), r.Tpot.AsDuration(), r.Duration.AsDuration())
	}
	if promtest.Value(t, h.reg, "llmrouter_gateway_completion_tokens_total") != 26 || promtest.Value(t, h.reg, "llmrouter_gateway_prompt_tokens_total") != 46 {
		t.Fatal("token counters not updated")
	}
	if promtest.Value(t, h.reg, "llmrouter_gateway_ttft_seconds") != 1 || promtest.Value(t, h.reg, "llmrouter_gateway_tpot_seconds") != 1 {
		t.Fatal("ttft/tpot histograms not observed")
	}
	if promtest.Value(t, h.reg, "llmrouter_gateway_inflight_requests") != 0 || h.srv.track.len() != 0 {
		t.Fatal("completed request still tracked")
	}
}

func TestObserveSSEWithoutUsageCountsChunks(t *testing.T) {
	fake := newFake(routed("10.0.0.1:8000"))
	h := newHarness(t, fake, testOptions())
	pickFirst(t, h, "sse-2")
	sse := string(fixtureSSE(t))
	sse = regexp.MustCompile(`,"usage":\{[^}]*\}`).ReplaceAllString(sse, "")
	// Content-bearing chunks: non-empty delta content.
	want := int64(strings.Count(sse, `"delta":{"content":"`) - strings.Count(sse, `"delta":{"content":""`))
	// Correlated through the response headers this time (no request headers).
	_, err := h.obs.Observe(context.Background(), envoytest.Exchange{
		ResponseHeaders: []envoytest.Header{{Key: ":status", Value: "200"}, {Key: "content-type", Value: "text/event-stream"}, {Key: "x-request-id", Value: "sse-2"}},
		Chunks:          chunks([]byte(sse), 333, 0, time.Millisecond),
		Attributes: map[string]*structpb.Struct{"envoy.filters.http.ext_proc": {Fields: map[string]*structpb.Value{
			"upstream.address": structpb.NewStringValue("10.0.0.2:8000")}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := waitReport(t, fake)
	if r.CompletionTokens != want || want < 20 {
		t.Fatalf("completion tokens = %d, want %d counted chunks", r.CompletionTokens, want)
	}
	if r.PromptTokens != fake.lastPick().PromptTokens {
		t.Fatalf("prompt tokens = %d, want the gateway's estimate %d", r.PromptTokens, fake.lastPick().PromptTokens)
	}
	if r.Endpoint != "10.0.0.2:8000" {
		t.Fatalf("endpoint = %q, want the upstream.address attribute", r.Endpoint)
	}
}

func TestObserveJSONResponseAndErrors(t *testing.T) {
	fake := newFake(routed("10.0.0.1:8000"))
	h := newHarness(t, fake, testOptions())

	pickFirst(t, h, "json-1")
	body := `{"id":"x","choices":[{"message":{"content":"the \"usage\": word"}}],"usage":{"prompt_tokens":12,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":8}}}`
	if _, err := h.obs.Observe(context.Background(), envoytest.Exchange{
		RequestHeaders:  chatHeaders(envoytest.Header{Key: "x-request-id", Value: "json-1"}),
		ResponseHeaders: []envoytest.Header{{Key: ":status", Value: "200"}, {Key: "content-type", Value: "application/json"}},
		Chunks:          chunks([]byte(body), 40, 0, 0),
	}); err != nil {
		t.Fatal(err)
	}
	r := waitReport(t, fake)
	if !r.Success || r.PromptTokens != 12 || r.CompletionTokens != 7 || r.CachedTokens != 8 {
		t.Fatalf("report = %v", r)
	}

	pickFirst(t, h, "err-1")
	if _, err := h.obs.Observe(context.Background(), envoytest.Exchange{
		RequestHeaders:  chatHeaders(envoytest.Header{Key: "x-request-id", Value: "err-1"}),
		ResponseHeaders: []envoytest.Header{{Key: ":status", Value: "503"}},
	}); err != nil {
		t.Fatal(err)
	}
	if r := waitReport(t, fake); r.Success || r.HttpStatus != 503 || r.Error == "" {
		t.Fatalf("report = %v", r)
	}

	pickFirst(t, h, "reset-1")
	if _, err := h.obs.Observe(context.Background(), envoytest.Exchange{
		RequestHeaders:  chatHeaders(envoytest.Header{Key: "x-request-id", Value: "reset-1"}),
		ResponseHeaders: []envoytest.Header{{Key: ":status", Value: "200"}, {Key: "content-type", Value: "text/event-stream"}},
		Chunks:          chunks(fixtureSSE(t), 500, 0, 0),
		Truncate:        2,
	}); err != nil {
		t.Fatal(err)
	}
	if r := waitReport(t, fake); r.Success || r.Error == "" {
		t.Fatalf("a response cut short must be reported as failed: %v", r)
	}
	if promtest.Value(t, h.reg, "llmrouter_gateway_responses_total", "code", "5xx") != 1 || promtest.Value(t, h.reg, "llmrouter_gateway_responses_total", "code", "reset") != 1 {
		t.Fatal("response classes not counted")
	}
}

func TestObserveWithoutPickIsNotReported(t *testing.T) {
	fake := newFake(routed("10.0.0.1:8000"))
	h := newHarness(t, fake, testOptions())
	if _, err := h.obs.Observe(context.Background(), envoytest.Exchange{
		RequestHeaders:  chatHeaders(envoytest.Header{Key: "x-request-id", Value: "unknown"}),
		ResponseHeaders: []envoytest.Header{{Key: ":status", Value: "200"}, {Key: "content-type", Value: "text/event-stream"}},
		Chunks:          chunks(fixtureSSE(t), 4096, 0, 0),
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "ttft observed", func() bool { return promtest.Value(t, h.reg, "llmrouter_gateway_ttft_seconds") == 1 })
	select {
	case r := <-fake.reports:
		t.Fatalf("reported a request the scheduler never picked: %v", r)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestTrackerBounded(t *testing.T) {
	m := newMetrics(newRegistryForTest(), func() float64 { return 0 }, func() float64 { return 0 })
	tr := newTracker(time.Minute, 3, m)
	now := time.Now()
	for i, id := range []string{"a", "b", "c", "d"} {
		tr.put(&tracked{pickID: id, endpoint: "e"}, now.Add(time.Duration(i)*time.Second))
	}
	if tr.len() != 3 {
		t.Fatalf("tracker holds %d entries, bound is 3", tr.len())
	}
	// Past the TTL the next insert sweeps the expired ones.
	tr.put(&tracked{pickID: "late"}, now.Add(2*time.Minute))
	if tr.len() != 1 || tr.take("late") == nil || tr.take("a") != nil {
		t.Fatalf("expired entries not swept: %d left", tr.len())
	}
}

func TestReportsDoNotBlock(t *testing.T) {
	// A Report that never returns must not hold up observation: reports go
	// through a bounded queue and are dropped (counted) when it is full.
	block := make(chan struct{})
	defer close(block)
	s := &blockingReports{block: block}
	srv := New(testOptions(), s, newRegistryForTest(), zap.NewNop())
	defer srv.Close()
	for range 5000 {
		srv.rep.send(&llmrouterv1.OutcomeReport{RequestId: "x"})
	}
	if promtest.Value(t, srv.m.registry, "llmrouter_gateway_reports_dropped_total") == 0 {
		t.Fatal("a full report queue did not drop")
	}
}

type blockingReports struct{ block chan struct{} }

func (b *blockingReports) Pick(context.Context, *llmrouterv1.PickRequest, func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
	return nil, nil
}
func (b *blockingReports) Report(ctx context.Context, _ *llmrouterv1.OutcomeReport) error {
	select {
	case <-b.block:
	case <-ctx.Done():
	}
	return nil
}

func TestObserveOnAnotherGatewayViaForwardedMetadata(t *testing.T) {
	// A pool of gateways: filter #1's stream reached gateway A, filter #2's
	// reaches gateway B, which knows the request only from the metadata Envoy
	// forwards (no request headers, no x-request-id in the response).
	fakeA := newFake(routed("10.0.0.8:8000", "10.0.0.9:8000"))
	a := newHarness(t, fakeA, testOptions())
	res := a.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(envoytest.Header{Key: "x-request-id", Value: "pool-1"}), Body: []byte(chatBody)})
	if res.Err != nil || res.Metadata[GatewayNamespace] == nil {
		t.Fatalf("err=%v metadata=%v dropped=%v", res.Err, res.Metadata, res.DroppedNamespaces)
	}
	fakeB := newFake(routed())
	b := newHarness(t, fakeB, testOptions())
	time.Sleep(20 * time.Millisecond)
	if _, err := b.obs.Observe(context.Background(), envoytest.Exchange{
		ResponseHeaders: []envoytest.Header{{Key: ":status", Value: "200"}, {Key: "content-type", Value: "text/event-stream"}},
		Chunks:          chunks(fixtureSSE(t), 2048, 0, 0),
		Forwarded:       res.Metadata,
	}); err != nil {
		t.Fatal(err)
	}
	r := waitReport(t, fakeB)
	if r.RequestId != fakeA.lastPick().RequestId || r.Endpoint != "10.0.0.8:8000" || r.Model != "llama" || r.CompletionTokens != 26 {
		t.Fatalf("report = %v", r)
	}
	if r.Ttft.AsDuration() < 20*time.Millisecond {
		t.Fatalf("ttft %v not measured from the arrival at gateway A", r.Ttft.AsDuration())
	}
}
