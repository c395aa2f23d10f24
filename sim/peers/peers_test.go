package peers

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

type peer interface {
	policy.Policy
	policy.Observer
}

// newP builds the built-in profile name, as the scheduler would.
func newP(t *testing.T, name string) peer {
	t.Helper()
	p, err := framework.Resolver{}.New(name, policy.Deps{Config: config.Default(), Rand: rand.New(rand.NewPCG(1, 1))})
	if err != nil {
		t.Fatal(err)
	}
	return p.(peer)
}

func chain(seed uint64, n int) []uint64 {
	out := make([]uint64, n)
	h := seed
	for i := range out {
		h = h*0x100000001B3 ^ uint64(i+1)
		out[i] = h
	}
	return out
}

func fleet(n int) []*policy.Instance {
	out := make([]*policy.Instance, n)
	for i := range out {
		out[i] = &policy.Instance{ID: fmt.Sprint("i", i)}
	}
	return out
}

func teach(p peer, c *policy.Instance, hs []uint64) {
	p.Picked(&policy.Request{BlockHashes: hs}, policy.Decision{Ranked: []*policy.Instance{c}})
}

// TestCacheAwareRules: the longest match above 30 % wins even when busier;
// below it, the instance holding the fewest blocks; an imbalance of more
// than 64 requests and 1.5× sends the request to the least loaded.
func TestCacheAwareRules(t *testing.T) {
	p := newP(t, CacheAware)
	c := fleet(3)
	conv := chain(7, 10)
	teach(p, c[0], conv)
	teach(p, c[1], chain(8, 40)) // c[1] holds the most blocks, c[2] none
	c[0].Running, c[1].Running, c[2].Running = 30, 0, 0
	if d := p.Pick(&policy.Request{BlockHashes: append(conv[:10:10], chain(9, 10)...)}, c); d.Ranked[0] != c[0] {
		t.Fatalf("a 50 %% match went to %s, want the busier holder %s", d.Ranked[0].ID, c[0].ID)
	}
	if d := p.Pick(&policy.Request{BlockHashes: append(conv[:2:2], chain(10, 18)...)}, c); d.Ranked[0] != c[2] {
		t.Fatalf("a 10 %% match went to %s, want %s, which holds the fewest blocks", d.Ranked[0].ID, c[2].ID)
	}
	c[0].Running, c[2].Running = 100, 10 // 90 over the idlest, 10×
	c[1].Running = 20
	if d := p.Pick(&policy.Request{BlockHashes: conv}, c); d.Ranked[0] != c[2] {
		t.Fatalf("imbalanced fleet: %s, want the least loaded %s", d.Ranked[0].ID, c[2].ID)
	}
}

// TestScorerWeights: a full prefix match (3) outweighs a KV cache 60 %
// full (2 × 0.6 lost) but not that plus the longest queue (2 lost); ties are
// broken at random.
func TestScorerWeights(t *testing.T) {
	p := newP(t, Scorer)
	c := fleet(2)
	conv := chain(3, 8)
	teach(p, c[0], conv)
	c[0].KVCacheUsage = 0.6
	if d := p.Pick(&policy.Request{BlockHashes: conv}, c); d.Ranked[0] != c[0] {
		t.Fatalf("full match, KV 60 %% full: %s, want %s (5.8 against 4)", d.Ranked[0].ID, c[0].ID)
	}
	c[0].Waiting = 5
	if d := p.Pick(&policy.Request{BlockHashes: conv}, c); d.Ranked[0] != c[1] {
		t.Fatalf("full match but the longest queue and KV 60 %% full: %s, want %s (3.8 against 4)", d.Ranked[0].ID, c[1].ID)
	}
	fresh := fleet(2)
	got := map[string]int{}
	for i := range 200 {
		got[p.Pick(&policy.Request{BlockHashes: chain(uint64(100+i), 4)}, fresh).Ranked[0].ID]++
	}
	if got["i0"] < 50 || got["i1"] < 50 {
		t.Fatalf("tied instances: %v, want both picked", got)
	}
}

// TestFilesAreTheDocsExamples: the built-in profiles are the files docs/
// ships, byte for byte.
func TestFilesAreTheDocsExamples(t *testing.T) {
	for _, name := range []string{CacheAware, Scorer} {
		ours, err := files.ReadFile(name + ".yaml")
		if err != nil {
			t.Fatal(err)
		}
		docs, err := os.ReadFile("../../docs/examples/endpoint-picker/" + name + ".yaml")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ours, docs) {
			t.Errorf("sim/peers/%s.yaml differs from docs/examples/endpoint-picker/%[1]s.yaml", name)
		}
	}
}
