package scheduler

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/all"
)

// TestLoRAStateReachesTheScorer: what agents report of adapters waiting and
// adapter slots reaches the instances policies see, and lora-affinity-scorer
// grades by it: for an adapter no instance holds, the instance with a free
// slot comes first although it is the busiest, then the one where the
// adapter already waits to be loaded, then the one whose slots are full.
func TestLoRAStateReachesTheScorer(t *testing.T) {
	p := filepath.Join(t.TempDir(), "epp.yaml")
	src := `apiVersion: inference.networking.x-k8s.io/v1alpha1
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
	full, queued, room := "10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"
	for _, a := range []string{full, queued, room} {
		mustRegister(t, s, a)
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
