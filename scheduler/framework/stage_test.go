package framework_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	"github.com/llmrouter/llmrouter/scheduler/policy/plugins/filters"
)

// countingStage is a stage filter that counts its runs.
type countingStage struct{ runs *int }

func (c countingStage) Filter(_ *framework.CycleState, _ *policy.Request, cands []*policy.Instance) []*policy.Instance {
	*c.runs++
	return cands[:1]
}

var stageRuns int

func init() {
	framework.RegisterStage("test-stage-filter", func(_ *framework.Handle, p framework.Params) (any, error) {
		return countingStage{&stageRuns}, p.Decode(&struct{}{})
	})
}

// TestStageFiltersRunOnce: a profile may reference a stage filter (the
// scheduler runs it ahead of every profile); the profile does not run it
// again, and the scheduler's stage gets the very plugin the file declared.
func TestStageFiltersRunOnce(t *testing.T) {
	src := header + `plugins:
- type: test-stage-filter
- type: queue-scorer
schedulingProfiles:
- name: p
  plugins:
  - pluginRef: test-stage-filter
  - pluginRef: queue-scorer
`
	s, err := load(t, src)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := framework.Build(s, "p", deps())
	if err != nil {
		t.Fatal(err)
	}
	stageRuns = 0
	c := []*policy.Instance{{ID: "a"}, {ID: "b", Waiting: 3}}
	d := pol.Pick(&policy.Request{ID: "r"}, c)
	if stageRuns != 0 || len(d.Ranked) != 2 {
		t.Fatalf("the profile ran its stage filter (%d runs, ranked %d)", stageRuns, len(d.Ranked))
	}
	x, err := framework.StagePlugin(pol, "test-stage-filter", deps())
	if err != nil {
		t.Fatal(err)
	}
	x.(framework.Filter).Filter(nil, nil, c)
	if stageRuns != 1 {
		t.Fatal("StagePlugin did not return the profile's own plugin")
	}
	if _, err := framework.StagePlugin(pol, "queue-scorer", deps()); err == nil || !strings.Contains(err.Error(), "not a stage filter type") {
		t.Fatalf("StagePlugin of a scorer: %v", err)
	}

	// A weight on a stage filter is refused like on any filter.
	bad := strings.Replace(src, "  - pluginRef: test-stage-filter\n", "  - pluginRef: test-stage-filter\n    weight: 2\n", 1)
	if _, err := load(t, bad); err == nil || !strings.Contains(err.Error(), `pluginRef "test-stage-filter": weight: only a scorer takes one`) {
		t.Fatalf("weight on a stage filter: %v", err)
	}
}

// TestStageTypes: the scheduler's stage is routable-filter then
// saturation-filter, and a built-in profile gets them with their
// defaults: saturation-filter's from llm_scheduler.
func TestStageTypes(t *testing.T) {
	st := framework.StageTypes()
	r, s := slices.Index(st, filters.Routable), slices.Index(st, filters.Saturation)
	if r < 0 || s < 0 || r > s {
		t.Fatalf("stage types %v: want routable-filter then saturation-filter", st)
	}
	d := deps()
	d.Config.Scheduler.MaxWaiting, d.Config.Scheduler.MaxKVCacheUsage, d.Config.Scheduler.MaxPredictedWait = 7, 0.5, 3e9
	pol, err := framework.Resolver{}.New("least-request", d)
	if err != nil {
		t.Fatal(err)
	}
	x, err := framework.StagePlugin(pol, filters.Saturation, d)
	if err != nil {
		t.Fatal(err)
	}
	got := x.(*filters.SaturationFilter).Params()
	if got.MaxWaiting != 7 || got.MaxKVCacheUsage != 0.5 || got.MaxPredictedWait != 3e9 {
		t.Fatalf("defaults %+v: want llm_scheduler's 7, 0.5, 3s", got)
	}
}
