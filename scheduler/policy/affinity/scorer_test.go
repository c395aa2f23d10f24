package affinity_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/all"
)

// TestSessionScorer: weighted 2 against load-scorer 1, a session stays home
// while home is busier, and a session whose home left goes by load.
func TestSessionScorer(t *testing.T) {
	build := func(params string) (policy.Policy, error) {
		spec, err := framework.ParseEndpointPickerConfig([]byte(`
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: session-affinity-scorer` + params + `
- type: load-scorer
schedulingProfiles:
- name: sticky
  plugins:
  - {pluginRef: session-affinity-scorer, weight: 2}
  - {pluginRef: load-scorer}
`))
		if err != nil {
			return nil, err
		}
		return framework.Build(spec, "sticky", policy.Deps{Config: config.Default(), Rand: rand.New(rand.NewPCG(1, 2))})
	}
	p, err := build("")
	if err != nil {
		t.Fatal(err)
	}
	a, b := &policy.Instance{ID: "a"}, &policy.Instance{ID: "b"}
	req := &policy.Request{SessionKey: "s1"}
	obs := p.(policy.Observer)
	obs.Picked(req, policy.Decision{Ranked: []*policy.Instance{b}})
	b.Running = 5
	if d := p.Pick(req, []*policy.Instance{a, b}); d.Ranked[0] != b {
		t.Fatalf("picked %s, want home b (2 for the session beats 1 for the load)", d.Ranked[0].ID)
	}
	if d := p.Pick(&policy.Request{SessionKey: "s2"}, []*policy.Instance{a, b}); d.Ranked[0] != a {
		t.Fatalf("a new session went to %s, want the idle a", d.Ranked[0].ID)
	}
	obs.Removed("b")
	if d := p.Pick(req, []*policy.Instance{a, b}); d.Ranked[0] != a {
		t.Fatalf("home removed: picked %s, want the idle a", d.Ranked[0].ID)
	}
	if _, err := build("\n  parameters: {maxSessions: 0}"); err == nil || !strings.Contains(err.Error(), "parameter maxSessions 0: accepted: 1 or more") {
		t.Fatalf("bad parameter: %v", err)
	}
}
