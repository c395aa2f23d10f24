package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/internal/servetest"
	"github.com/llmrouter/llmrouter/sim/engine"
	"github.com/llmrouter/llmrouter/sim/enginesim"
	"github.com/llmrouter/llmrouter/sim/workload"
)

// fakeServer streams OpenAI chat chunks: the first content after ttft, one
// more every itl, then a usage chunk and [DONE].
type fakeServer struct {
	ttft, itl time.Duration
	cached    int
	mu        sync.Mutex
	bodies    []map[string]any
	replies   map[string]string // last message content → reply sent
	reject    string            // a user message answered 429
}

func (f *fakeServer) handler(t *testing.T) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"object":"list","data":[{"id":"fake-model","object":"model"}]}`)
	})
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("request body: %v", err)
			return
		}
		msgs := body["messages"].([]any)
		last := msgs[len(msgs)-1].(map[string]any)["content"].(string)
		f.mu.Lock()
		f.bodies = append(f.bodies, body)
		f.mu.Unlock()
		if last == f.reject {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":{"message":"busy","type":"rate_limit","code":429}}`)
			return
		}
		n := int(body["max_tokens"].(float64))
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n")
		fl.Flush()
		time.Sleep(f.ttft)
		var reply strings.Builder
		for i := 0; i < n; i++ {
			if i > 0 {
				time.Sleep(f.itl)
			}
			word := fmt.Sprintf("w%02d ", i)
			reply.WriteString(word)
			fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\n", word)
			fl.Flush()
		}
		fmt.Fprintf(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":%d,\"prompt_tokens_details\":{\"cached_tokens\":%d}}}\n\n", n, f.cached)
		fmt.Fprint(w, "data: [DONE]\n\n")
		f.mu.Lock()
		if f.replies == nil {
			f.replies = map[string]string{}
		}
		f.replies[last] = reply.String()
		f.mu.Unlock()
	})
	return mux
}

func fileSource(t *testing.T, lines ...string) workload.Source {
	t.Helper()
	src, err := workload.ParseFile(strings.NewReader(strings.Join(lines, "\n")), "test.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func TestLiveAgainstFakeSSEServer(t *testing.T) {
	f := &fakeServer{ttft: 40 * time.Millisecond, itl: 5 * time.Millisecond, cached: 25}
	ts := httptest.NewServer(f.handler(t))
	defer ts.Close()
	m := workload.DefaultMultiTurn()
	m.Conversations, m.TurnsMin, m.TurnsMax, m.OutputTokens, m.SystemTokens, m.UserTokens = 3, 2, 2, 6, 16, 8
	src, err := workload.NewMultiTurn(m)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Run(context.Background(), Options{Target: ts.URL, Plan: workload.Plan{Source: src, Arrivals: workload.Arrivals{Concurrency: 2}}}, "fake")
	if err != nil {
		t.Fatal(err)
	}
	if s.Requests != 6 || s.Failed != 0 {
		t.Fatalf("%d requests, %d failed: want 6 and 0 (%v)", s.Requests, s.Failed, s.Errors)
	}
	if s.InputTokens != 600 {
		t.Fatalf("input tokens %d: want usage.prompt_tokens summed (600)", s.InputTokens)
	}
	if s.TTFTMeanMs < 40 || s.TTFTMeanMs > 5000 {
		t.Fatalf("mean TTFT %.1f ms: want from the send to the first content chunk (>= 40 ms)", s.TTFTMeanMs)
	}
	if s.TPOTMeanMs < 1 || s.TPOTMeanMs > 1000 {
		t.Fatalf("mean TPOT %.2f ms: want the gap between content chunks (~5 ms)", s.TPOTMeanMs)
	}
	if s.PrefixHitRatio == nil || *s.PrefixHitRatio != 0.25 {
		t.Fatalf("prefix hit ratio %v: want cached_tokens / prompt_tokens = 0.25", s.PrefixHitRatio)
	}
	if s.OutputTokens == 0 || s.DurationS <= 0 || s.OutputThroughput <= 0 {
		t.Fatalf("%+v", s)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	turn2 := 0
	for _, b := range f.bodies {
		if b["model"] != "fake-model" || b["stream"] != true {
			t.Fatalf("request %v: want the target's model and stream=true", b)
		}
		if so, _ := b["stream_options"].(map[string]any); so["include_usage"] != true {
			t.Fatalf("stream_options %v: want include_usage", b["stream_options"])
		}
		msgs := b["messages"].([]any)
		if len(msgs) == 4 {
			turn2++
			// The second turn carries the reply the server actually sent.
			prevUser := msgs[1].(map[string]any)["content"].(string)
			got := msgs[2].(map[string]any)
			if got["role"] != "assistant" || got["content"] != f.replies[prevUser] {
				t.Fatalf("second turn carries %v, want the streamed reply %q", got, f.replies[prevUser])
			}
		}
	}
	if turn2 != 3 {
		t.Fatalf("%d second turns, want 3", turn2)
	}
}

func TestLiveCountsFailures(t *testing.T) {
	f := &fakeServer{reject: "no"}
	ts := httptest.NewServer(f.handler(t))
	defer ts.Close()
	src := fileSource(t,
		`{"conversation_id":"a","turn":0,"arrival_ms":0,"model":"x","messages":[{"role":"user","content":"yes"}],"max_tokens":3}`,
		`{"conversation_id":"b","turn":0,"arrival_ms":10,"model":"x","messages":[{"role":"user","content":"no"}],"max_tokens":3}`)
	s, err := Run(context.Background(), Options{Target: ts.URL, Plan: workload.Plan{Source: src, Arrivals: workload.Arrivals{Trace: true}}}, "fake")
	if err != nil {
		t.Fatal(err)
	}
	// A 429 is the router shedding load: counted as rejected, not failed.
	if s.Requests != 1 || s.Failed != 0 || s.Rejected != 1 || s.Rejections["HTTP 429: busy"] != 1 {
		t.Fatalf("requests %d failed %d rejected %d (%v, %v): want one success and one HTTP 429 rejection", s.Requests, s.Failed, s.Rejected, s.Errors, s.Rejections)
	}
	if s.PrefixHitRatio == nil || *s.PrefixHitRatio != 0 {
		t.Fatalf("hit ratio %v: the server reported cached_tokens 0, want 0", s.PrefixHitRatio)
	}
}

func TestLiveRejectsBadTarget(t *testing.T) {
	src := fileSource(t, `{"conversation_id":"a","turn":0,"messages":[{"role":"user","content":"x"}],"max_tokens":3}`)
	for _, target := range []string{"", "127.0.0.1:8080", "ftp://x"} {
		_, err := Run(context.Background(), Options{Target: target, Plan: workload.Plan{Source: src, Arrivals: workload.Arrivals{Concurrency: 1}, DefaultModel: "m"}}, "x")
		if err == nil || !strings.Contains(err.Error(), "base URL") {
			t.Fatalf("target %q: %v", target, err)
		}
	}
	// Nothing listens: the model lookup fails with advice.
	addr := servetest.FreeAddr(t)
	_, err := Run(context.Background(), Options{Target: "http://" + addr, Plan: workload.Plan{Source: src, Arrivals: workload.Arrivals{Concurrency: 1}}}, "x")
	if err == nil || !strings.Contains(err.Error(), "--model") {
		t.Fatalf("unreachable target: %v", err)
	}
}

// TestLiveAgainstEngineSim drives the simulated vLLM over real HTTP: its
// demo timings make TTFT and TPOT known.
func TestLiveAgainstEngineSim(t *testing.T) {
	ec := engine.DefaultConfig()
	ec.FixedPrefillStep, ec.FixedDecodeStep = 30*time.Millisecond, 3*time.Millisecond
	srv, err := enginesim.New(enginesim.Options{Model: "sim", Engine: ec, ShutdownGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := servetest.Loopback(t, srv)
	defer stop()
	sp := workload.SharedPrefix{Seed: 1, Groups: 2, PromptsPerGroup: 3, SystemTokens: 64, QuestionTokens: 16, OutputTokens: 8}
	src, err := workload.NewSharedPrefix(sp)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Run(context.Background(), Options{Target: "http://" + addr,
		Plan: workload.Plan{Source: src, Arrivals: workload.Arrivals{Concurrency: 2}}}, "enginesim")
	if err != nil {
		t.Fatal(err)
	}
	if s.Requests != 6 || s.Failed != 0 || s.OutputTokens != 48 {
		t.Fatalf("%d requests (%d failed: %v), %d output tokens: want 6, 0, 48", s.Requests, s.Failed, s.Errors, s.OutputTokens)
	}
	if s.TTFTMeanMs < 30 {
		t.Fatalf("mean TTFT %.1f ms: the engine's prefill step alone takes 30 ms", s.TTFTMeanMs)
	}
	if s.TPOTMeanMs < 1 {
		t.Fatalf("mean TPOT %.2f ms: each decode step takes 3 ms", s.TPOTMeanMs)
	}
	if s.InputTokens < 6*80 {
		t.Fatalf("input tokens %d: want the engine's usage (~90 per request)", s.InputTokens)
	}
}

// The default model is a base model even where the list puts an adapter
// first, as the gateway's sorted fleet list may: load on an adapter would
// measure the engines' adapter path instead of the fleet's model.
func TestFirstModelSkipsAdapters(t *testing.T) {
	for _, c := range []struct{ list, want string }{
		{`[{"id":"a-lora","object":"model","parent":"llama"},{"id":"llama","object":"model"}]`, "llama"},
		{`[{"id":"llama","object":"model"},{"id":"z-lora","object":"model","parent":"llama"}]`, "llama"},
		{`[{"id":"only-lora","object":"model","parent":"llama"}]`, "only-lora"},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, `{"object":"list","data":%s}`, c.list)
		}))
		got, err := firstModel(context.Background(), srv.Client(), srv.URL, "")
		srv.Close()
		if err != nil || got != c.want {
			t.Fatalf("list %s: model %q, %v; want %q", c.list, got, err, c.want)
		}
	}
}
