package prefixindex

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmrouter/llmrouter/internal/config"
)

// model is the obviously correct index: per instance an ordered LRU list.
type model struct {
	cap  map[string]int
	lru  map[string][]uint64 // most recent first
	held map[string]map[uint64]bool
}

func newModel() *model {
	return &model{cap: map[string]int{}, lru: map[string][]uint64{}, held: map[string]map[uint64]bool{}}
}

func (m *model) insert(id string, c int, hs []uint64) {
	m.cap[id] = c
	if m.held[id] == nil {
		m.held[id] = map[uint64]bool{}
	}
	for i := len(hs) - 1; i >= 0; i-- {
		h := hs[i]
		l := m.lru[id]
		for j, v := range l {
			if v == h {
				l = append(l[:j], l[j+1:]...)
				break
			}
		}
		l = append([]uint64{h}, l...)
		m.held[id][h] = true
		for len(l) > c {
			delete(m.held[id], l[len(l)-1])
			l = l[:len(l)-1]
		}
		m.lru[id] = l
	}
}

func (m *model) remove(id string) {
	delete(m.cap, id)
	delete(m.lru, id)
	delete(m.held, id)
}

func (m *model) match(id string, hs []uint64) int {
	n := 0
	for _, h := range hs {
		if !m.held[id][h] {
			break
		}
		n++
	}
	return n
}

func chain(seed uint64, n int) []uint64 {
	out := make([]uint64, n)
	h := seed
	for i := range out {
		h = h*0x9E3779B97F4A7C15 + uint64(i) + 1
		out[i] = h
	}
	return out
}

func TestMatchAgreesWithModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, nInst := range []int{3, 40, 150} { // 150 makes hot blocks and dense lookups
		x := New(0)
		m := newModel()
		ids := make([]string, nInst)
		for i := range ids {
			ids[i] = fmt.Sprintf("10.0.0.%d:8000", i)
		}
		// A few shared prefixes (system prompts) with per-conversation tails.
		prefixes := [][]uint64{chain(1, 20), chain(2, 12), chain(3, 30)}
		for step := range 4000 {
			p := prefixes[r.IntN(len(prefixes))]
			hs := append(append([]uint64{}, p[:1+r.IntN(len(p))]...), chain(uint64(100+r.IntN(50)), r.IntN(10))...)
			switch op := r.IntN(100); {
			case op < 2:
				id := ids[r.IntN(nInst)]
				x.Remove(id)
				m.remove(id)
			case op < 60:
				id := ids[r.IntN(nInst)]
				c := 20 + r.IntN(60)
				x.Insert(id, c, hs)
				m.insert(id, c, hs)
			default:
				got := x.Match(hs)
				want := 0
				for _, id := range ids {
					w := m.match(id, hs)
					if w > 0 {
						want++
					}
					if g := x.Matched(x.Slot(id)); g != w {
						t.Fatalf("n=%d step %d: %s matched %d blocks, model says %d", nInst, step, id, g, w)
					}
				}
				if got != want {
					t.Fatalf("n=%d step %d: Match reported %d instances, model %d", nInst, step, got, want)
				}
			}
		}
		pairs := 0
		for _, id := range ids {
			if x.Held(id) != len(m.lru[id]) {
				t.Fatalf("%s holds %d blocks, model %d", id, x.Held(id), len(m.lru[id]))
			}
			pairs += len(m.lru[id])
		}
		if x.Pairs() != int64(pairs) {
			t.Fatalf("Pairs = %d, want %d", x.Pairs(), pairs)
		}
	}
}

func TestLRUKeepsPrefixEvictsTail(t *testing.T) {
	x := New(0)
	a := chain(7, 10)
	x.Insert("a", 6, a) // more blocks than capacity: the head survives
	x.Match(a)
	if got := x.Matched(x.Slot("a")); got != 6 {
		t.Fatalf("matched %d, want the first 6 blocks kept", got)
	}
	b := chain(8, 4)
	x.Insert("a", 6, b) // b is newer: a's tail goes first
	x.Match(a)
	if got := x.Matched(x.Slot("a")); got != 2 {
		t.Fatalf("after b, a matched %d, want 2", got)
	}
	if x.Held("a") != 6 {
		t.Fatalf("held %d, want capacity 6", x.Held("a"))
	}
}

func TestRemoveForgetsAndReusesSlot(t *testing.T) {
	x := New(0)
	hs := chain(1, 5)
	x.Insert("a", 100, hs)
	x.Insert("b", 100, hs)
	x.Remove("a")
	if n := x.Match(hs); n != 1 || x.Matched(x.Slot("b")) != 5 || x.Slot("a") != -1 {
		t.Fatalf("after removing a: %d matched, b=%d, slot(a)=%d", n, x.Matched(x.Slot("b")), x.Slot("a"))
	}
	x.Insert("c", 100, chain(2, 3))
	if x.Match(hs) != 1 {
		t.Fatal("a new instance in a reused slot inherited the removed one's blocks")
	}
	x.Remove("b")
	x.Remove("c")
	if x.Pairs() != 0 || x.Blocks() != 0 {
		t.Fatalf("empty index reports %d pairs, %d blocks", x.Pairs(), x.Blocks())
	}
}

func TestGlobalBoundSharesFairly(t *testing.T) {
	x := New(100)
	for i := range 4 {
		x.Insert(fmt.Sprint(i), 1000, chain(uint64(i), 80))
	}
	for i := range 4 {
		x.Insert(fmt.Sprint(i), 1000, chain(uint64(i+10), 1)) // enforce the share after everyone joined
	}
	if x.Pairs() > 100 {
		t.Fatalf("%d pairs held, global bound is 100", x.Pairs())
	}
}

func TestCapacityBlocks(t *testing.T) {
	// 1000 KV blocks × 16 tokens × 4 chars/token / 64 chars per hashed block.
	if got := CapacityBlocks(1000, 16, 4, 64, 7); got != 1000 {
		t.Fatalf("CapacityBlocks = %d, want 1000", got)
	}
	if got := CapacityBlocks(0, 16, 4, 64, 7); got != 7 {
		t.Fatalf("unknown capacity gives %d, want the default 7", got)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	x, y := New(0), New(0)
	if err := Register(reg, x); err != nil {
		t.Fatal(err)
	}
	if err := Register(reg, y); err != nil {
		t.Fatal(err)
	}
	x.Insert("a", 100, chain(1, 5))
	y.Insert("b", 100, chain(2, 3))
	got := gatherGauges(t, reg)
	// The collector holds indexes weakly, so x must outlive the gather: a
	// collection between x's last use and Gather would drop it (CI saw it).
	runtime.KeepAlive(x)
	if got["llmrouter_prefix_index_blocks"] != 8 || got["llmrouter_prefix_index_pairs"] != 8 || got["llmrouter_prefix_index_bytes"] <= 0 {
		t.Fatalf("metrics summed over both indexes: %v; want 8 blocks, 8 pairs, some bytes", got)
	}

	// A dropped policy's index stops being counted without a Close.
	x = nil
	runtime.GC()
	got = gatherGauges(t, reg)
	runtime.KeepAlive(y)
	if got["llmrouter_prefix_index_blocks"] != 3 || got["llmrouter_prefix_index_pairs"] != 3 {
		t.Fatalf("after dropping x: %v; want only y's 3 blocks, 3 pairs", got)
	}
}

func gatherGauges(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
	}
	return got
}

// TestSizing: a request's own block size wins over the configuration's;
// prompt tokens counted by the gateway win over the estimate from blocks.
func TestSizing(t *testing.T) {
	z := NewSizing(config.Default()) // 4 chars a token, 64-char blocks, 16384 default blocks
	if got := z.TokensPerBlock(0); got != 16 {
		t.Fatalf("TokensPerBlock(config) = %v, want 16", got)
	}
	if got := z.TokensPerBlock(128); got != 32 {
		t.Fatalf("TokensPerBlock(128) = %v, want 32", got)
	}
	if got := z.PromptTokens(0, 10, 0); got != 160 {
		t.Fatalf("PromptTokens from 10 blocks = %v, want 160", got)
	}
	if got := z.PromptTokens(99, 10, 0); got != 99 {
		t.Fatalf("PromptTokens counted = %v, want 99", got)
	}
	if got := z.Capacity(0, 0, 0); got != 16384 {
		t.Fatalf("Capacity unknown = %d, want the default 16384", got)
	}
	// 1000 KV blocks of 16 tokens at 4 chars a token: 64,000 chars, 500
	// blocks of 128 chars.
	if got := z.Capacity(1000, 16, 128); got != 500 {
		t.Fatalf("Capacity(1000×16, 128-char blocks) = %d, want 500", got)
	}
	cfg := config.Default()
	cfg.Gateway.BlockChars, cfg.Gateway.CharsPerToken = 32, 2
	if got := NewSizing(cfg).TokensPerBlock(0); got != 16 {
		t.Fatalf("configured 32 chars at 2 a token: %v tokens a block, want 16", got)
	}
}
