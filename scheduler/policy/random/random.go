package random

import (
	"math/rand/v2"

	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// Name is the policy's configuration name.
const Name = "random"

func init() {
	policy.Register(Name, func(d policy.Deps) (policy.Policy, error) { return &Random{rand: d.Rand}, nil })
}

// Random shuffles the candidates.
type Random struct {
	rand *rand.Rand
}

// Name returns "random".
func (*Random) Name() string { return Name }

// Pick returns the candidates in a random order.
func (p *Random) Pick(_ *policy.Request, cands []*policy.Instance) policy.Decision {
	out := make([]*policy.Instance, len(cands))
	copy(out, cands)
	p.rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return policy.Decision{Ranked: out}
}
