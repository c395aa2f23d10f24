// Package scorers holds the scorers that read one load signal of each
// candidate from its last report and the scheduler's in-flight counts:
// queue-scorer (waiting queue), kv-cache-scorer (free KV cache),
// running-requests-scorer, load-scorer (running + waiting + unreported
// picks) and token-load-scorer (the prompt tokens of unreported picks plus
// the output tokens still expected of every pick in flight). Each scores in
// [0, 1], higher better; none takes parameters but
// kv-cache-utilization-scorer, the name newer Gateway API Inference
// Extension and llm-d releases give kv-cache-scorer, which takes theirs
// (normalizeScore).
package scorers

import (
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// Type names.
const (
	Queue   = "queue-scorer"
	KVCache = "kv-cache-scorer"
	// KVCacheUtilization is kv-cache-scorer under its newer upstream name.
	KVCacheUtilization = "kv-cache-utilization-scorer"
	Running            = "running-requests-scorer"
	Load               = "load-scorer"
	Tokens             = "token-load-scorer"
)

func init() {
	register := func(typ string, s framework.Scorer) {
		framework.Register(typ, func(_ *framework.Handle, p framework.Params) (any, error) {
			return s, p.Decode(&struct{}{})
		})
	}
	register(Queue, minMax(func(c *policy.Instance) int64 { return c.Waiting }))
	register(Running, minMax(func(c *policy.Instance) int64 { return c.Running }))
	register(Load, minMax((*policy.Instance).Load))
	register(Tokens, minMax(func(c *policy.Instance) int64 { return c.InflightPromptTokens + c.InflightDecodeTokens }))
	register(KVCache, kvCache{})
	framework.RegisterPlugin(KVCacheUtilization, func(config.Config) KVCacheUtilizationParams { return KVCacheUtilizationParams{} }, func(_ *framework.Handle, pr KVCacheUtilizationParams) (any, error) {
		if pr.NormalizeScore {
			return kvNormalized{}, nil
		}
		return kvCache{}, nil
	})
}

// KVCacheUtilizationParams are kv-cache-utilization-scorer's parameters
// (upstream's names and default).
type KVCacheUtilizationParams struct {
	// NormalizeScore scores the least used candidate 1 and the most used 0,
	// linearly between (all 1 when equal), instead of 1 − usage.
	NormalizeScore bool `json:"normalizeScore"`
}

// minMax scores the candidate with the least of a count 1 and the one with
// the most 0, linearly between (llm-d's queue-scorer); all 1 when equal.
type minMax func(*policy.Instance) int64

func (f minMax) Score(_ *framework.CycleState, _ *policy.Request, cands []*policy.Instance, out []float64) {
	lo, hi := f(cands[0]), f(cands[0])
	for _, c := range cands[1:] {
		v := f(c)
		lo, hi = min(lo, v), max(hi, v)
	}
	if hi == lo {
		for i := range out {
			out[i] = 1
		}
		return
	}
	for i, c := range cands {
		out[i] = float64(hi-f(c)) / float64(hi-lo)
	}
}

// kvCache scores the free share of the KV cache (llm-d's kv-cache-scorer).
type kvCache struct{}

func (kvCache) Score(_ *framework.CycleState, _ *policy.Request, cands []*policy.Instance, out []float64) {
	for i, c := range cands {
		out[i] = 1 - min(max(c.KVCacheUsage, 0), 1)
	}
}

// kvNormalized scores the KV cache usage relative to the other candidates.
type kvNormalized struct{}

func (kvNormalized) Score(_ *framework.CycleState, _ *policy.Request, cands []*policy.Instance, out []float64) {
	use := func(c *policy.Instance) float64 { return min(max(c.KVCacheUsage, 0), 1) }
	lo, hi := use(cands[0]), use(cands[0])
	for _, c := range cands[1:] {
		lo, hi = min(lo, use(c)), max(hi, use(c))
	}
	if hi-lo < 1e-5 {
		for i := range out {
			out[i] = 1
		}
		return
	}
	for i, c := range cands {
		out[i] = (hi - use(c)) / (hi - lo)
	}
}
