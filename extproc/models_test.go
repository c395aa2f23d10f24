package extproc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/envoytest"
	"github.com/llmrouter/llmrouter/internal/promtest"
)

// listerSched is a fake scheduler that also lists models.
type listerSched struct {
	*availSched
	calls  atomic.Int32
	listFn func(ctx context.Context) (*llmrouterv1.ListModelsResponse, error)
}

func (l *listerSched) ListModels(ctx context.Context, _ *llmrouterv1.ListModelsRequest) (*llmrouterv1.ListModelsResponse, error) {
	l.calls.Add(1)
	return l.listFn(ctx)
}

func newLister(fn func(ctx context.Context) (*llmrouterv1.ListModelsResponse, error)) *listerSched {
	a := &availSched{fakeSched: newFake(routed("10.0.0.1:8000"))}
	a.up.Store(true)
	return &listerSched{availSched: a, listFn: fn}
}

func listing(models ...*llmrouterv1.ServedModel) func(context.Context) (*llmrouterv1.ListModelsResponse, error) {
	return func(context.Context) (*llmrouterv1.ListModelsResponse, error) {
		return &llmrouterv1.ListModelsResponse{Models: models}, nil
	}
}

var fleetModels = []*llmrouterv1.ServedModel{
	{Name: "chat-lora", LoraAdapter: true, Parent: "llama", CreatedUnix: 1700000100, Instances: 1},
	{Name: "llama", CreatedUnix: 1700000000, Instances: 2},
	{Name: "qwen", CreatedUnix: 1700000200, Instances: 1},
}

func modelsGet(path string) envoytest.Request {
	return envoytest.Request{Headers: []envoytest.Header{
		{Key: ":method", Value: "GET"}, {Key: ":path", Value: path}, {Key: ":authority", Value: "llm.example"},
		{Key: ":scheme", Value: "http"}, {Key: "authorization", Value: "Bearer sk-client"},
	}}
}

// openAIModelList is the documented shape of OpenAI's GET /v1/models
// answer (the list object of model objects), plus vLLM's parent.
type openAIModelList struct {
	Object string `json:"object"`
	Data   []struct {
		ID      string  `json:"id"`
		Object  string  `json:"object"`
		Created int64   `json:"created"`
		OwnedBy string  `json:"owned_by"`
		Parent  *string `json:"parent"`
	} `json:"data"`
}

func decodeList(t *testing.T, body []byte) openAIModelList {
	t.Helper()
	var l openAIModelList
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(&l); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	return l
}

// GET /v1/models is answered by the gateway in the request-headers phase
// with the fleet's models in OpenAI's list shape; no pick is made and the
// request never reaches an engine.
func TestModelsAnsweredWithTheFleetsList(t *testing.T) {
	s := newLister(listing(fleetModels...))
	h := newHarness(t, s, testOptions())
	for _, path := range []string{"/v1/models", "/v1/models?limit=10"} {
		res := h.f.Do(context.Background(), modelsGet(path))
		if res.Err != nil || res.Continued || res.Immediate == nil {
			t.Fatalf("GET %s: err %v continued %v immediate %v", path, res.Err, res.Continued, res.Immediate)
		}
		imm := res.Immediate
		if ct, _ := envoytest.Get(imm.Headers, "content-type"); imm.Status != 200 || ct != "application/json" || imm.Details != "llmrouter_models" {
			t.Fatalf("GET %s: %d content-type %q details %q", path, imm.Status, ct, imm.Details)
		}
		l := decodeList(t, imm.Body)
		if l.Object != "list" || len(l.Data) != len(fleetModels) {
			t.Fatalf("GET %s: %s", path, imm.Body)
		}
		for i, m := range fleetModels {
			d := l.Data[i]
			if d.ID != m.Name || d.Object != "model" || d.Created != m.CreatedUnix || d.OwnedBy != "llmrouter" {
				t.Fatalf("entry %d = %+v, want %v", i, d, m)
			}
			if m.LoraAdapter != (d.Parent != nil) || (d.Parent != nil && *d.Parent != m.Parent) {
				t.Fatalf("entry %d parent = %v, want %q (adapter %v)", i, d.Parent, m.Parent, m.LoraAdapter)
			}
		}
	}
	if s.pickCount() != 0 {
		t.Fatalf("%d picks for GET /v1/models", s.pickCount())
	}
	if got := promtest.Value(t, h.reg, "llmrouter_gateway_requests_total", "api", "models", "outcome", "answered"); got != 2 {
		t.Fatalf("answered = %v, want 2", got)
	}
}

// The answer is reused for ModelsCacheTTL: clients polling /v1/models,
// even all at once, cost the scheduler one call per TTL.
func TestModelsCached(t *testing.T) {
	s := newLister(func(ctx context.Context) (*llmrouterv1.ListModelsResponse, error) {
		time.Sleep(20 * time.Millisecond) // long enough for the requests below to meet
		return &llmrouterv1.ListModelsResponse{Models: fleetModels}, nil
	})
	opt := testOptions()
	// Long enough that no request of a slow, loaded run outlives it; its
	// end is simulated below instead of slept through.
	opt.ModelsCacheTTL = time.Minute
	// What is counted here is scheduler calls, not latency: twenty streams
	// at once on a loaded machine can take longer than Envoy's 200 ms
	// message timeout or the 150 ms pick timeout that bounds the fetch, and
	// a request that fails open is not answered (3 of 20 were, once, under
	// -race at GOMAXPROCS=1). TestModelsPassThroughWithoutAList holds the
	// timeouts.
	opt.PickTimeout = 10 * time.Second
	h := newHarness(t, s, opt)
	h.f.MessageTimeout = 10 * time.Second
	var wg sync.WaitGroup
	var answered atomic.Int32
	for range 20 {
		wg.Go(func() {
			if res := h.f.Do(context.Background(), modelsGet("/v1/models")); res.Immediate != nil && res.Immediate.Status == 200 {
				answered.Add(1)
			}
		})
	}
	wg.Wait()
	if answered.Load() != 20 || s.calls.Load() != 1 {
		t.Fatalf("%d of 20 answered with %d scheduler calls, want all with 1", answered.Load(), s.calls.Load())
	}
	h.srv.models.mu.Lock()
	h.srv.models.until = time.Now().Add(-time.Nanosecond) // the TTL has passed
	h.srv.models.mu.Unlock()
	if res := h.f.Do(context.Background(), modelsGet("/v1/models")); res.Immediate == nil || s.calls.Load() != 2 {
		t.Fatalf("after the TTL: immediate %v, %d calls, want answered with a second call", res.Immediate, s.calls.Load())
	}
}

// Degrade, never fail: whenever the gateway has no list — the scheduler
// unreachable, failing, too slow, older than ListModels, or listing nothing
// — GET /v1/models and GET /v1/models/{id} continue unchanged to Envoy's
// round robin, and the gateway answers before Envoy's message timeout.
func TestModelsPassThroughWithoutAList(t *testing.T) {
	slow := func(ctx context.Context) (*llmrouterv1.ListModelsResponse, error) {
		select {
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-time.After(5 * time.Second):
			return &llmrouterv1.ListModelsResponse{Models: fleetModels}, nil
		}
	}
	for _, tc := range []struct {
		name    string
		fn      func(context.Context) (*llmrouterv1.ListModelsResponse, error)
		down    bool
		reason  string
		asked   bool
		wantErr bool
	}{
		{name: "unreachable", fn: listing(fleetModels...), down: true, reason: "degraded"},
		{name: "unavailable", fn: func(context.Context) (*llmrouterv1.ListModelsResponse, error) {
			return nil, status.Error(codes.Unavailable, "connection refused")
		}, reason: "models_unlisted", asked: true},
		{name: "older scheduler", fn: func(context.Context) (*llmrouterv1.ListModelsResponse, error) {
			return nil, status.Error(codes.Unimplemented, "unknown method ListModels")
		}, reason: "models_unlisted", asked: true},
		{name: "slow", fn: slow, reason: "models_unlisted", asked: true},
		{name: "empty fleet", fn: listing(), reason: "models_unlisted", asked: true},
		{name: "only empty names", fn: listing(&llmrouterv1.ServedModel{}), reason: "models_unlisted", asked: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newLister(tc.fn)
			s.up.Store(!tc.down)
			h := newHarness(t, s, testOptions())
			// The gateway must give up on the slow list by itself, at
			// pick_timeout (150 ms). The stand-in's 200 ms message timeout
			// is out of the way: the 50 ms between the two timers was a race
			// a loaded machine lost (once in 150 runs under -race at
			// GOMAXPROCS=1). That pick_timeout lies below the shipped
			// message_timeout is TestSlowPickFailsOpenWithinMessageTimeout's.
			h.f.MessageTimeout = 10 * time.Second
			// The list, then a model of it, escaped as the OpenAI SDKs send it.
			for i, path := range []string{"/v1/models", "/v1/models/meta-llama%2FLlama-3-8B?x=1"} {
				req := modelsGet(path)
				res := h.f.Do(context.Background(), req)
				if res.Err != nil || !res.Continued || res.Immediate != nil {
					t.Fatalf("GET %s: err %v continued %v immediate %v: want it to continue unchanged", path, res.Err, res.Continued, res.Immediate)
				}
				if p, _ := envoytest.Get(res.Headers, ":path"); p != path || len(res.Headers) < len(req.Headers) {
					t.Fatalf("request %d: headers changed: %v", i, res.Headers)
				}
			}
			// A failed list is remembered for the TTL too: the second
			// request did not ask again.
			if want := map[bool]int32{true: 1, false: 0}[tc.asked]; s.calls.Load() != want {
				t.Fatalf("%d scheduler calls, want %d", s.calls.Load(), want)
			}
			if got := promtest.Value(t, h.reg, "llmrouter_gateway_passthrough_total", "reason", tc.reason); got != 2 {
				t.Fatalf("passthrough{reason=%q} = %v, want 2", tc.reason, got)
			}
			if got := promtest.Value(t, h.reg, "llmrouter_gateway_requests_total", "api", "models", "outcome", "passthrough"); got != 2 {
				t.Fatalf("requests{api=models,outcome=passthrough} = %v, want 2", got)
			}
		})
	}
}

// Only GET of exactly /v1/models (and of /v1/models/{id},
// TestModelRetrieve) is answered: other methods, other paths (/v1/models/
// without an id included) and a scheduler that cannot list models leave
// the request to Envoy as before.
func TestModelsOnlyGetOfTheListPath(t *testing.T) {
	s := newLister(listing(fleetModels...))
	h := newHarness(t, s, testOptions())
	for _, tc := range []struct{ method, path string }{
		{"POST", "/v1/models"}, {"HEAD", "/v1/models"}, {"DELETE", "/v1/models"}, {"DELETE", "/v1/models/llama"},
		{"HEAD", "/v1/models/llama"}, {"GET", "/v1/models/"}, {"GET", "/v1/models/?id=llama"},
		{"GET", "/v1/modelsx"}, {"GET", "/v2/models"}, {"GET", "/openai/v1/models"}, {"GET", "/openai/v1/models/llama"},
		{"GET", "/v1/chat/completions"},
	} {
		req := modelsGet(tc.path)
		req.Headers[0].Value = tc.method
		res := h.f.Do(context.Background(), req)
		if res.Err != nil || !res.Continued || res.Immediate != nil {
			t.Fatalf("%s %s: err %v continued %v immediate %v", tc.method, tc.path, res.Err, res.Continued, res.Immediate)
		}
	}
	if s.calls.Load() != 0 {
		t.Fatalf("%d scheduler calls for requests other than GET /v1/models and /v1/models/{id}", s.calls.Load())
	}

	// A scheduler without ListModels: GET /v1/models passes through.
	plain := newHarness(t, newFake(routed("10.0.0.1:8000")), testOptions())
	if res := plain.f.Do(context.Background(), modelsGet("/v1/models")); !res.Continued || res.Immediate != nil {
		t.Fatalf("without a ModelLister: continued %v immediate %v", res.Continued, res.Immediate)
	}
}

// The rendered list is bounded in entries and bytes whatever a scheduler
// sends, and stays valid JSON when cut.
func TestModelsBodyBounded(t *testing.T) {
	var many []*llmrouterv1.ServedModel
	for i := range maxModelsEntries + 50 {
		many = append(many, &llmrouterv1.ServedModel{Name: fmt.Sprintf("m-%05d", i)})
	}
	l := decodeList(t, renderModels(&llmrouterv1.ListModelsResponse{Models: many}, time.Unix(1700000000, 0)).body)
	if len(l.Data) != maxModelsEntries || l.Data[0].ID != "m-00000" || l.Data[0].Created != 1700000000 {
		t.Fatalf("%d entries (first %+v), want %d", len(l.Data), l.Data[0], maxModelsEntries)
	}

	var long []*llmrouterv1.ServedModel
	for i := range 1000 {
		long = append(long, &llmrouterv1.ServedModel{Name: fmt.Sprintf("%04d-%s", i, strings.Repeat("x", 2000)), CreatedUnix: 1})
	}
	body := renderModels(&llmrouterv1.ListModelsResponse{Models: long}, time.Now()).body
	l = decodeList(t, body)
	if len(body) > maxModelsBody || len(body)+2100 < maxModelsBody || len(l.Data) == 0 || l.Data[len(l.Data)-1].ID != long[len(l.Data)-1].Name {
		t.Fatalf("%d bytes, %d entries: want as many as fit in %d bytes", len(body), len(l.Data), maxModelsBody)
	}
}
