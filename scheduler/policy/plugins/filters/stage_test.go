package filters_test

import (
	"slices"
	"testing"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	"github.com/llmrouter/llmrouter/scheduler/policy/plugins/filters"
)

// stageFilter builds the stage filter typ with its defaults
// (llm_scheduler.max_waiting 16 for saturation-filter).
func stageFilter(t *testing.T, typ string) framework.Filter {
	t.Helper()
	x, err := framework.StagePlugin(nil, typ, policy.Deps{Config: config.Default()})
	if err != nil {
		t.Fatal(err)
	}
	return x.(framework.Filter)
}

func ids(l []*policy.Instance) []string {
	out := make([]string, len(l))
	for i, c := range l {
		out[i] = c.ID
	}
	return out
}

// TestStageFiltersNeverWriteTheirInput holds routable-filter and
// saturation-filter to framework.Filter's contract: the scheduler passes
// its own list of a pool's instances, so a filter returns that very list
// when it keeps every candidate and otherwise a subset of its own, in
// order, leaving the input as it was — also when a later call reuses its
// buffer for a shorter result.
func TestStageFiltersNeverWriteTheirInput(t *testing.T) {
	for _, tc := range []struct {
		typ  string
		drop func(c *policy.Instance) // makes c one the filter drops
	}{
		{filters.Routable, func(c *policy.Instance) { c.Routable = false }},
		{filters.Saturation, func(c *policy.Instance) { c.Waiting = 16 }},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			f := stageFilter(t, tc.typ)
			pool := make([]*policy.Instance, 6)
			for i := range pool {
				pool[i] = &policy.Instance{ID: string(rune('a' + i)), Routable: true}
			}
			orig := slices.Clone(pool)
			out := f.Filter(&framework.CycleState{}, &policy.Request{}, pool)
			if len(out) != len(pool) || &out[0] != &pool[0] {
				t.Fatalf("kept every candidate but returned %v, not the input itself", ids(out))
			}
			for _, dropped := range [][]int{{1, 3, 4}, {0}, {2, 5}, {0, 1, 2, 3, 4, 5}} {
				want := []string{}
				for i, c := range pool {
					*c = policy.Instance{ID: c.ID, Routable: true}
					if slices.Contains(dropped, i) {
						tc.drop(c)
					} else {
						want = append(want, c.ID)
					}
				}
				out := f.Filter(&framework.CycleState{}, &policy.Request{}, pool)
				if got := ids(out); !slices.Equal(got, want) {
					t.Fatalf("dropping %v kept %v, want %v", dropped, got, want)
				}
				if !slices.Equal(pool, orig) {
					t.Fatalf("dropping %v wrote to the input: %v", dropped, ids(pool))
				}
				if len(out) > 0 && &out[0] == &pool[0] {
					t.Fatalf("dropping %v returned the input's own array", dropped)
				}
			}
		})
	}
}
