package prefixcache

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// BenchmarkPick1024 measures Pick over 1,024 candidates with 1M (block,
// instance) pairs in the index: 32 system prompts of 16 blocks held by
// every instance (hot blocks) and conversations of 48 more blocks, each on
// two instances. Each request is a system prompt plus a known conversation
// plus 8 new blocks. It reports the p50 and p99 of single Picks, for loads
// spread over 0-40 running requests and for uniform ones (20-22), where few
// candidates can be passed over.
func BenchmarkPick1024(b *testing.B) {
	b.Run("loads=spread", func(b *testing.B) { benchPick1024(b, 0, 40, false) })
	b.Run("loads=uniform", func(b *testing.B) { benchPick1024(b, 20, 3, false) })
	// Prompts nobody holds: every candidate priced at its home load.
	b.Run("loads=spread/prefix=new", func(b *testing.B) { benchPick1024(b, 0, 40, true) })
}

func benchPick1024(b *testing.B, minRunning, spread int, newPrefix bool) {
	p := newPolicy(b, nil)
	const nInst, perInst = 1024, 1024
	r := rand.New(rand.NewPCG(7, 7))
	cands := make([]*policy.Instance, nInst)
	for i := range cands {
		cands[i] = &policy.Instance{
			ID: fmt.Sprintf("10.0.%d.%d:8000", i>>8, i&255), Running: int64(minRunning + r.IntN(spread)), Waiting: int64(r.IntN(3)),
			InflightRequests: int64(r.IntN(2)), InflightPromptTokens: int64(r.IntN(4000)), PromptTPS: 5000,
		}
	}
	sys := make([][]uint64, 32)
	for i := range sys {
		sys[i] = chain(uint64(i+1)<<40, 16)
	}
	var convs [][]uint64
	for i := 0; p.idx.Pairs() < nInst*perInst; i++ {
		hs := append(append([]uint64{}, sys[i%32]...), chain(uint64(i+1)<<20, 48)...)
		convs = append(convs, hs)
		for k := range 2 {
			p.idx.Insert(cands[(i*7+k*131)%nInst].ID, perInst, hs)
		}
	}
	reqs := make([]*policy.Request, 256)
	for i := range reqs {
		hs := append(slices.Clone(convs[len(convs)-1-r.IntN(len(convs)/4)]), chain(uint64(i)<<50, 8)...)
		if newPrefix {
			hs = chain(uint64(i+1)<<50|1<<49, 64)
		}
		reqs[i] = req(fmt.Sprint(i), hs)
	}
	b.ReportMetric(float64(p.idx.Pairs()), "pairs")
	durs := make([]time.Duration, 0, 1<<16)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		d := p.Pick(reqs[i%len(reqs)], cands)
		el := time.Since(t0)
		if len(durs) < cap(durs) {
			durs = append(durs, el)
		}
		if len(d.Ranked) != p.keep {
			b.Fatalf("ranked %d, want the best %d", len(d.Ranked), p.keep)
		}
	}
	b.StopTimer()
	slices.Sort(durs)
	b.ReportMetric(float64(durs[len(durs)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(durs[len(durs)*99/100].Nanoseconds())/1e3, "p99-µs")
}

// BenchmarkPicked64 measures teaching the index one 64-block request at the
// same scale (the Picked hook, which runs after Pick on the scheduler's path).
func BenchmarkPicked64(b *testing.B) {
	p := newPolicy(b, nil)
	cands := fleet(1024)
	for i := 0; p.idx.Pairs() < 1<<20; i++ {
		p.idx.Insert(cands[i%1024].ID, 1024, chain(uint64(i+1)<<20, 64))
	}
	r := rand.New(rand.NewPCG(1, 1))
	for i := 0; b.Loop(); i++ {
		q := req("x", chain(uint64(r.IntN(1<<30)), 64))
		p.Picked(q, policy.Decision{Ranked: cands[i%1024 : i%1024+1]})
	}
}

// BenchmarkLongPrompt is the scheduler's share of make bench's overhead run
// at 256 KiB: Pick and Picked (both under the scheduler's lock) over 64
// instances for prompts of one of 8 system prompts of 128 KiB and 128 KiB
// of text no request sent before, as the gateway hashes them with a 64 KiB
// window of 64-character blocks (window=64KiB, what is past it is not
// hashed), that window widened to 256 KiB (fine=256KiB), or the 64 KiB
// window and tail blocks of 1 or 4 KiB past it (tail=1KiB, tail=4KiB).
func BenchmarkLongPrompt(b *testing.B) {
	const sysBlocks, userBlocks = 2048, 2048 // 128 KiB each in 64-character blocks
	for _, bc := range []struct {
		name          string
		head, perTail int // fine blocks hashed; blocks a tail hash covers (0: none)
	}{
		{"window=64KiB", 1024, 0},
		{"fine=256KiB", 4096, 0},
		{"tail=1KiB", 1024, 16},
		{"tail=4KiB", 1024, 64},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := newPolicy(b, nil)
			cands := fleet(64)
			for _, c := range cands {
				c.NumGPUBlocks, c.BlockSize = 29000, 16
			}
			layout := func(id string, sys, user uint64) *policy.Request {
				fine := chain(sys, min(bc.head, sysBlocks))
				if bc.head > sysBlocks {
					fine = append(fine, chain(user, bc.head-sysBlocks)...)
				}
				hs := fine
				if bc.perTail > 0 {
					hs = append(hs, chain(sys^0xfeed, (sysBlocks-bc.head)/bc.perTail)...)
					hs = append(hs, chain(user^0xbeef, userBlocks/bc.perTail)...)
				}
				r := req(id, hs)
				r.HeadBlocks, r.BlocksPerTail = bc.head, bc.perTail
				r.PromptTokens = (sysBlocks + userBlocks) * 16
				return r
			}
			for i := range 256 { // every instance has served each system prompt
				r := layout("warm", uint64(i%8+1)<<40, uint64(i+1)<<20)
				p.Picked(r, policy.Decision{Ranked: []*policy.Instance{cands[i%64]}})
			}
			n := uint64(1 << 30)
			for b.Loop() {
				n++
				r := layout("r", (n%8+1)<<40, n<<20)
				p.Picked(r, p.Pick(r, cands))
			}
		})
	}
}
