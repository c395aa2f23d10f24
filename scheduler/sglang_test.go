package scheduler

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
)

// regEngine registers addr as an engine of kind engine serving base model
// base and the given LoRA adapters under their own names.
func regEngine(t *testing.T, s *Scheduler, addr, engine, base string, initial *llmrouterv1.Report, adapters ...string) {
	t.Helper()
	r := regMsg(addr, base)
	r.Engine, r.LoraAdapters, r.Initial = engine, adapters, initial
	if _, err := s.Register(r); err != nil {
		t.Fatal(err)
	}
}

// TestSGLangBaseAdapterSyntax: "model": "m:sql", SGLang's base:adapter
// syntax, is routed among the SGLang instances serving base model m and
// adapter sql only — never to a vLLM instance serving both (it would answer
// 404 for that name), nor to an SGLang instance serving m without sql — and
// is scored as a request for sql: with LoRA affinity the busier instance
// running sql comes first. Spaces around either half are SGLang's too. A
// name served literally keeps its meaning although SGLang instances could
// read it as base:adapter; an adapter no SGLang instance serves is 404
// listing the served models, which never include the base:adapter names.
func TestSGLangBaseAdapterSyntax(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.Affinity.LoRA = true })
	idle, running, vllm, baseOnly := "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000", "10.0.0.4:8000"
	sglX, literal := "10.0.0.5:8000", "10.0.0.6:8000"
	regEngine(t, s, idle, "sglang", "m", &llmrouterv1.Report{Healthy: true, LoraStateKnown: true, MaxLora: 2}, "sql")
	regEngine(t, s, running, "sglang", "m", &llmrouterv1.Report{Healthy: true, Running: 6, LoraStateKnown: true, LoraAdapters: []string{"sql"}, MaxLora: 2}, "sql")
	regEngine(t, s, vllm, "vllm", "m", load(0, 0), "sql")
	regEngine(t, s, baseOnly, "sglang", "m", load(0, 0))
	// SGLang would read "x:y" as base x, adapter y; an engine serving a
	// model literally named x:y is what the name means.
	regEngine(t, s, sglX, "sglang", "x", load(0, 0), "y")
	regEngine(t, s, literal, "vllm", "x:y", load(5, 0))

	pick := func(id, model string) *llmrouterv1.PickResponse {
		t.Helper()
		req := pickReq(id, model)
		req.LoraAdapter = model // as the gateway sends it (loraFor)
		r, tk := s.TryPick(req, nil)
		if tk != nil {
			t.Fatalf("pick %s for %q queued, want an answer now", id, model)
		}
		return r
	}
	for i, model := range []string{"m:sql", "m:sql", " m : sql ", "m:sql"} {
		r := pick(fmt.Sprint("sql-", i), model)
		if r.Status != llmrouterv1.PickResponse_ROUTED || r.Pool != "m:sql" {
			t.Fatalf("pick for %q: %v, want routed in pool m:sql", model, r)
		}
		for _, e := range r.Endpoints {
			if e != idle && e != running {
				t.Fatalf("pick for %q: endpoints %v include %s; want only the SGLang instances serving m and sql (%s, %s)", model, r.Endpoints, e, idle, running)
			}
		}
		if r.Endpoints[0] != running {
			t.Fatalf("pick for %q: endpoints %v, want %s (running sql, though busier) first: the request is for adapter sql", model, r.Endpoints, running)
		}
	}
	if r := pick("lit", "x:y"); r.Status != llmrouterv1.PickResponse_ROUTED || r.Pool != "x:y" || !slices.Equal(r.Endpoints, []string{literal}) {
		t.Fatalf("pick for x:y: %v, want %s alone, the engine serving x:y by that name (not SGLang's base x, adapter y at %s)", r, literal, sglX)
	}
	if r := pick("base", "m"); r.Status != llmrouterv1.PickResponse_ROUTED || r.Pool != "m" {
		t.Fatalf("pick for the base model: %v, want routed in pool m", r)
	}
	for _, model := range []string{"m:poetry", "m:", ":sql", "n:sql"} {
		r := pick("unknown", model)
		if r.Status != llmrouterv1.PickResponse_REJECTED || r.HttpStatus != 404 || !strings.Contains(r.Reason, fmt.Sprintf("%q", model)) ||
			!strings.Contains(r.Reason, "served models: m, sql, x, x:y, y") {
			t.Fatalf("pick for %q: %v, want 404 naming it and the served models m, sql, x, x:y, y (no base:adapter names)", model, r)
		}
	}
	if got, want := s.Models(), []string{"m", "sql", "x", "x:y", "y"}; !slices.Equal(got, want) {
		t.Fatalf("Models() = %q, want %q", got, want)
	}

	// The pool follows membership: without the SGLang instances serving
	// sql, m:sql is served by nobody (the vLLM instance still serves sql).
	s.Deregister(idle, 0, "test")
	s.Deregister(running, 0, "test")
	if r := pick("gone", "m:sql"); r.Status != llmrouterv1.PickResponse_REJECTED || r.HttpStatus != 404 {
		t.Fatalf("pick for m:sql with no SGLang instance serving sql: %v, want 404", r)
	}
	if r := pick("still", "sql"); r.Status != llmrouterv1.PickResponse_ROUTED || !slices.Equal(r.Endpoints, []string{vllm}) {
		t.Fatalf("pick for sql: %v, want %s, which serves it by name", r, vllm)
	}
}

// TestSplitSGLang: the model field split as SGLang splits it, at the first
// colon, both halves trimmed; a missing half is no adapter request.
func TestSplitSGLang(t *testing.T) {
	for _, c := range []struct{ in, base, adapter string }{
		{"meta-llama/Llama-3.1-8B-Instruct:sql", "meta-llama/Llama-3.1-8B-Instruct", "sql"},
		{"m:a:b", "m", "a:b"},
		{" m :\tsql ", "m", "sql"},
		{"m", "", ""},
		{"m:", "", ""},
		{":sql", "", ""},
		{" : ", "", ""},
	} {
		b, a, ok := splitSGLang(c.in)
		if ok != (c.base != "") || b != c.base && ok || a != c.adapter && ok {
			t.Errorf("splitSGLang(%q) = %q, %q, %v; want %q, %q", c.in, b, a, ok, c.base, c.adapter)
		}
	}
}

// TestSGLangLoRAPath: SGLang's older form, "model": "m" with "lora_path":
// "sql" in the body (PickRequest.lora_path), is routed as "m:sql": among
// the SGLang instances serving m and sql, scored as a request for sql. A
// lora_path no SGLang instance serves with m leaves the request to m's
// whole pool, as before the field was read (vLLM ignores it and serves
// m); an adapter in the model field wins over lora_path, as in SGLang.
func TestSGLangLoRAPath(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.Affinity.LoRA = true })
	idle, running, vllm, baseOnly := "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000", "10.0.0.4:8000"
	regEngine(t, s, idle, "sglang", "m", &llmrouterv1.Report{Healthy: true, LoraStateKnown: true, MaxLora: 2}, "sql", "chat")
	regEngine(t, s, running, "sglang", "m", &llmrouterv1.Report{Healthy: true, Running: 6, LoraStateKnown: true, LoraAdapters: []string{"sql"}, MaxLora: 2}, "sql")
	regEngine(t, s, vllm, "vllm", "m", load(0, 0), "sql")
	regEngine(t, s, baseOnly, "sglang", "m", load(0, 0))

	pick := func(id, model, loraPath string) *llmrouterv1.PickResponse {
		t.Helper()
		req := pickReq(id, model)
		req.LoraAdapter, req.LoraPath = model, loraPath // as the gateway sends them
		r, tk := s.TryPick(req, nil)
		if tk != nil || r.Status != llmrouterv1.PickResponse_ROUTED {
			t.Fatalf("pick %s for %q, lora_path %q: %v (queued %v), want routed", id, model, loraPath, r, tk != nil)
		}
		return r
	}
	for i := range 3 {
		r := pick(fmt.Sprint("lp-", i), "m", "sql")
		if r.Pool != "m:sql" || r.Endpoints[0] != running || slices.ContainsFunc(r.Endpoints, func(e string) bool { return e != idle && e != running }) {
			t.Fatalf("pick for m with lora_path sql: pool %q endpoints %v; want pool m:sql, %s (running sql) first, only %s and %s", r.Pool, r.Endpoints, running, idle, running)
		}
	}
	if r := pick("one", "m", "chat"); r.Pool != "m:chat" || !slices.Equal(r.Endpoints, []string{idle}) {
		t.Fatalf("pick for m with lora_path chat: pool %q endpoints %v; want %s alone", r.Pool, r.Endpoints, idle)
	}
	if r := pick("model-wins", "m:chat", "sql"); r.Pool != "m:chat" || !slices.Equal(r.Endpoints, []string{idle}) {
		t.Fatalf("pick for m:chat with lora_path sql: pool %q endpoints %v; want m:chat's %s alone (the model's adapter wins)", r.Pool, r.Endpoints, idle)
	}
	// Nobody serves m with poetry: routed by m, over its whole pool (each
	// pick's in-flight request makes the next go to another idle one).
	seen := map[string]bool{}
	for i := range 8 {
		r := pick(fmt.Sprint("poetry-", i), "m", "poetry")
		if r.Pool != "m" {
			t.Fatalf("pick for m with lora_path poetry: pool %q, want m (no SGLang instance serves poetry)", r.Pool)
		}
		seen[r.Endpoints[0]] = true
	}
	if !seen[vllm] && !seen[baseOnly] {
		t.Fatalf("picks for m with lora_path poetry went first to %v only, want the base model's whole pool", seen)
	}
}

// TestSGLangNamesBounded: one instance adds at most maxSGLangNames
// base:adapter pools however many base models and adapters it registers.
func TestSGLangNamesBounded(t *testing.T) {
	s, _ := newTestScheduler(t, nil)
	adapters := make([]string, 100)
	for i := range adapters {
		adapters[i] = fmt.Sprint("a", i)
	}
	bases := make([]string, maxSGLangNames/len(adapters)+2)
	for i := range bases {
		bases[i] = fmt.Sprint("b", i)
	}
	r := regMsg("10.0.0.1:8000", bases...)
	r.Engine, r.LoraAdapters = "sglang", adapters
	if _, err := s.Register(r); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	n := len(s.sglang)
	s.mu.Unlock()
	if n != maxSGLangNames {
		t.Fatalf("%d base:adapter pools for %d base models and %d adapters, want the bound %d", n, len(bases), len(adapters), maxSGLangNames)
	}
}

// TestSGLangAdapterQueued: a base:adapter request whose SGLang instance is
// saturated waits in the admission queue for it, though an idle vLLM
// instance serves the same base model and adapter, and is routed there
// when it has room.
func TestSGLangAdapterQueued(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.MaxWaiting = 1 })
	sgl, vllm := "10.0.0.1:8000", "10.0.0.2:8000"
	regEngine(t, s, sgl, "sglang", "m", load(4, 1), "sql")
	regEngine(t, s, vllm, "vllm", "m", load(0, 0), "sql")
	final := make(chan *llmrouterv1.PickResponse, 1)
	r, tk := s.TryPick(pickReq("q", "m:sql"), func(r *llmrouterv1.PickResponse) { final <- r })
	if tk == nil || r.Status != llmrouterv1.PickResponse_QUEUED || r.Pool != "m:sql" {
		t.Fatalf("pick for m:sql with its one SGLang instance saturated: %v, want queued in pool m:sql", r)
	}
	mustReport(t, s, sgl, load(4, 0))
	select {
	case r := <-final:
		if r.Status != llmrouterv1.PickResponse_ROUTED || !slices.Equal(r.Endpoints, []string{sgl}) {
			t.Fatalf("queued m:sql: %v, want routed to %s alone", r, sgl)
		}
	default:
		t.Fatal("queued m:sql not routed when its instance had room")
	}
}
