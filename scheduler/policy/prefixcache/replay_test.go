package prefixcache

import (
	"container/list"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	"github.com/llmrouter/llmrouter/scheduler/policy/leastrequest"
)

// toyEngine is a KV cache with an LRU over block hashes (as an engine's
// prefix cache) and a count of running requests.
type toyEngine struct {
	inst  *policy.Instance
	cap   int
	lru   *list.List
	where map[uint64]*list.Element
}

func (e *toyEngine) serve(hs []uint64) (hit int) {
	for _, h := range hs {
		if _, ok := e.where[h]; !ok {
			break
		}
		hit++
	}
	for i := len(hs) - 1; i >= 0; i-- {
		if el, ok := e.where[hs[i]]; ok {
			e.lru.MoveToFront(el)
			continue
		}
		e.where[hs[i]] = e.lru.PushFront(hs[i])
		for e.lru.Len() > e.cap {
			delete(e.where, e.lru.Remove(e.lru.Back()).(uint64))
		}
	}
	return hit
}

type replayResult struct {
	hitRatio  float64
	worstLoad float64 // max over picks of chosen load / max(mean load, 1)
	picks     int
}

// replay runs a deterministic multi-turn workload: 96 conversations under 4
// shared system prompts (20 blocks), 6 turns each, every turn sending the
// whole history plus 6 new blocks, on 8 instances whose caches hold 600
// blocks. A request runs 12 ticks plus 1 per 8 uncached blocks.
func replay(t *testing.T, p policy.Policy) replayResult {
	const nInst, nConv, turns, sysBlocks, capBlocks = 8, 96, 6, 20, 600
	r := rand.New(rand.NewPCG(42, 7))
	engines := make([]*toyEngine, nInst)
	cands := make([]*policy.Instance, nInst)
	for i := range engines {
		cands[i] = &policy.Instance{ID: fmt.Sprintf("e%d", i), NumGPUBlocks: capBlocks, BlockSize: 16}
		engines[i] = &toyEngine{inst: cands[i], cap: capBlocks, lru: list.New(), where: map[uint64]*list.Element{}}
	}
	byID := map[string]*toyEngine{}
	for _, e := range engines {
		byID[e.inst.ID] = e
	}
	type conv struct {
		content []uint64 // block contents so far
		turn    int
		next    int // tick of the next turn
	}
	convs := make([]*conv, nConv)
	for i := range convs {
		sys := uint64(1 + r.IntN(4))
		c := &conv{next: r.IntN(150)}
		for b := range sysBlocks {
			c.content = append(c.content, sys<<32|uint64(b))
		}
		convs[i] = c
	}
	type running struct {
		end  int
		eng  *toyEngine
		conv *conv
		id   string
	}
	var active []running
	var hit, total int
	res := replayResult{}
	for tick := 0; tick < 5000; tick++ {
		keep := active[:0]
		for _, a := range active {
			if a.end > tick {
				keep = append(keep, a)
				continue
			}
			a.eng.inst.Running--
			if o, ok := p.(policy.Observer); ok {
				o.Completed(a.id, a.eng.inst.ID, 0, 200)
			}
			a.conv.next = tick + 5 + r.IntN(20)
		}
		active = keep
		for ci, c := range convs {
			if c.turn >= turns || c.next != tick {
				continue
			}
			c.next = -1
			for b := range 6 {
				c.content = append(c.content, uint64(ci+1)<<40|uint64(c.turn)<<16|uint64(b))
			}
			hs := make([]uint64, len(c.content))
			h := uint64(0xfeed)
			for i, x := range c.content {
				h = (h^x)*0x9E3779B97F4A7C15 + 1
				hs[i] = h
			}
			q := &policy.Request{ID: fmt.Sprintf("c%d-t%d", ci, c.turn), BlockHashes: hs, BlockChars: 64, PromptTokens: int64(len(hs) * 16)}
			c.turn++
			d := p.Pick(q, cands)
			if o, ok := p.(policy.Observer); ok {
				o.Picked(q, d)
			}
			e := byID[d.Ranked[0].ID]
			h0 := e.serve(hs)
			hit += h0
			total += len(hs)
			e.inst.Running++
			sum := 0
			for _, x := range cands {
				sum += int(x.Running)
			}
			mean := max(float64(sum)/nInst, 1)
			res.worstLoad = max(res.worstLoad, float64(e.inst.Running)/mean)
			res.picks++
			active = append(active, running{end: tick + 12 + (len(hs)-h0)/8, eng: e, conv: c, id: q.ID})
		}
	}
	if res.picks != nConv*turns {
		t.Fatalf("%d picks, want every turn of every conversation (%d)", res.picks, nConv*turns)
	}
	res.hitRatio = float64(hit) / float64(total)
	return res
}

func TestMultiTurnReplayBeatsLeastRequest(t *testing.T) {
	deps := func() policy.Deps {
		return policy.Deps{Config: config.Default(), Rand: rand.New(rand.NewPCG(3, 3))}
	}
	pc, err := policy.New(Name, deps())
	if err != nil {
		t.Fatal(err)
	}
	lr, err := policy.New(leastrequest.Name, deps())
	if err != nil {
		t.Fatal(err)
	}
	a := replay(t, pc)
	b := replay(t, lr)
	t.Logf("prefix-cache: hit ratio %.3f, worst load %.2f× mean; least-request: hit ratio %.3f, worst load %.2f× mean",
		a.hitRatio, a.worstLoad, b.hitRatio, b.worstLoad)
	if a.hitRatio <= b.hitRatio+0.1 {
		t.Fatalf("prefix-cache hit ratio %.3f is not clearly above least-request's %.3f", a.hitRatio, b.hitRatio)
	}
	if a.worstLoad > 2 {
		t.Fatalf("prefix-cache gave an instance %.2f× the mean load (cap 2×)", a.worstLoad)
	}
}
