package metricbased

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

func newPolicy(t *testing.T, mut func(*config.Config)) policy.Policy {
	t.Helper()
	c := config.Default()
	if mut != nil {
		mut(&c)
	}
	p, err := policy.New(Name, policy.Deps{Config: c, Rand: rand.New(rand.NewPCG(1, 1))})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func fleet(n int) []*policy.Instance {
	out := make([]*policy.Instance, n)
	for i := range out {
		out[i] = &policy.Instance{ID: fmt.Sprint(i)}
	}
	return out
}

func TestEachSignalSteers(t *testing.T) {
	p := newPolicy(t, nil)
	for _, tc := range []struct {
		name string
		set  func(bad, good *policy.Instance)
	}{
		{"waiting", func(b, _ *policy.Instance) { b.Waiting = 3 }},
		{"in-flight picks", func(b, _ *policy.Instance) { b.InflightRequests = 3 }},
		{"kv usage", func(b, _ *policy.Instance) { b.KVCacheUsage = 0.9 }},
		{"running", func(b, _ *policy.Instance) { b.Running = 5 }},
		{"throughput", func(_, g *policy.Instance) { g.GenTPS = 3000 }},
	} {
		c := fleet(2)
		tc.set(c[0], c[1])
		for range 20 {
			if got := p.Pick(&policy.Request{}, c).Ranked[0]; got != c[1] {
				t.Fatalf("%s: picked the worse instance", tc.name)
			}
		}
	}
}

func TestWeightsAreConfigurable(t *testing.T) {
	c := fleet(2)
	c[0].Waiting, c[0].KVCacheUsage = 4, 0.1 // long queue, little KV
	c[1].Waiting, c[1].KVCacheUsage = 0, 0.9 // no queue, KV nearly full
	if got := newPolicy(t, nil).Pick(&policy.Request{}, c).Ranked[0]; got != c[1] {
		t.Fatal("by default the queue should weigh more than KV usage")
	}
	w := DefaultParams(config.Default())
	w.KVCacheWeight = 5
	kvHeavy := New(policy.Deps{Config: config.Default(), Rand: rand.New(rand.NewPCG(1, 1))}, w)
	if got := kvHeavy.Pick(&policy.Request{}, c).Ranked[0]; got != c[0] {
		t.Fatal("with kv_cache_weight 5, KV usage should dominate")
	}
}

func TestTiesRandomAndEmpty(t *testing.T) {
	p := newPolicy(t, nil)
	if d := p.Pick(&policy.Request{}, nil); len(d.Ranked) != 0 {
		t.Fatal("ranked something out of nothing")
	}
	c := fleet(3)
	first := map[*policy.Instance]int{}
	for range 3000 {
		first[p.Pick(&policy.Request{}, c).Ranked[0]]++
	}
	for _, x := range c {
		if first[x] < 800 || first[x] > 1200 {
			t.Fatalf("ties not shared: %v", first)
		}
	}
}
