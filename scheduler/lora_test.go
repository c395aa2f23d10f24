package scheduler

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/all"
)

// newLoRAScheduler is a scheduler whose policy is lora-affinity-scorer
// alone (with max-score-picker), from an EndpointPickerConfig file.
func newLoRAScheduler(t *testing.T) *Scheduler {
	t.Helper()
	p := filepath.Join(t.TempDir(), "epp.yaml")
	src := `apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- type: lora-affinity-scorer
- type: max-score-picker
schedulingProfiles:
- name: lora
  plugins:
  - pluginRef: lora-affinity-scorer
  - pluginRef: max-score-picker
`
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := newTestScheduler(t, func(c *config.Config) {
		c.Scheduler.EndpointPickerConfig = p
		c.Scheduler.Policy = "lora"
	})
	return s
}

// TestLoRAStateReachesTheScorer: what agents report of adapters waiting and
// adapter slots reaches the instances policies see, and lora-affinity-scorer
// grades by it: for an adapter no instance holds, the instance with a free
// slot comes first although it is the busiest, then the one where the
// adapter already waits to be loaded, then the one whose slots are full.
func TestLoRAStateReachesTheScorer(t *testing.T) {
	s := newLoRAScheduler(t)
	full, queued, room := "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"
	for _, a := range []string{full, queued, room} {
		// Reports name only adapters the registration serves.
		registerServing(t, s, a, &llmrouterv1.Report{Healthy: true}, "sql", "chat", "tools", "x", "y")
	}
	mustReport(t, s, full, &llmrouterv1.Report{Healthy: true, LoraAdapters: []string{"chat", "tools"}, MaxLora: 2})
	mustReport(t, s, queued, &llmrouterv1.Report{Healthy: true, LoraAdapters: []string{"chat"}, WaitingLoraAdapters: []string{"sql"}, MaxLora: 2})
	mustReport(t, s, room, &llmrouterv1.Report{Healthy: true, Running: 3, LoraAdapters: []string{"chat"}, MaxLora: 4})
	if v, _ := s.InstanceView(queued); !slices.Equal(v.WaitingLoRAs, []string{"sql"}) || v.MaxLoRA != 2 {
		t.Fatalf("view of %s: waiting %q, max_lora %d; want [sql], 2", queued, v.WaitingLoRAs, v.MaxLoRA)
	}
	pick := func(id string) []string {
		t.Helper()
		req := pickReq(id, "m")
		req.LoraAdapter = "sql"
		r, tk := s.TryPick(req, nil)
		if tk != nil || r.Status != llmrouterv1.PickResponse_ROUTED {
			t.Fatalf("pick %s: %v (queued %v)", id, r, tk != nil)
		}
		return r.Endpoints
	}
	if got := pick("a"); got[0] != room || got[1] != queued || got[2] != full {
		t.Fatalf("ranked %v, want %s (free slot), %s (adapter queued there), %s (slots full)", got, room, queued, full)
	}
	// The slot fills up: the instance where the adapter waits is next best.
	mustReport(t, s, room, &llmrouterv1.Report{Healthy: true, LoraAdapters: []string{"chat", "tools", "x", "y"}, MaxLora: 4})
	if got := pick("b"); got[0] != queued {
		t.Fatalf("ranked %v, want %s first (adapter queued there, no slot anywhere)", got, queued)
	}
}

// registerServing registers addr serving base model m and the given LoRA
// adapters (Register.lora_adapters, the agent's /v1/models list), with
// initial as its first report.
func registerServing(t *testing.T, s *Scheduler, addr string, initial *llmrouterv1.Report, adapters ...string) {
	t.Helper()
	r := regMsg(addr, "m")
	r.LoraAdapters, r.Initial = adapters, initial
	if _, err := s.Register(r); err != nil {
		t.Fatal(err)
	}
}

// TestLoRAStateExactWhenReported: when reports carry the engine's own
// account of its adapters (lora_state_known), lora-affinity-scorer grades by
// it, not by the adapters the engine merely serves: an adapter the engine
// stopped running no longer scores 1 there, and an engine that serves
// adapters but runs none has its slots free (0.8), as one serving none.
func TestLoRAStateExactWhenReported(t *testing.T) {
	s := newLoRAScheduler(t)
	stopped, fresh, served := "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"
	registerServing(t, s, stopped, &llmrouterv1.Report{Healthy: true, LoraStateKnown: true, LoraAdapters: []string{"sql"}, MaxLora: 1}, "sql", "tools")
	registerServing(t, s, fresh, &llmrouterv1.Report{Healthy: true, LoraStateKnown: true, MaxLora: 2})
	registerServing(t, s, served, &llmrouterv1.Report{Healthy: true, LoraStateKnown: true, MaxLora: 2}, "sql", "chat", "tools")
	// stopped's engine ran its last sql request; a request for another
	// adapter now waits for its one slot.
	mustReport(t, s, stopped, &llmrouterv1.Report{Healthy: true, LoraStateKnown: true, WaitingLoraAdapters: []string{"tools"}, MaxLora: 1})
	if v, _ := s.InstanceView(served); len(v.LoRAs) != 0 {
		t.Fatalf("%s serves sql, chat, tools and reports running none: loras %q, want none", served, v.LoRAs)
	}
	for i := range 8 { // ties between fresh and served fall at random
		req := pickReq(fmt.Sprint("r", i), "m")
		req.LoraAdapter = "sql"
		r, tk := s.TryPick(req, nil)
		if tk != nil || r.Status != llmrouterv1.PickResponse_ROUTED {
			t.Fatalf("pick: %v (queued %v)", r, tk != nil)
		}
		got := r.Endpoints
		if len(got) != 3 || got[2] != stopped || !slices.Contains(got[:2], fresh) || !slices.Contains(got[:2], served) {
			t.Fatalf("ranked %v, want %s and %s (free slot, 0.8) before %s (stopped running sql, its slot taken: 0)", got, fresh, served, stopped)
		}
	}
}

// TestLoRAAffinityFollowsTheRunningAdapters: the affinity wrapper (around
// least-request here) prefers the instance running the request's adapter
// over an idler one that only serves it, and a session whose instance
// stopped running the adapter yields to one running it.
func TestLoRAAffinityFollowsTheRunningAdapters(t *testing.T) {
	s, _ := newTestScheduler(t, nil)
	a, b := "10.0.0.1:8000", "10.0.0.2:8000"
	registerServing(t, s, a, &llmrouterv1.Report{Healthy: true, Running: 3, LoraStateKnown: true, LoraAdapters: []string{"sql"}, MaxLora: 2}, "sql")
	registerServing(t, s, b, &llmrouterv1.Report{Healthy: true, LoraStateKnown: true, MaxLora: 2}, "sql")
	pick := func(id string) string {
		t.Helper()
		req := pickReq(id, "m")
		req.LoraAdapter, req.SessionKey = "sql", "conversation"
		r, err := s.Pick(context.Background(), req, nil)
		if err != nil || r.GetStatus() != llmrouterv1.PickResponse_ROUTED {
			t.Fatalf("pick %s: %v %v", id, r, err)
		}
		return r.GetEndpoints()[0]
	}
	if got := pick("r1"); got != a {
		t.Fatalf("first turn went to %s, want %s (runs sql) over the idle %s (only serves it)", got, a, b)
	}
	mustReport(t, s, a, &llmrouterv1.Report{Healthy: true, LoraStateKnown: true, WaitingLoraAdapters: []string{"chat"}, MaxLora: 2})
	mustReport(t, s, b, &llmrouterv1.Report{Healthy: true, Running: 3, LoraStateKnown: true, LoraAdapters: []string{"sql"}, MaxLora: 2})
	if got := pick("r2"); got != b {
		t.Fatalf("second turn went to %s, want %s: the session's %s stopped running sql, %s runs it", got, b, a, b)
	}
}
