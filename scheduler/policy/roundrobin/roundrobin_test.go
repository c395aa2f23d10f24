package roundrobin

import (
	"fmt"
	"testing"

	"github.com/llmrouter/llmrouter/scheduler/policy"
)

func TestEvenSpreadAndFullRanking(t *testing.T) {
	p, err := policy.New(Name, policy.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	cands := make([]*policy.Instance, 4)
	for i := range cands {
		cands[i] = &policy.Instance{ID: fmt.Sprint(i), Running: int64(100 * i)} // load is ignored
	}
	counts := map[string]int{}
	for range 400 {
		d := p.Pick(&policy.Request{}, cands)
		if len(d.Ranked) != 4 {
			t.Fatalf("ranked %d of 4", len(d.Ranked))
		}
		seen := map[string]bool{}
		for _, r := range d.Ranked {
			seen[r.ID] = true
		}
		if len(seen) != 4 {
			t.Fatalf("ranking repeats an instance: %v", d.Ranked)
		}
		counts[d.Ranked[0].ID]++
	}
	for id, n := range counts {
		if n != 100 {
			t.Fatalf("instance %s first %d times of 400, want 100: %v", id, n, counts)
		}
	}
}
