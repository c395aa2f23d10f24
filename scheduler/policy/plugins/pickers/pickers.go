// Package pickers holds the pickers that rank by the profile's summed
// scores: max-score-picker (highest first, exact ties at random; llm-d's)
// and random-picker (a random order, scores ignored; llm-d's).
package pickers

import (
	"fmt"
	"math/rand/v2"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	"github.com/llmrouter/llmrouter/scheduler/policy/internal/rank"
)

// Type names.
const (
	MaxScore = "max-score-picker"
	Random   = "random-picker"
)

// Params of both pickers. maxNumOfEndpoints is llm-d's: how many
// endpoints the picker returns; here the pick and its fallbacks
// (1 + llm_gateway.retry_count) unless set.
type Params struct {
	MaxNumOfEndpoints int `json:"maxNumOfEndpoints" default:"1 + llm_gateway.retry_count"`
}

// DefaultParams are the pick and its fallbacks.
func DefaultParams(c config.Config) Params {
	return Params{MaxNumOfEndpoints: 1 + max(c.Gateway.RetryCount, 0)}
}

// Validate checks the parameters.
func (pr Params) Validate() error {
	if pr.MaxNumOfEndpoints < 1 {
		return errorf("parameter maxNumOfEndpoints %d: accepted: 1 or more", pr.MaxNumOfEndpoints)
	}
	return nil
}

func init() {
	framework.RegisterPlugin(MaxScore, DefaultParams, func(h *framework.Handle, pr Params) (any, error) {
		return &maxScore{rand: rnd(h), keep: pr.MaxNumOfEndpoints}, nil
	})
	framework.RegisterPlugin(Random, DefaultParams, func(h *framework.Handle, pr Params) (any, error) {
		return &random{rand: rnd(h), keep: pr.MaxNumOfEndpoints}, nil
	})
}

func rnd(h *framework.Handle) *rand.Rand {
	if h.Deps.Rand != nil {
		return h.Deps.Rand
	}
	return rand.New(rand.NewPCG(1, 2))
}

// maxScore ranks the keep highest scores first. Exact ties are broken at
// random, drawing like policy.RankBy over fewer than rank.FullBelow
// candidates, so a profile decides as a policy ranking the same scores
// with RankBy did.
type maxScore struct {
	rand   *rand.Rand
	keep   int
	neg    []float64
	ranker rank.Ranker
}

func (m *maxScore) Pick(_ *framework.CycleState, _ *policy.Request, cands []*policy.Instance, scores []float64) policy.Decision {
	n := len(cands)
	if cap(m.neg) < n {
		m.neg = make([]float64, n)
	}
	neg := m.neg[:n]
	if scores == nil {
		clear(neg)
	} else {
		for i, s := range scores {
			neg[i] = -s
		}
	}
	return policy.Decision{Ranked: m.ranker.Top(m.rand, cands, neg, m.keep)}
}

// random returns keep candidates in a random order.
type random struct {
	rand *rand.Rand
	keep int
}

func (r *random) Pick(_ *framework.CycleState, _ *policy.Request, cands []*policy.Instance, _ []float64) policy.Decision {
	out := make([]*policy.Instance, len(cands))
	copy(out, cands)
	r.rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return policy.Decision{Ranked: out[:min(r.keep, len(out))]}
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
