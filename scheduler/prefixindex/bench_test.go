package prefixindex

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
)

// fill loads x with a fleet-sized workload: nInst instances of capacity
// perInst blocks, each sent conversations that start with one of 32 shared
// system prompts (16 blocks, so those blocks end up hot) and go on with
// their own history, until every instance is full.
func fill(x *Index, nInst, perInst int) []string {
	r := rand.New(rand.NewPCG(3, 4))
	ids := make([]string, nInst)
	for i := range ids {
		ids[i] = fmt.Sprintf("10.%d.%d.%d:8000", i>>16, (i>>8)&255, i&255)
	}
	sys := make([][]uint64, 32)
	for i := range sys {
		sys[i] = chain(uint64(i)+1<<40, 16)
	}
	conv := uint64(0)
	for _, id := range ids {
		for x.Held(id) < perInst {
			conv++
			hs := append(append([]uint64{}, sys[r.IntN(len(sys))]...), chain(conv<<20, 48)...)
			x.Insert(id, perInst, hs)
		}
	}
	return ids
}

// BenchmarkIndexMemory reports the heap the index takes per (block,
// instance) pair and per distinct block with 1,024 instances and 1M pairs.
func BenchmarkIndexMemory(b *testing.B) {
	for b.Loop() {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		x := New(0)
		fill(x, 1024, 1024)
		runtime.GC()
		runtime.ReadMemStats(&m1)
		used := float64(m1.HeapAlloc - m0.HeapAlloc)
		b.ReportMetric(used/float64(x.Pairs()), "bytes/pair")
		b.ReportMetric(used/float64(x.Blocks()), "bytes/block")
		b.ReportMetric(float64(x.Pairs()), "pairs")
		b.ReportMetric(float64(x.Bytes())/float64(x.Pairs()), "est-bytes/pair")
		runtime.KeepAlive(x)
	}
}

func BenchmarkInsert64Blocks(b *testing.B) {
	x := New(0)
	ids := fill(x, 1024, 1024)
	r := rand.New(rand.NewPCG(5, 6))
	hs := chain(99, 64)
	for b.Loop() {
		x.Insert(ids[r.IntN(len(ids))], 1024, hs)
	}
}

// BenchmarkMatch1024 is the lookup of BenchmarkPick1024 in
// scheduler/policy/prefixcache alone: 1M pairs over 1,024 instances, 32
// system prompts of 16 blocks each held by 64 instances, conversations of 48
// more blocks each on two instances, requests of a known conversation plus 8
// new blocks.
func BenchmarkMatch1024(b *testing.B) { benchMatch1024(b, (*Index).Match) }

// BenchmarkMatchChain1024 is BenchmarkMatch1024 with the bisecting lookup
// the policy uses (the benchmark's requests are chained: each conversation
// only ever follows its own system prompt).
func BenchmarkMatchChain1024(b *testing.B) { benchMatch1024(b, (*Index).MatchChain) }

func benchMatch1024(b *testing.B, match func(*Index, []uint64) int) {
	const nInst, perInst = 1024, 1024
	x := New(0)
	ids := make([]string, nInst)
	for i := range ids {
		ids[i] = fmt.Sprintf("10.0.%d.%d:8000", i>>8, i&255)
	}
	sys := make([][]uint64, 32)
	for i := range sys {
		sys[i] = chain(uint64(i+1)<<40, 16)
	}
	var convs [][]uint64
	for i := 0; x.Pairs() < nInst*perInst; i++ {
		hs := append(append([]uint64{}, sys[i%32]...), chain(uint64(i+1)<<20, 48)...)
		convs = append(convs, hs)
		for k := range 2 {
			x.Insert(ids[(i*7+k*131)%nInst], perInst, hs)
		}
	}
	r := rand.New(rand.NewPCG(7, 7))
	reqs := make([][]uint64, 256)
	for i := range reqs {
		reqs[i] = append(append([]uint64{}, convs[len(convs)-1-r.IntN(len(convs)/4)]...), chain(uint64(i)<<50, 8)...)
	}
	for i := 0; b.Loop(); i++ {
		if match(x, reqs[i%len(reqs)]) == 0 {
			b.Fatal("a known conversation matched nothing")
		}
	}
}

// BenchmarkInsertNextTurn teaches a full index (1,024 instances, 1M pairs)
// the next turn of conversations that stay on their instance: the previous
// prompt, which the instance holds, plus 6 new blocks — the Picked of a
// multi-turn workload. A conversation starts over past 200 blocks.
func BenchmarkInsertNextTurn(b *testing.B) {
	x := New(0)
	ids := fill(x, 1024, 1024)
	r := rand.New(rand.NewPCG(8, 9))
	type conv struct {
		id string
		hs []uint64
	}
	convs := make([]*conv, 4096)
	for i := range convs {
		convs[i] = &conv{id: ids[i%len(ids)], hs: chain(uint64(i+1)<<44, 16)}
		x.Insert(convs[i].id, 1024, convs[i].hs)
	}
	for i := 0; b.Loop(); i++ {
		c := convs[r.IntN(len(convs))]
		c.hs = append(c.hs, chain(c.hs[len(c.hs)-1]^uint64(i), 6)...)
		if len(c.hs) > 200 {
			c.hs = c.hs[:16]
		}
		x.Insert(c.id, 1024, c.hs)
	}
}

// BenchmarkInsertNewWindow is the costliest Picked under a hashed window
// of 256 KiB (llm_gateway.max_prefix_chars; 4,096 blocks of 64
// characters): a prompt nobody holds any of, as long as the window, taught
// to one of 16 full instances of 65,536 blocks each, every block new and
// pushing an old one out. It runs under the scheduler's lock: at about
// 0.4 µs a block it is why prefix-cache teaches the index at most a budget
// of new blocks a pick (InsertBounded, BenchmarkInsertPick;
// docs/policies.md, "The hashed window, looked at again").
func BenchmarkInsertNewWindow(b *testing.B) {
	x := New(0)
	ids := fill(x, 16, 65536)
	r := rand.New(rand.NewPCG(7, 8))
	hs := make([]uint64, 4096)
	for i := uint64(1); b.Loop(); i++ {
		h := i << 40 // a chain no earlier iteration made
		for j := range hs {
			h = h*0x9E3779B97F4A7C15 + uint64(j) + 1
			hs[j] = h
		}
		x.Insert(ids[r.IntN(len(ids))], 65536, hs)
	}
}

// BenchmarkInsertPick is one pick's Insert of a prompt as make bench's
// overhead run sends them: a start the instance holds, then blocks nobody
// holds (a request's own text), on one of 16 full instances of 65,536
// blocks. bound=none teaches the index every block (Insert), bound=128 at
// most 128 new ones (InsertBounded, with the budget prefix-cache was
// measured with at a 256 KiB window): its cost stays that of 128 new
// blocks however many the prompt brings.
func BenchmarkInsertPick(b *testing.B) {
	cases := []struct{ held, fresh int }{{1024, 0}, {4096, 0}, {1024, 256}, {1024, 1024}, {1024, 3072}}
	for _, c := range cases {
		for _, bound := range []int{-1, 128} {
			name := "none"
			if bound >= 0 {
				name = fmt.Sprint(bound)
			}
			b.Run(fmt.Sprintf("held=%d/new=%d/bound=%s", c.held, c.fresh, name), func(b *testing.B) {
				x := New(0)
				ids := fill(x, 16, 65536)
				start := chain(77<<40, c.held)
				for _, id := range ids {
					x.Insert(id, 65536, start)
				}
				hs := append(append([]uint64{}, start...), make([]uint64, c.fresh)...)
				for i := uint64(1); b.Loop(); i++ {
					h := start[len(start)-1] ^ i<<32 // blocks no earlier pick made
					for j := c.held; j < len(hs); j++ {
						h = h*0x9E3779B97F4A7C15 + uint64(j) + 1
						hs[j] = h
					}
					id := ids[i%uint64(len(ids))]
					if bound < 0 {
						x.Insert(id, 65536, hs)
					} else if _, k := x.InsertBounded(id, 65536, hs, bound); k != min(len(hs), c.held+bound) {
						b.Fatalf("inserted %d blocks, want %d", k, min(len(hs), c.held+bound))
					}
				}
			})
		}
	}
}

// BenchmarkInsertFill fills an empty index the way make bench's overhead
// run does: 64 instances of 43,500 blocks (its engines' KV capacity),
// prompts of 256 new blocks, 4 million pairs at most. It reports the
// longest single Insert: the index growing must not stall a pick.
func BenchmarkInsertFill(b *testing.B) {
	ids := make([]string, 64)
	for i := range ids {
		ids[i] = fmt.Sprintf("10.0.3.%d:8000", i)
	}
	var worst time.Duration
	for b.Loop() {
		x := New(4 << 20)
		hs := make([]uint64, 256)
		for i := uint64(1); x.Pairs() < 2_700_000; i++ {
			h := i << 40
			for j := range hs {
				h = h*0x9E3779B97F4A7C15 + uint64(j) + 1
				hs[j] = h
			}
			t0 := time.Now()
			x.Insert(ids[i%64], 43500, hs)
			worst = max(worst, time.Since(t0))
		}
	}
	b.ReportMetric(float64(worst.Microseconds())/1e3, "max-ms")
}
