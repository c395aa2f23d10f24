package roundrobin

import (
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// Name is the policy's configuration name.
const Name = "round-robin"

func init() {
	policy.Register(Name, func(policy.Deps) (policy.Policy, error) { return &RoundRobin{}, nil })
}

// RoundRobin rotates through the candidates. The scheduler passes candidates
// sorted by ID, so the rotation is stable while the fleet is; the next turn
// is taken from a counter, so a change of fleet size only shifts it.
type RoundRobin struct {
	next uint64
}

// Name returns "round-robin".
func (*RoundRobin) Name() string { return Name }

// Pick ranks the candidate whose turn it is first, then the following ones.
func (p *RoundRobin) Pick(_ *policy.Request, cands []*policy.Instance) policy.Decision {
	n := uint64(len(cands))
	start := p.next % n
	p.next++
	out := make([]*policy.Instance, 0, n)
	out = append(out, cands[start:]...)
	out = append(out, cands[:start]...)
	return policy.Decision{Ranked: out}
}
