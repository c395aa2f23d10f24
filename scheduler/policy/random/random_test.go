package random

import (
	"math/rand/v2"
	"testing"

	"github.com/llmrouter/llmrouter/scheduler/policy"
)

func TestUniformAndComplete(t *testing.T) {
	p, err := policy.New(Name, policy.Deps{Rand: rand.New(rand.NewPCG(3, 4))})
	if err != nil {
		t.Fatal(err)
	}
	cands := []*policy.Instance{{ID: "a"}, {ID: "b", Running: 50}, {ID: "c"}}
	counts := map[string]int{}
	for range 3000 {
		d := p.Pick(&policy.Request{}, cands)
		if len(d.Ranked) != 3 || d.Ranked[0] == d.Ranked[1] || d.Ranked[1] == d.Ranked[2] || d.Ranked[0] == d.Ranked[2] {
			t.Fatalf("not a permutation: %v", d.Ranked)
		}
		counts[d.Ranked[0].ID]++
	}
	for id, n := range counts {
		if n < 800 || n > 1200 {
			t.Fatalf("%s first %d of 3000 times: %v", id, n, counts)
		}
	}
	if cands[0].ID != "a" || cands[1].ID != "b" || cands[2].ID != "c" {
		t.Fatal("the candidates slice was modified")
	}
}
