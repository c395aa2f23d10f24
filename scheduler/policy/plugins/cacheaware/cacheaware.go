// Package cacheaware is cache-aware-picker: the rule of SGLang's and
// vLLM's cache-aware routers (sglang-router "cache_aware"), reading
// prefix-cache-scorer's index. When the fleet is imbalanced — the most
// loaded instance runs more than balanceAbsThreshold requests above the
// least and more than balanceRelThreshold times it — it picks the least
// loaded; otherwise the longest prefix match when the best candidate
// matches more than cacheThreshold of the prompt; otherwise the instance
// holding the fewest blocks (the most room). Exact ties at random.
//
// The profile must declare a prefix-cache-scorer before this picker (its
// weight does not matter: this picker ranks by its own rule).
package cacheaware

import (
	"fmt"
	"math/rand/v2"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	"github.com/llmrouter/llmrouter/scheduler/policy/plugins/prefixscorer"
)

// Type is the plugin's type name.
const Type = "cache-aware-picker"

// Params are the picker's parameters; DefaultParams are the published
// defaults of sglang-router.
type Params struct {
	CacheThreshold      float64 `json:"cacheThreshold"`
	BalanceAbsThreshold int64   `json:"balanceAbsThreshold"`
	BalanceRelThreshold float64 `json:"balanceRelThreshold"`
	// PrefixScorer names the prefix-cache-scorer to read; not given, the
	// first declared.
	PrefixScorer *string `json:"prefixScorer"`
}

// DefaultParams are sglang-router's defaults.
func DefaultParams(config.Config) Params {
	return Params{CacheThreshold: 0.3, BalanceAbsThreshold: 64, BalanceRelThreshold: 1.5}
}

// Validate checks the thresholds.
func (pr Params) Validate() error {
	switch {
	case !(pr.CacheThreshold >= 0 && pr.CacheThreshold <= 1):
		return fmt.Errorf("parameter cacheThreshold %g: accepted: 0 to 1", pr.CacheThreshold)
	case pr.BalanceAbsThreshold < 0:
		return fmt.Errorf("parameter balanceAbsThreshold %d: accepted: 0 or more", pr.BalanceAbsThreshold)
	case !(pr.BalanceRelThreshold >= 1):
		return fmt.Errorf("parameter balanceRelThreshold %g: accepted: 1 or more", pr.BalanceRelThreshold)
	}
	return nil
}

func init() {
	framework.RegisterPlugin(Type, DefaultParams, func(h *framework.Handle, pr Params) (any, error) {
		var (
			x  any
			ok bool
		)
		if pr.PrefixScorer != nil {
			x, ok = h.Plugin(*pr.PrefixScorer)
		} else {
			x, ok = h.PluginOfType(prefixscorer.Type)
		}
		s, isScorer := x.(*prefixscorer.Scorer)
		if !ok || !isScorer {
			return nil, fmt.Errorf("needs a %s declared before it (parameter prefixScorer names it; default the first)", prefixscorer.Type)
		}
		r := h.Deps.Rand
		if r == nil {
			r = rand.New(rand.NewPCG(1, 2))
		}
		return &picker{p: pr, scorer: s, rand: r}, nil
	})
}

type picker struct {
	p      Params
	scorer *prefixscorer.Scorer
	rand   *rand.Rand
	match  []float64
}

// Pick applies the rule. It scores with the prefix scorer itself, so the
// scorer's weight in the profile does not matter.
func (p *picker) Pick(cs *framework.CycleState, req *policy.Request, cands []*policy.Instance, _ []float64) policy.Decision {
	if cap(p.match) < len(cands) {
		p.match = make([]float64, len(cands))
	}
	match := p.match[:len(cands)]
	p.scorer.Score(cs, req, cands, match)
	lo, hi := cands[0].Load(), cands[0].Load()
	best := 0.0
	for i, c := range cands {
		lo, hi = min(lo, c.Load()), max(hi, c.Load())
		best = max(best, match[i])
	}
	var score func(i int, c *policy.Instance) float64 // lower better
	switch {
	case hi-lo > p.p.BalanceAbsThreshold && float64(hi) > p.p.BalanceRelThreshold*float64(lo):
		score = func(_ int, c *policy.Instance) float64 { return float64(c.Load()) }
	case best > p.p.CacheThreshold:
		score = func(i int, _ *policy.Instance) float64 { return -match[i] }
	default:
		idx := p.scorer.Index()
		score = func(_ int, c *policy.Instance) float64 { return float64(idx.Held(c.ID)) }
	}
	pos := make(map[*policy.Instance]int, len(cands))
	for i, c := range cands {
		pos[c] = i
	}
	return policy.Decision{Ranked: policy.RankBy(p.rand, cands, func(c *policy.Instance) float64 { return score(pos[c], c) })}
}
