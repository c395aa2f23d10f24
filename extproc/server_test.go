package extproc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/envoy"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/envoytest"
	"github.com/llmrouter/llmrouter/internal/prompthash"
	"github.com/llmrouter/llmrouter/internal/promtest"
	"github.com/llmrouter/llmrouter/internal/sessionkey"
)

const chatBody = `{"model":"llama","user":"alice","max_completion_tokens":64,"stream":true,
 "stream_options":{"include_usage":true},
 "messages":[{"role":"system","content":"You are terse and helpful."},
             {"content":[{"type":"text","text":"Say hello"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"to Sam, \"nicely\"."}],"role":"user"}]}`

func TestPickWrittenAsHeaderAndMetadata(t *testing.T) {
	fake := newFake(func(context.Context, *llmrouterv1.PickRequest, func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
		return &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_ROUTED,
			Endpoints: []string{"10.0.0.1:8000", "10.0.0.2:8000"}, PrefillEndpoint: "10.0.0.3:8000", PrefillBootstrapPort: 8998}, nil
	})
	h := newHarness(t, fake, testOptions())
	res := h.f.Do(context.Background(), envoytest.Request{
		Headers: chatHeaders(
			envoytest.Header{Key: "x-request-id", Value: "req-1"},
			envoytest.Header{Key: "x-llmrouter-priority", Value: "5"},
			envoytest.Header{Key: HeaderDestination, Value: "10.9.9.9:1"},
			envoytest.Header{Key: HeaderPrefiller, Value: "10.9.9.9:2"},
			envoytest.Header{Key: HeaderPrefillerBootstrap, Value: "1"},
		),
		Body: []byte(chatBody),
	})
	if res.Err != nil || !res.Continued || res.Immediate != nil {
		t.Fatalf("want a continued request, got err=%v continued=%v immediate=%v", res.Err, res.Continued, res.Immediate)
	}
	if len(res.Refused) > 0 || len(res.ValueOnly) > 0 {
		t.Fatalf("mutations Envoy would refuse or blank: refused=%v value_only=%v", res.Refused, res.ValueOnly)
	}
	if got := headerValues(res.Headers, HeaderDestination); !slices.Equal(got, []string{"10.0.0.1:8000,10.0.0.2:8000"}) {
		t.Fatalf("%s upstream = %q, want only the pick", HeaderDestination, got)
	}
	if got := headerValues(res.Headers, HeaderPrefiller); !slices.Equal(got, []string{"10.0.0.3:8000"}) {
		t.Fatalf("%s upstream = %q, want the prefill pick only", HeaderPrefiller, got)
	}
	if got := headerValues(res.Headers, HeaderPrefillerBootstrap); !slices.Equal(got, []string{"8998"}) {
		t.Fatalf("%s upstream = %q, want the prefill's registered port only", HeaderPrefillerBootstrap, got)
	}
	md := res.Metadata[MetadataNamespace]
	if md == nil || md.Fields[HeaderDestination].GetStringValue() != "10.0.0.1:8000,10.0.0.2:8000" {
		t.Fatalf("envoy.lb metadata = %v", md)
	}

	p := fake.lastPick()
	if len(p.RequestId) != 36 || p.RequestId == "req-1" || p.Model != "llama" || p.Api != llmrouterv1.ApiKind_API_KIND_CHAT_COMPLETIONS ||
		p.MaxTokens != 64 || !p.Stream || p.LoraAdapter != "llama" || p.SessionKey != sessionkey.Digest("alice") || p.Priority != 0 || p.BlockChars != 16 {
		t.Fatalf("pick request = %v", p)
	}
	text := prompthash.RenderChat([]prompthash.Message{
		{Role: "system", Content: "You are terse and helpful."},
		{Role: "user", Content: "Say hello\nto Sam, \"nicely\"."},
	})
	want := prompthash.Blocks(nil, prompthash.Seed("llama", ""), text, 16, 1024)
	if len(want) == 0 || !slices.Equal(p.PromptBlockHashes, want) {
		t.Fatalf("block hashes = %v, want %v", p.PromptBlockHashes, want)
	}
	if p.PromptTokens != prompthash.EstimateTokens(len(text), 4) {
		t.Fatalf("prompt tokens = %d, want %d", p.PromptTokens, prompthash.EstimateTokens(len(text), 4))
	}
	if promtest.Value(t, h.reg, "llmrouter_gateway_requests_total", "api", "chat_completions", "outcome", "routed") != 1 {
		t.Fatal("routed request not counted")
	}
	if promtest.Value(t, h.reg, "llmrouter_gateway_pick_duration_seconds") != 1 {
		t.Fatal("pick duration not observed")
	}
}

func TestClientDestinationRemovedOnPassthrough(t *testing.T) {
	fake := newFake(routed("10.0.0.1:8000"))
	h := newHarness(t, fake, testOptions())
	res := h.f.Do(context.Background(), envoytest.Request{
		Headers: []envoytest.Header{{Key: ":method", Value: "GET"}, {Key: ":path", Value: "/v1/models"},
			{Key: "x-request-id", Value: "r"}, {Key: HeaderDestination, Value: "10.9.9.9:1"}},
	})
	if res.Err != nil || !res.Continued {
		t.Fatalf("err=%v continued=%v", res.Err, res.Continued)
	}
	if got := headerValues(res.Headers, HeaderDestination); len(got) != 0 {
		t.Fatalf("client-sent %s reached upstream: %q", HeaderDestination, got)
	}
	if fake.pickCount() != 0 {
		t.Fatal("an unknown path was picked")
	}
}

func TestRequestIDAddedWhenMissing(t *testing.T) {
	fake := newFake(routed("10.0.0.1:8000"))
	h := newHarness(t, fake, testOptions())
	res := h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(), Body: []byte(chatBody)})
	ids := headerValues(res.Headers, HeaderRequestID)
	if res.Err != nil || len(ids) != 1 || len(ids[0]) != 36 {
		t.Fatalf("err=%v x-request-id=%q", res.Err, ids)
	}
	md := res.Metadata[GatewayNamespace].GetFields()
	if md[MetadataKeyRequestID].GetStringValue() != ids[0] || md[MetadataKeyPickID].GetStringValue() != fake.lastPick().RequestId {
		t.Fatalf("metadata %v: want request id %q and the pick's id %q", md, ids[0], fake.lastPick().RequestId)
	}
}

func TestQueuedSendsOverrideBeforeWaiting(t *testing.T) {
	fake := newFake(func(ctx context.Context, _ *llmrouterv1.PickRequest, queued func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
		queued(&llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_QUEUED, MaxWait: durationpb.New(2 * time.Second)})
		// Hold the request well past Envoy's 200 ms message timeout and
		// the 150 ms pick timeout, counted from the QUEUED answer (not
		// from the test's start, which a slow run could spend reaching
		// it): only the override keeps the stream alive.
		select {
		case <-time.After(600 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_ROUTED, Endpoints: []string{"10.0.0.7:8000"}}, nil
	})
	h := newHarness(t, fake, testOptions())
	res := h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(envoytest.Header{Key: "x-request-id", Value: "q"}), Body: []byte(chatBody)})
	if res.Err != nil {
		t.Fatalf("queued request failed: %v", res.Err)
	}
	if want := h.opts.WaitScheduleTimeout + QueueTimeoutSlack; !slices.Equal(res.Overrides, []time.Duration{want}) {
		t.Fatalf("overrides = %v, want [%v]", res.Overrides, want)
	}
	var kinds []string
	var overrideAt, answerAt time.Time
	for _, e := range res.Events {
		kinds = append(kinds, e.Kind)
		switch e.Kind {
		case "override":
			overrideAt = e.At
		case "answer:request_body":
			answerAt = e.At
		}
	}
	if want := []string{"sent:request_headers", "answer:request_headers", "sent:request_body", "override", "answer:request_body"}; !slices.Equal(kinds, want) {
		t.Fatalf("events = %v, want %v", kinds, want)
	}
	if answerAt.Sub(overrideAt) < 300*time.Millisecond {
		t.Fatalf("final answer %v after the override; it should come after the queue wait", answerAt.Sub(overrideAt))
	}
	if got := headerValues(res.Headers, HeaderDestination); !slices.Equal(got, []string{"10.0.0.7:8000"}) {
		t.Fatalf("destination = %q", got)
	}
}

// TestQueuedThenShedAnswers429: a request the scheduler queued and then
// shed at its wait_schedule_timeout (REJECTED 429 after QUEUED) reaches the
// client at once as Envoy's local reply: status 429, Retry-After in whole
// seconds, an OpenAI error body — after the override that kept the stream
// alive while it waited, and with no destination.
func TestQueuedThenShedAnswers429(t *testing.T) {
	fake := newFake(func(ctx context.Context, _ *llmrouterv1.PickRequest, queued func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
		queued(&llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_QUEUED, MaxWait: durationpb.New(2 * time.Second)})
		select {
		case <-time.After(400 * time.Millisecond): // past Envoy's 200 ms message timeout
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_REJECTED, HttpStatus: 429, RetryAfterSeconds: 4,
			Reason: "every instance serving model \"m\" stayed saturated for 10s (llm_gateway.wait_schedule_timeout)"}, nil
	})
	h := newHarness(t, fake, testOptions())
	res := h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(envoytest.Header{Key: "x-request-id", Value: "shed"}), Body: []byte(chatBody)})
	if res.Err != nil {
		t.Fatalf("shed request: %v", res.Err)
	}
	if len(res.Overrides) != 1 {
		t.Fatalf("overrides = %v, want one before the wait", res.Overrides)
	}
	imm := res.Immediate
	if imm == nil || imm.Status != 429 {
		t.Fatalf("immediate = %+v, want a 429 local reply", imm)
	}
	if ra, _ := envoytest.Get(imm.Headers, "retry-after"); ra != "4" {
		t.Fatalf("retry-after = %q, want \"4\"", ra)
	}
	if !strings.Contains(string(imm.Body), "stayed saturated") || !strings.Contains(string(imm.Body), "rate_limit_exceeded") {
		t.Fatalf("body %s: want the reason in an OpenAI error", imm.Body)
	}
	if got := headerValues(res.Headers, HeaderDestination); len(got) != 0 {
		t.Fatalf("a shed request carried a destination: %q", got)
	}
}

func TestQueuedWithoutMaxMessageTimeoutFailsOpen(t *testing.T) {
	// The client honours Envoy's rule: with max_message_timeout 0 the
	// override is ignored, the message times out, failure_mode_allow lets
	// the request continue unmodified.
	fake := newFake(func(ctx context.Context, _ *llmrouterv1.PickRequest, queued func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
		queued(&llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_QUEUED})
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
		return &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_ROUTED, Endpoints: []string{"10.0.0.7:8000"}}, nil
	})
	h := newHarness(t, fake, testOptions())
	h.f.MaxMessageTimeout = 0
	res := h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(envoytest.Header{Key: "x-request-id", Value: "q"}), Body: []byte(chatBody)})
	if !errors.Is(res.Err, envoytest.ErrTimeout) || !res.Continued || len(res.Overrides) != 0 {
		t.Fatalf("err=%v continued=%v overrides=%v", res.Err, res.Continued, res.Overrides)
	}
	if got := headerValues(res.Headers, HeaderDestination); len(got) != 0 {
		t.Fatalf("a timed-out request carried a pick: %q", got)
	}
}

func TestRejections(t *testing.T) {
	for _, tc := range []struct {
		name       string
		resp       *llmrouterv1.PickResponse
		wantStatus int
		wantCode   string
		retryAfter string
	}{
		{"queue full", &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_REJECTED, HttpStatus: 429, RetryAfterSeconds: 3, Reason: "admission queue full"}, 429, "rate_limit_exceeded", "3"},
		{"unknown model", &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_REJECTED, HttpStatus: 404}, 404, "model_not_found", ""},
		{"no instance", &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_REJECTED, HttpStatus: 503}, 0, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(func(context.Context, *llmrouterv1.PickRequest, func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
				return tc.resp, nil
			})
			h := newHarness(t, fake, testOptions())
			res := h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(envoytest.Header{Key: "x-request-id", Value: "r"}), Body: []byte(chatBody)})
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if tc.wantStatus == 0 {
				if res.Immediate != nil || !res.Continued || len(headerValues(res.Headers, HeaderDestination)) != 0 {
					t.Fatalf("want a pass through without a pick, got immediate=%v headers=%v", res.Immediate, res.Headers)
				}
				if promtest.Value(t, h.reg, "llmrouter_gateway_passthrough_total", "reason", "rejected_503") != 1 {
					t.Fatal("pass through not counted")
				}
				return
			}
			imm := res.Immediate
			if imm == nil || imm.Status != tc.wantStatus {
				t.Fatalf("immediate = %+v, want status %d", imm, tc.wantStatus)
			}
			if ra, _ := envoytest.Get(imm.Headers, "retry-after"); ra != tc.retryAfter {
				t.Fatalf("retry-after = %q, want %q", ra, tc.retryAfter)
			}
			if ct, _ := envoytest.Get(imm.Headers, "content-type"); ct != "application/json" {
				t.Fatalf("content-type = %q", ct)
			}
			var body struct {
				Error struct {
					Message string `json:"message"`
					Type    string `json:"type"`
					Code    string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(imm.Body, &body); err != nil {
				t.Fatalf("body %q: %v", imm.Body, err)
			}
			if body.Error.Message == "" || body.Error.Type == "" || body.Error.Code != tc.wantCode {
				t.Fatalf("error body = %s", imm.Body)
			}
		})
	}
}

func TestPassthroughCounted(t *testing.T) {
	fake := newFake(routed("10.0.0.1:8000"))
	h := newHarness(t, fake, testOptions())
	cases := []struct {
		name   string
		req    envoytest.Request
		reason string
	}{
		{"unknown path", envoytest.Request{Headers: []envoytest.Header{{Key: ":method", Value: "POST"}, {Key: ":path", Value: "/v1/audio/speech"}}, Body: []byte(`{"model":"tts"}`)}, "path"},
		{"bad json", envoytest.Request{Headers: chatHeaders(), Body: []byte(`{"model":"llama","messages":[{"role":"user","content":"hi"}`)}, "bad_body"},
		{"not json", envoytest.Request{Headers: chatHeaders(), Body: []byte(`model=llama`)}, "bad_body"},
		{"no model", envoytest.Request{Headers: chatHeaders(), Body: []byte(`{"messages":[{"role":"user","content":"hi"}]}`)}, "no_model"},
		{"body-less, no model", envoytest.Request{Headers: chatHeaders()}, "no_body"},
	}
	for _, tc := range cases {
		res := h.f.Do(context.Background(), tc.req)
		if res.Err != nil || !res.Continued || res.Immediate != nil || len(headerValues(res.Headers, HeaderDestination)) != 0 {
			t.Fatalf("%s: want unmodified pass through, got err=%v immediate=%v headers=%v", tc.name, res.Err, res.Immediate, res.Headers)
		}
		if promtest.Value(t, h.reg, "llmrouter_gateway_passthrough_total", "reason", tc.reason) < 1 {
			t.Fatalf("%s: passthrough{reason=%s} not counted", tc.name, tc.reason)
		}
	}
	if fake.pickCount() != 0 {
		t.Fatalf("%d picks for requests that should pass through", fake.pickCount())
	}
}

func TestBodylessRequestDecidedFromHeaders(t *testing.T) {
	fake := newFake(routed("10.0.0.4:8000"))
	h := newHarness(t, fake, testOptions())
	res := h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(envoytest.Header{Key: HeaderModel, Value: "llama"})})
	if res.Err != nil || !slices.Equal(headerValues(res.Headers, HeaderDestination), []string{"10.0.0.4:8000"}) {
		t.Fatalf("err=%v headers=%v", res.Err, res.Headers)
	}
	if res.Metadata[MetadataNamespace] == nil {
		t.Fatal("no envoy.lb metadata on a headers-only pick")
	}
	if p := fake.lastPick(); p.Model != "llama" || len(p.PromptBlockHashes) != 0 {
		t.Fatalf("pick = %v", p)
	}
}

func TestWebSocketPickFromHeaders(t *testing.T) {
	fake := newFake(routed("10.0.0.5:8000", "10.0.0.6:8000"))
	h := newHarness(t, fake, testOptions())
	none := envoytest.None
	res := h.f.Do(context.Background(), envoytest.Request{
		Headers: []envoytest.Header{{Key: ":method", Value: "GET"}, {Key: ":path", Value: "/v1/realtime?model=llama"},
			{Key: "connection", Value: "Upgrade"}, {Key: "upgrade", Value: "websocket"}, {Key: "x-request-id", Value: "ws"}},
		Upgrade:  true,
		BodyMode: &none,
	})
	if res.Err != nil || !res.Continued {
		t.Fatalf("err=%v", res.Err)
	}
	if got := headerValues(res.Headers, HeaderDestination); !slices.Equal(got, []string{"10.0.0.5:8000,10.0.0.6:8000"}) {
		t.Fatalf("destination = %q", got)
	}
	if got := res.Metadata[MetadataNamespace].GetFields()[HeaderDestination].GetStringValue(); got != "10.0.0.5:8000,10.0.0.6:8000" {
		t.Fatalf("metadata = %q", got)
	}
	if p := fake.lastPick(); p.Api != llmrouterv1.ApiKind_API_KIND_WEBSOCKET || p.Model != "llama" {
		t.Fatalf("pick = %v", p)
	}
}

func TestDegradedWhenUnavailable(t *testing.T) {
	hang := func(ctx context.Context, _ *llmrouterv1.PickRequest, _ func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	s := &availSched{fakeSched: newFake(hang)}
	h := newHarness(t, s, testOptions())
	req := envoytest.Request{Headers: chatHeaders(envoytest.Header{Key: "x-request-id", Value: "d"}), Body: []byte(chatBody)}

	res := h.f.Do(context.Background(), req)
	if res.Err != nil || len(headerValues(res.Headers, HeaderDestination)) != 0 || s.pickCount() != 0 {
		t.Fatalf("degraded: err=%v headers=%v picks=%d", res.Err, res.Headers, s.pickCount())
	}
	if promtest.Value(t, h.reg, "llmrouter_gateway_degraded") != 1 || !strings.HasPrefix(h.srv.Status(), "degraded") {
		t.Fatalf("degraded metric = %v, status %q", promtest.Value(t, h.reg, "llmrouter_gateway_degraded"), h.srv.Status())
	}
	if promtest.Value(t, h.reg, "llmrouter_gateway_requests_total", "api", "chat_completions", "outcome", "degraded") != 1 {
		t.Fatal("degraded request not counted")
	}

	s.setPick(routed("10.0.0.1:8000"))
	s.up.Store(true)
	res = h.f.Do(context.Background(), req)
	if res.Err != nil || len(headerValues(res.Headers, HeaderDestination)) != 1 {
		t.Fatalf("after recovery: err=%v headers=%v", res.Err, res.Headers)
	}
	if promtest.Value(t, h.reg, "llmrouter_gateway_degraded") != 0 {
		t.Fatal("degraded metric still 1 after recovery")
	}
}

func TestDegradedBreakerOnFailingPicks(t *testing.T) {
	fake := newFake(func(context.Context, *llmrouterv1.PickRequest, func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
		return nil, status.Error(codes.Unavailable, "connection refused")
	})
	opt := testOptions()
	opt.ProbeInterval = time.Hour // no probe during the first part
	h := newHarness(t, fake, opt)
	req := envoytest.Request{Headers: chatHeaders(envoytest.Header{Key: "x-request-id", Value: "b"}), Body: []byte(chatBody)}
	for range 5 {
		if res := h.f.Do(context.Background(), req); res.Err != nil || len(headerValues(res.Headers, HeaderDestination)) != 0 {
			t.Fatalf("err=%v headers=%v", res.Err, res.Headers)
		}
	}
	if fake.pickCount() != 1 {
		t.Fatalf("%d picks tried; after an Unavailable error the breaker should skip the scheduler", fake.pickCount())
	}
	if promtest.Value(t, h.reg, "llmrouter_gateway_degraded") != 1 {
		t.Fatal("degraded metric not set")
	}

	// Recovery by itself: a probe goes through once the interval passes.
	h.srv.health.mu.Lock()
	h.srv.health.probeInterval = 50 * time.Millisecond
	h.srv.health.nextProbe = time.Now()
	h.srv.health.mu.Unlock()
	fake.setPick(routed("10.0.0.1:8000"))
	eventually(t, 5*time.Second, "picks to resume", func() bool {
		res := h.f.Do(context.Background(), req)
		return res.Err == nil && len(headerValues(res.Headers, HeaderDestination)) == 1
	})
	if promtest.Value(t, h.reg, "llmrouter_gateway_degraded") != 0 {
		t.Fatal("degraded metric still set after recovery")
	}
}

// A pick slower than pick_timeout is given up by the gateway itself, which
// answers with a pass through, before Envoy's message timeout would fail the
// exchange open: the default pick_timeout lies below the shipped bootstrap's
// message_timeout. The stand-in's own message timeout is out of the way
// here: at 200 ms against the 150 ms pick timeout, the 50 ms between two
// timers was a race a loaded machine lost (once in 100 runs under -race at
// GOMAXPROCS=1), and a lost race is not the gateway's failure.
func TestSlowPickFailsOpenWithinMessageTimeout(t *testing.T) {
	if pick, msg := config.Default().Gateway.PickTimeout, envoy.DefaultOptions().MessageTimeout; pick >= msg {
		t.Fatalf("default pick_timeout %v is not below the shipped bootstrap's message_timeout %v: Envoy would give up on the exchange first", pick, msg)
	}
	fake := newFake(func(ctx context.Context, _ *llmrouterv1.PickRequest, _ func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	h := newHarness(t, fake, testOptions())
	h.f.MessageTimeout = 10 * time.Second
	start := time.Now()
	res := h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(envoytest.Header{Key: "x-request-id", Value: "s"}), Body: []byte(chatBody)})
	took := time.Since(start)
	if res.Err != nil || res.Immediate != nil || len(headerValues(res.Headers, HeaderDestination)) != 0 {
		t.Fatalf("a pick slower than pick_timeout: err %v, immediate %v, destination %q; want the gateway to pass the request through itself",
			res.Err, res.Immediate, headerValues(res.Headers, HeaderDestination))
	}
	if took < h.opts.PickTimeout {
		t.Fatalf("passed through after %v, before pick_timeout %v", took, h.opts.PickTimeout)
	}
	if promtest.Value(t, h.reg, "llmrouter_gateway_passthrough_total", "reason", "scheduler_error") != 1 {
		t.Fatal("timed-out pick not counted")
	}
}

// The scheduler's PASSTHROUGH (every candidate silent but still in EDS) is
// answered without a pick, so Envoy balances over its endpoints, and is
// counted as a pass through.
func TestSchedulerPassthrough(t *testing.T) {
	fake := newFake(func(context.Context, *llmrouterv1.PickRequest, func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
		return &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_PASSTHROUGH, Reason: "every instance is silent"}, nil
	})
	h := newHarness(t, fake, testOptions())
	res := h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(envoytest.Header{Key: "x-request-id", Value: "r"}), Body: []byte(chatBody)})
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if res.Immediate != nil || !res.Continued || len(headerValues(res.Headers, HeaderDestination)) != 0 {
		t.Fatalf("want a pass through without a pick, got immediate=%v headers=%v", res.Immediate, res.Headers)
	}
	if promtest.Value(t, h.reg, "llmrouter_gateway_passthrough_total", "reason", "scheduler_passthrough") != 1 {
		t.Fatal("pass through not counted")
	}
}

// TestLongPromptHashedPastWindow: past max_prefix_chars the gateway goes on
// hashing in tail blocks up to max_hashed_chars and tells the scheduler
// where the head ends; a prompt within the window, or a gateway with the
// tail off, sends fine blocks alone and neither field.
func TestLongPromptHashedPastWindow(t *testing.T) {
	body := func(n int) []byte {
		return []byte(fmt.Sprintf(`{"model":"llama","messages":[{"role":"user","content":%q}]}`, strings.Repeat("abcdefghij", n/10)))
	}
	pick := func(opt Options, b []byte) *llmrouterv1.PickRequest {
		t.Helper()
		fake := newFake(routed("10.0.0.1:8000"))
		h := newHarness(t, fake, opt)
		if res := h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(), Body: b}); res.Err != nil {
			t.Fatal(res.Err)
		}
		return fake.lastPick()
	}
	opt := testOptions() // 16-character blocks, a 1,024-character fine window
	opt.TailBlockChars, opt.MaxHashedChars = 256, 4096
	long := body(10_000)
	p := pick(opt, long)
	text := prompthash.RenderChat([]prompthash.Message{{Role: "user", Content: strings.Repeat("abcdefghij", 1000)}})
	want, head := prompthash.Tiered(nil, prompthash.Seed("llama", ""), text, 16, 1024, 256, 4096)
	if head != 64 || len(want) != 64+(4096-1024)/256 || !slices.Equal(p.PromptBlockHashes, want) {
		t.Fatalf("%d hashes, want the %d of 64 fine blocks and 256-character blocks to 4,096", len(p.PromptBlockHashes), len(want))
	}
	if p.HeadBlocks != 64 || p.TailBlockChars != 256 || p.BlockChars != 16 {
		t.Fatalf("head_blocks %d, tail_block_chars %d, block_chars %d; want 64, 256, 16", p.HeadBlocks, p.TailBlockChars, p.BlockChars)
	}
	if p := pick(opt, body(500)); p.HeadBlocks != 0 || p.TailBlockChars != 0 || len(p.PromptBlockHashes) == 0 {
		t.Fatalf("a prompt within the window: head_blocks %d, tail_block_chars %d, %d hashes; want fine blocks alone", p.HeadBlocks, p.TailBlockChars, len(p.PromptBlockHashes))
	}
	opt.TailBlockChars = -1
	if p := pick(opt, long); p.HeadBlocks != 0 || p.TailBlockChars != 0 || !slices.Equal(p.PromptBlockHashes, want[:64]) {
		t.Fatalf("tail off: head_blocks %d, tail_block_chars %d, %d hashes; want the 64 fine blocks alone", p.HeadBlocks, p.TailBlockChars, len(p.PromptBlockHashes))
	}
}
