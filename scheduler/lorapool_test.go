package scheduler

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
)

// regWithAdapters registers addr serving base model m and, under their own
// model names, the given LoRA adapters (vLLM's --lora-modules: /v1/models
// lists each with parent m; the agent sends them as Register.lora_adapters).
func regWithAdapters(t *testing.T, s *Scheduler, addr string, adapters ...string) {
	t.Helper()
	r := regMsg(addr, "m")
	r.LoraAdapters = adapters
	if _, err := s.Register(r); err != nil {
		t.Fatal(err)
	}
}

// TestAdapterRequestRoutedToItsServers: a request naming a LoRA adapter as
// its model ("model": "sql", as clients of vLLM and SGLang ask for one) is
// routed among the instances that registered the adapter, never to one that
// serves only the base model; the base model is still routed among all.
// An adapter nobody serves is refused 404 naming what is served, adapters
// included, as Models lists them.
func TestAdapterRequestRoutedToItsServers(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.Affinity.LoRA = true })
	sqlA, sqlB, plain := "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"
	regWithAdapters(t, s, sqlA, "sql", "chat")
	regWithAdapters(t, s, sqlB, "sql")
	regWithAdapters(t, s, plain)
	// The idle instance serves no adapter: least-request would pick it.
	// Of the two serving sql, only the busier runs it now: LoRA affinity
	// ranks it first within the adapter's pool, as it does within a base
	// model's.
	mustReport(t, s, sqlA, &llmrouterv1.Report{Healthy: true, Running: 4, LoraAdapters: []string{"chat"}})
	mustReport(t, s, sqlB, &llmrouterv1.Report{Healthy: true, Running: 5, LoraAdapters: []string{"sql"}})
	mustReport(t, s, plain, load(0, 0))

	for i := range 4 {
		req := pickReq(fmt.Sprint("sql-", i), "sql")
		req.LoraAdapter = "sql" // as the gateway sends it (loraFor)
		r, tk := s.TryPick(req, nil)
		if tk != nil || r.Status != llmrouterv1.PickResponse_ROUTED {
			t.Fatalf("pick for adapter sql: %v (queued %v), want routed", r, tk != nil)
		}
		if r.Pool != "sql" || slices.Contains(r.Endpoints, plain) || r.Endpoints[0] != sqlB {
			t.Fatalf("pick for adapter sql: pool %q endpoints %v; want pool sql among %s, %s only, %s (running sql) first", r.Pool, r.Endpoints, sqlA, sqlB, sqlB)
		}
	}
	req := pickReq("chat", "chat")
	req.LoraAdapter = "chat"
	if r, _ := s.TryPick(req, nil); r.Status != llmrouterv1.PickResponse_ROUTED || !slices.Equal(r.Endpoints[:1], []string{sqlA}) || len(r.Endpoints) != 1 {
		t.Fatalf("pick for adapter chat: %v, want %s alone", r, sqlA)
	}
	if r, _ := s.TryPick(pickReq("base", "m"), nil); r.Status != llmrouterv1.PickResponse_ROUTED || r.Endpoints[0] != plain {
		t.Fatalf("pick for the base model: %v, want %s (least loaded) first", r, plain)
	}
	if got, want := s.Models(), []string{"chat", "m", "sql"}; !slices.Equal(got, want) {
		t.Fatalf("Models() = %q, want %q", got, want)
	}
	req = pickReq("nope", "poetry")
	req.LoraAdapter = "poetry"
	r, _ := s.TryPick(req, nil)
	if r.Status != llmrouterv1.PickResponse_REJECTED || r.HttpStatus != 404 || !strings.Contains(r.Reason, `"poetry"`) || !strings.Contains(r.Reason, "chat, m, sql") {
		t.Fatalf("pick for an adapter nobody serves: %v, want 404 naming it and the served models chat, m, sql", r)
	}
}

// TestAdapterLoadedAtRuntime: an agent re-registering over its stream
// because its engine loaded or unloaded an adapter (engine_unchanged) moves
// the instance into or out of the adapter's pool, and the scheduler keeps
// what it learnt of the instance: a session stays where it was. Without
// engine_unchanged the re-registration is a restarted engine, learnt
// afresh.
func TestAdapterLoadedAtRuntime(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.Affinity.Session = true })
	a, b := "10.0.0.1:8000", "10.0.0.2:8000"
	la := mustRegister(t, s, a)
	lb := mustRegister(t, s, b)
	pick := func(id, model, session string) *llmrouterv1.PickResponse {
		t.Helper()
		req := pickReq(id, model)
		req.LoraAdapter, req.SessionKey = model, session
		r, tk := s.TryPick(req, nil)
		if tk != nil {
			t.Fatalf("pick %s queued", id)
		}
		return r
	}
	if r := pick("s0", "sql", ""); r.HttpStatus != 404 {
		t.Fatalf("before any adapter: %v, want 404", r)
	}
	mustReport(t, s, b, load(3, 0))
	if r := pick("s1", "m", "conv"); r.Endpoints[0] != a {
		t.Fatalf("session's first pick %v, want %s (least loaded)", r.Endpoints, a)
	}
	mustReport(t, s, a, load(6, 0))

	// a loads sql at runtime: its agent re-registers, engine unchanged.
	re := regMsg(a, "m")
	re.LoraAdapters, re.EngineUnchanged = []string{"sql"}, true
	re.Initial = load(6, 0)
	la2, err := s.RegisterAs(re, la)
	if err != nil {
		t.Fatal(err)
	}
	if r := pick("s2", "sql", ""); r.Status != llmrouterv1.PickResponse_ROUTED || !slices.Equal(r.Endpoints, []string{a}) {
		t.Fatalf("after a loaded sql: %v, want %s alone", r, a)
	}
	if r := pick("s3", "m", "conv"); r.Endpoints[0] != a {
		t.Fatalf("session after the adapter load: %v, want %s still (the engine did not restart)", r.Endpoints, a)
	}

	// a unloads it and, another time, restarts: sql is gone, and the
	// session with it (a restarted engine's cache holds nothing of it).
	re = regMsg(a, "m")
	re.Initial = load(6, 0)
	if _, err := s.RegisterAs(re, la2); err != nil {
		t.Fatal(err)
	}
	if r := pick("s4", "sql", ""); r.HttpStatus != 404 {
		t.Fatalf("after a unloaded sql: %v, want 404", r)
	}
	if r := pick("s5", "m", "conv"); r.Endpoints[0] != b {
		t.Fatalf("session after a restart: %v, want %s (least loaded; the session went with the engine)", r.Endpoints, b)
	}

	// engine_unchanged with other base models is not believed: what was
	// learnt of the instance was about another model.
	re = regMsg(b, "m", "m2")
	re.EngineUnchanged, re.Initial = true, load(9, 0)
	if _, err := s.RegisterAs(re, lb); err != nil {
		t.Fatal(err)
	}
	if r := pick("s6", "m", "conv"); r.Endpoints[0] != a {
		t.Fatalf("session after a base model change: %v, want %s (least loaded; the session dropped)", r.Endpoints, a)
	}
}
