package scorers_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/all"
)

// scores builds a one-scorer profile of typ with params and returns its
// scores of cands.
func scores(t *testing.T, typ, params string, cands []*policy.Instance) ([]float64, error) {
	t.Helper()
	src := "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n- type: " + typ + "\n"
	if params != "" {
		src += "  parameters: " + params + "\n"
	}
	src += "schedulingProfiles:\n- name: p\n  plugins: [{pluginRef: " + typ + "}]\n"
	spec, err := framework.ParseEndpointPickerConfig([]byte(src))
	if err != nil {
		return nil, err
	}
	pol, err := framework.Build(spec, "p", policy.Deps{Config: config.Default(), Rand: rand.New(rand.NewPCG(1, 2))})
	if err != nil {
		return nil, err
	}
	return append([]float64(nil), pol.(*framework.Profile).Scores(&policy.Request{}, cands)...), nil
}

// TestKVCacheUtilizationScorer: the newer upstream name of kv-cache-scorer
// scores as it does (1 − usage) by default, relative to the other
// candidates with normalizeScore, and refuses other parameters by name.
func TestKVCacheUtilizationScorer(t *testing.T) {
	cands := []*policy.Instance{{ID: "a", KVCacheUsage: 0.2}, {ID: "b", KVCacheUsage: 0.5}, {ID: "c", KVCacheUsage: 0.6}}
	for _, tc := range []struct {
		typ, params string
		want        []float64
	}{
		{"kv-cache-scorer", "", []float64{0.8, 0.5, 0.4}},
		{"kv-cache-utilization-scorer", "", []float64{0.8, 0.5, 0.4}},
		{"kv-cache-utilization-scorer", "{normalizeScore: false}", []float64{0.8, 0.5, 0.4}},
		{"kv-cache-utilization-scorer", "{normalizeScore: true}", []float64{1, 0.25, 0}},
	} {
		got, err := scores(t, tc.typ, tc.params, cands)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.typ, tc.params, err)
		}
		for i := range got {
			if math.Abs(got[i]-tc.want[i]) > 1e-9 {
				t.Fatalf("%s %s: scores %v, want %v", tc.typ, tc.params, got, tc.want)
			}
		}
	}
	equal := []*policy.Instance{{ID: "a", KVCacheUsage: 0.7}, {ID: "b", KVCacheUsage: 0.7}}
	if got, err := scores(t, "kv-cache-utilization-scorer", "{normalizeScore: true}", equal); err != nil || got[0] != 1 || got[1] != 1 {
		t.Fatalf("equal usage: %v %v, want all 1", got, err)
	}
	for params, want := range map[string][]string{
		"{normalise: true}":       {`"normalise"`, "normalizeScore"},
		"{normalizeScore: maybe}": {"normalizeScore", "true or false"},
	} {
		_, err := scores(t, "kv-cache-utilization-scorer", params, cands)
		for _, w := range append(want, `plugin "kv-cache-utilization-scorer"`) {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("parameters %s: error %v does not name %q", params, err, w)
			}
		}
	}
}
