package leasttoken

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// BenchmarkPick measures Pick over 1,024 candidates, each reporting a batch
// and a generation rate, with 8 of the policy's own picks in flight on each
// (8,192 in the ledger) picked over the last 30 s. Pick must not cost more
// with more requests in flight: only the candidates are visited.
func BenchmarkPick(b *testing.B) {
	p, clk := newPolicy(b)
	const nInst, perInst = 1024, 8
	r := rand.New(rand.NewPCG(9, 9))
	cands := make([]*policy.Instance, nInst)
	for i := range cands {
		cands[i] = &policy.Instance{
			ID: fmt.Sprintf("10.0.%d.%d:8000", i>>8, i&255), Running: int64(perInst + r.IntN(8)), Waiting: int64(r.IntN(3)),
			InflightRequests: int64(r.IntN(2)), InflightPromptTokens: int64(r.IntN(4000)), GenTPS: float64(200 + r.IntN(400)),
		}
	}
	start := clk.t
	for k := range nInst * perInst {
		clk.t = start.Add(time.Duration(k) * 30 * time.Second / (nInst * perInst))
		p.Picked(&policy.Request{ID: fmt.Sprint(k), MaxTokens: int64(16 + r.IntN(512))}, policy.Decision{Ranked: cands[k%nInst : k%nInst+1]})
	}
	req := &policy.Request{PromptTokens: 500}
	b.ResetTimer()
	for b.Loop() {
		clk.t = clk.t.Add(time.Microsecond)
		if d := p.Pick(req, cands); len(d.Ranked) != nInst {
			b.Fatalf("ranked %d of %d", len(d.Ranked), nInst)
		}
	}
}
