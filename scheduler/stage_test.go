package scheduler

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/all"
)

// stageFile is an EndpointPickerConfig whose profile names the stage's
// filters, saturation-filter with its own maxWaiting.
func stageFile(t *testing.T, satParams string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "epp.yaml")
	src := `apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: routable-filter
- type: saturation-filter
` + satParams + `
- type: queue-scorer
- type: max-score-picker
schedulingProfiles:
- name: tight
  plugins:
  - pluginRef: routable-filter
  - pluginRef: saturation-filter
  - pluginRef: queue-scorer
  - pluginRef: max-score-picker
`
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestStageRunsTheFileSaturationFilter: the scheduler's saturation stage
// is the saturation-filter plugin an EndpointPickerConfig declares, with
// its parameters: maxWaiting 1 holds back an instance with one request
// waiting, which llm_scheduler.max_waiting (16, the parameter's default)
// lets through.
func TestStageRunsTheFileSaturationFilter(t *testing.T) {
	for _, tc := range []struct {
		params string
		queued bool
	}{
		{"  parameters:\n    maxWaiting: 1", true},
		{"", false},
	} {
		s, _ := newTestScheduler(t, func(c *config.Config) {
			c.Scheduler.EndpointPickerConfig = stageFile(t, tc.params)
			c.Scheduler.Policy = "tight"
			c.Scheduler.MaxWaiting = 16
		})
		mustRegister(t, s, "10.0.0.1:8000")
		mustReport(t, s, "10.0.0.1:8000", load(4, 1))
		r, tk := s.TryPick(pickReq("a", "m"), nil)
		if got := tk != nil; got != tc.queued {
			t.Fatalf("parameters %q: queued = %v, want %v (%v)", tc.params, got, tc.queued, r)
		}
		if v, _ := s.InstanceView("10.0.0.1:8000"); v.Saturated != tc.queued {
			t.Fatalf("parameters %q: view saturated = %v, want %v", tc.params, v.Saturated, tc.queued)
		}
		if !tc.queued && (r.Status != llmrouterv1.PickResponse_ROUTED || r.Policy != "tight") {
			t.Fatalf("not routed by the profile: %v", r)
		}
	}
}

// TestStageBadParameterRefused: a bad saturation-filter parameter stops the
// scheduler with an error naming the plugin, the parameter and what is
// accepted.
func TestStageBadParameterRefused(t *testing.T) {
	for _, tc := range []struct{ params, want string }{
		{"  parameters:\n    maxKVCacheUsage: 1.5", "maxKVCacheUsage 1.5: accepted: a fraction in (0, 1]"},
		{"  parameters:\n    maxWaiting: -1", "maxWaiting -1: accepted: 0 (off) or more"},
		{"  parameters:\n    maxPredictedWait: -2s", "maxPredictedWait -2s: accepted: 0 (off) or a positive duration"},
		{"  parameters:\n    threshold: 2", "unknown parameter \"threshold\"; accepted: maxWaiting, maxKVCacheUsage, maxPredictedWait"},
	} {
		cfg := testConfig()
		cfg.Scheduler.EndpointPickerConfig = stageFile(t, tc.params)
		cfg.Scheduler.Policy = "tight"
		_, err := New(cfg, Deps{Clock: newFakeClock()})
		if err == nil || !strings.Contains(err.Error(), `plugin "saturation-filter"`) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%q: err = %v, want one naming the plugin and %q", tc.params, err, tc.want)
		}
		if err := CheckPolicies(cfg); err == nil {
			t.Fatalf("%q: CheckPolicies accepted it", tc.params)
		}
	}
}

// TestStageRoutableFilter: an instance that may not take picks (draining)
// is dropped by the stage before any policy sees it, and comes back when
// resumed.
func TestStageRoutableFilter(t *testing.T) {
	s, _ := newTestScheduler(t, nil)
	for i := 1; i <= 2; i++ {
		a := fmt.Sprintf("10.0.0.%d:8000", i)
		mustRegister(t, s, a)
		mustReport(t, s, a, load(0, 0))
	}
	if err := s.Drain("10.0.0.1:8000", "test"); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		r, _ := s.TryPick(pickReq(fmt.Sprint(i), "m"), nil)
		if len(r.Endpoints) != 1 || r.Endpoints[0] != "10.0.0.2:8000" {
			t.Fatalf("draining instance offered: %v", r)
		}
	}
	if err := s.Resume("10.0.0.1:8000", "test"); err != nil {
		t.Fatal(err)
	}
	r, _ := s.TryPick(pickReq("after", "m"), nil)
	if len(r.Endpoints) != 2 {
		t.Fatalf("resumed instance not back among the candidates: %v", r)
	}
}

// TestStageLeavesThePoolListAlone: a decision hands the pool's own list to
// the stage filters and, when they keep everything, to the policy
// (framework.Filter, policy.Policy: neither writes to it). Every built-in
// policy, over a fleet with a draining and two saturated instances and
// with every instance open, leaves it as it was: the pool's instances in
// ID order.
func TestStageLeavesThePoolListAlone(t *testing.T) {
	for _, pol := range conformancePolicies(t) {
		t.Run(pol, func(t *testing.T) {
			s, addrs := newFleet(t, pol, 6, nil)
			want := slices.Clone(s.poolViews["m"])
			for round := range 2 {
				if round == 0 {
					if err := s.Drain(addrs[1], "test"); err != nil {
						t.Fatal(err)
					}
					mustReport(t, s, addrs[3], load(0, 4)) // max_waiting 4
					mustReport(t, s, addrs[4], load(0, 4))
				} else {
					if err := s.Resume(addrs[1], "test"); err != nil {
						t.Fatal(err)
					}
					mustReport(t, s, addrs[3], load(0, 0))
					mustReport(t, s, addrs[4], load(0, 0))
				}
				for i := range 12 {
					id := fmt.Sprintf("r%d-%d", round, i)
					route(t, s, prompt(id, uint64(i%3), 8))
					done(t, s, id)
				}
				if got := s.poolViews["m"]; !slices.Equal(got, want) {
					t.Fatalf("round %d: the pool's list changed under the decisions: %v", round, got)
				}
			}
		})
	}
}
