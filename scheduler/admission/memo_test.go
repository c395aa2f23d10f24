package admission

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// randInstance is an instance anywhere from idle to far over every
// threshold, cold or at its limit, either role.
func randInstance(r *rand.Rand) policy.Instance {
	c := policy.Instance{
		Running:             r.Int64N(40),
		Waiting:             r.Int64N(12),
		InflightRequests:    r.Int64N(6),
		KVCacheUsage:        r.Float64(),
		PrefixCacheHitRatio: []float64{-1, 0, 0.5, 0.9}[r.IntN(4)],
		Speed:               []float32{0, 0.05, 0.3, 1, 4}[r.IntN(5)],
		NumGPUBlocks:        []int64{0, 2000}[r.IntN(2)],
		BlockSize:           16,
	}
	c.InflightPromptTokens = c.InflightRequests * r.Int64N(3000)
	if r.IntN(3) > 0 {
		c.BatchLimit = int32(r.Int64N(40) + 1)
	}
	if r.IntN(4) == 0 {
		c.Role = policy.RolePrefill
	}
	return c
}

// TestMemoMatchesSaturated: a remembered verdict is the one judged
// without a memo, whatever the means do between decisions (small steps
// inside the bands, requests that push them out), for a new request's
// budget and the smaller and larger ones of a queued request or none, with
// the instances changing (and Remember called) now and then.
func TestMemoMatchesSaturated(t *testing.T) {
	for _, mw := range []int{0, 6} {
		s := newSat(func(c *config.Config) {
			c.Scheduler.MaxWaiting = mw
			c.Scheduler.MaxKVCacheUsage = 0.9
		})
		r := rand.New(rand.NewPCG(1, uint64(mw)))
		insts := make([]policy.Instance, 64)
		for i := range insts {
			insts[i] = randInstance(r)
			Remember(&insts[i])
		}
		full := config.Default().Gateway.WaitScheduleTimeout
		remembered, total := 0, 0
		for step := range 4000 {
			switch r.IntN(10) {
			case 0: // a long prompt or reply moves a mean far
				s.Observe(&policy.Request{PromptTokens: r.Int64N(40000) + 1})
			case 1:
				s.Completed(r.Int64N(4000) + 1)
			default:
				s.Observe(&policy.Request{PromptTokens: r.Int64N(1500) + 1})
				s.Completed(r.Int64N(400) + 1)
			}
			if step%7 == 0 {
				i := r.IntN(len(insts))
				insts[i] = randInstance(r)
				Remember(&insts[i])
			}
			budget := full - time.Duration(r.Int64N(int64(time.Millisecond)))
			switch step % 4 {
			case 1:
				budget = time.Duration(r.Float64() * float64(full))
			case 2:
				budget = time.Duration(1<<63 - 1)
			}
			j := s.Within(budget)
			for i := range insts {
				c := &insts[i]
				fresh := *c
				fresh.SaturationMemo = 0
				want, wr := j.Saturated(&fresh)
				before := c.SaturationMemo
				got, gr := j.Saturated(c)
				if got != want || gr != wr {
					t.Fatalf("step %d, budget %s, means %.1f/%.1f: %+v: remembered %v %q, judged %v %q", step, budget, s.avgPrompt, s.avgOut, *c, got, gr, want, wr)
				}
				total++
				if before == c.SaturationMemo && before>>memoCodeBits == s.epoch && j.accept&(1<<(before&memoCodeMask)) != 0 {
					remembered++
				}
			}
		}
		// The memo must decide most verdicts for it to be worth keeping.
		if remembered < total/2 {
			t.Errorf("max_waiting %d: %d of %d verdicts read from a memo", mw, remembered, total)
		}
	}
}

// TestMemoIsRead: an unchanged instance's verdict comes from its memo
// (which is why its owner must call Remember after every change), a
// changed one after Remember is judged afresh, and one never passed to
// Remember is never remembered.
func TestMemoIsRead(t *testing.T) {
	s := newSat(func(c *config.Config) { c.Scheduler.MaxWaiting = 0 })
	j := s.Within(10 * time.Second)
	c := policy.Instance{Running: 2, BatchLimit: 8, PrefixCacheHitRatio: -1}
	Remember(&c)
	if sat, _ := j.Saturated(&c); sat {
		t.Fatal("an engine running 2 of 8 is saturated")
	}
	c.Waiting = 1000 // changed without Remember
	if sat, _ := j.Saturated(&c); sat {
		t.Fatal("the memo was not read: the unchanged-instance verdict was recomputed")
	}
	Remember(&c)
	if sat, why := j.Saturated(&c); !sat || why != PredictedWait {
		t.Fatalf("after Remember: %v %q, want saturated by predicted_wait", sat, why)
	}
	d := policy.Instance{Running: 2, BatchLimit: 8, PrefixCacheHitRatio: -1}
	j.Saturated(&d)
	if d.SaturationMemo != 0 {
		t.Fatalf("an instance never passed to Remember got memo %#x", d.SaturationMemo)
	}
}
