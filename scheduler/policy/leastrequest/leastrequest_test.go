package leastrequest

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

func newPolicy(t *testing.T) policy.Policy {
	t.Helper()
	p, err := policy.New(Name, policy.Deps{Config: config.Default(), Rand: rand.New(rand.NewPCG(1, 2))}) // retry_count 2: three ranks
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPicksLeastLoaded(t *testing.T) {
	p := newPolicy(t)
	a := &policy.Instance{ID: "a", Running: 5, Waiting: 2}
	b := &policy.Instance{ID: "b", Running: 3, InflightRequests: 1} // load 4
	c := &policy.Instance{ID: "c", Running: 1, Waiting: 4}          // load 5
	d := p.Pick(&policy.Request{}, []*policy.Instance{a, b, c})
	got := []string{d.Ranked[0].ID, d.Ranked[1].ID, d.Ranked[2].ID}
	if got[0] != "b" || got[1] != "c" || got[2] != "a" {
		t.Fatalf("ranking = %v, want [b c a]", got)
	}
}

func TestTiesBrokenAtRandom(t *testing.T) {
	p := newPolicy(t)
	cands := []*policy.Instance{{ID: "a", Running: 1}, {ID: "b", Running: 1}, {ID: "c", Running: 1}, {ID: "d", Running: 9}}
	counts := map[string]int{}
	for range 3000 {
		counts[p.Pick(&policy.Request{}, cands).Ranked[0].ID]++
	}
	if counts["d"] != 0 {
		t.Fatalf("the loaded instance was picked first: %v", counts)
	}
	for _, id := range []string{"a", "b", "c"} {
		if counts[id] < 800 || counts[id] > 1200 {
			t.Fatalf("tie not shared evenly: %v", counts)
		}
	}
}

// The partial selection must agree with a full sort on the loads it returns.
func TestSelectionMatchesSort(t *testing.T) {
	p := newPolicy(t)
	r := rand.New(rand.NewPCG(5, 6))
	for range 200 {
		n := 1 + r.IntN(40)
		cands := make([]*policy.Instance, n)
		loads := make([]int64, n)
		for i := range cands {
			cands[i] = &policy.Instance{ID: string(rune('a' + i)), Running: r.Int64N(6)}
			loads[i] = cands[i].Running
		}
		slices.Sort(loads)
		d := p.Pick(&policy.Request{}, cands)
		if len(d.Ranked) != min(3, n) {
			t.Fatalf("ranked %d of %d", len(d.Ranked), n)
		}
		for i, inst := range d.Ranked {
			if inst.Load() != loads[i] {
				t.Fatalf("rank %d load %d, want %d", i, inst.Load(), loads[i])
			}
		}
	}
}
