package leastrequest

import (
	"math/rand/v2"

	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// Name is the policy's configuration name.
const Name = "least-request"

func init() {
	policy.Register(Name, func(d policy.Deps) (policy.Policy, error) { return &LeastRequest{rand: d.Rand}, nil })
}

// LeastRequest ranks by Instance.Load.
type LeastRequest struct {
	rand *rand.Rand
}

// Name returns "least-request".
func (*LeastRequest) Name() string { return Name }

// Pick ranks candidates by ascending load.
func (p *LeastRequest) Pick(_ *policy.Request, cands []*policy.Instance) policy.Decision {
	return policy.Decision{Ranked: policy.RankBy(p.rand, cands, func(i *policy.Instance) float64 { return float64(i.Load()) })}
}
