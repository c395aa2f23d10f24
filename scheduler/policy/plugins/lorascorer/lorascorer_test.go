package lorascorer_test

import (
	"math/rand/v2"
	"testing"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/all"
)

// TestHolderWins: in a profile with the queue, the instance holding the
// adapter wins unless its queue outweighs the adapter's weight.
func TestHolderWins(t *testing.T) {
	spec, err := framework.ParseEndpointPickerConfig([]byte(`
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: lora-affinity-scorer
- type: queue-scorer
schedulingProfiles:
- name: lora
  plugins:
  - {pluginRef: lora-affinity-scorer, weight: 2}
  - {pluginRef: queue-scorer, weight: 1}
`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := framework.Build(spec, "lora", policy.Deps{Config: config.Default(), Rand: rand.New(rand.NewPCG(1, 2))})
	if err != nil {
		t.Fatal(err)
	}
	a := &policy.Instance{ID: "a", Waiting: 3}
	b := &policy.Instance{ID: "b", Waiting: 0, LoRAs: []string{"sql"}}
	c := &policy.Instance{ID: "c", Waiting: 1}
	req := &policy.Request{LoRA: "sql"}
	if d := p.Pick(req, []*policy.Instance{a, b, c}); d.Ranked[0] != b {
		t.Fatalf("picked %s, want b (holds the adapter, shortest queue)", d.Ranked[0].ID)
	}
	b.Waiting = 3 // now b loses the whole queue score (1) but keeps the adapter's (2)
	if d := p.Pick(req, []*policy.Instance{a, b, c}); d.Ranked[0] != b {
		t.Fatalf("picked %s, want b (2 for the adapter beats 1 for the queue)", d.Ranked[0].ID)
	}
	if d := p.Pick(&policy.Request{}, []*policy.Instance{a, b, c}); d.Ranked[0] != c {
		t.Fatalf("no adapter asked: picked %s, want c (shortest queue)", d.Ranked[0].ID)
	}
}
