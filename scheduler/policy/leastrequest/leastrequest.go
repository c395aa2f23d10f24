package leastrequest

import (
	"math/rand/v2"

	// Imported for Instance.Load's inline body: called through the alias
	// policy.Instance alone, the compiler (go1.26) leaves a call per
	// candidate (cf. go.dev/issue/74783).
	_ "github.com/llmrouter/llmrouter/scheduler/fleet"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// Name is the policy's configuration name.
const Name = "least-request"

func init() {
	policy.Register(Name, func(d policy.Deps) (policy.Policy, error) {
		return &LeastRequest{rand: d.Rand, keep: 1 + max(d.Config.Gateway.RetryCount, 0)}, nil
	})
}

// LeastRequest ranks by Instance.Load.
type LeastRequest struct {
	rand *rand.Rand
	// keep is how many ranks the scheduler uses (1 + retry_count): only that
	// many are selected, in O(n·keep) instead of a full sort, which matters
	// with a thousand instances.
	keep int
}

// Name returns "least-request".
func (*LeastRequest) Name() string { return Name }

type ranked struct {
	inst *policy.Instance
	load int64
	tie  uint64
}

func (a ranked) less(b ranked) bool { return a.load < b.load || a.load == b.load && a.tie < b.tie }

// Pick ranks the least loaded candidates first, ties at random.
func (p *LeastRequest) Pick(_ *policy.Request, cands []*policy.Instance) policy.Decision {
	k := min(p.keep, len(cands))
	if k <= 0 {
		k = len(cands)
	}
	var buf [11]ranked
	top := buf[:0]
	if k > len(buf) {
		top = make([]ranked, 0, k)
	}
	for _, c := range cands {
		x := ranked{inst: c, load: c.Load(), tie: p.rand.Uint64()}
		if len(top) == k && !x.less(top[k-1]) {
			continue
		}
		if len(top) < k {
			top = append(top, x)
		} else {
			top[k-1] = x
		}
		for i := len(top) - 1; i > 0 && top[i].less(top[i-1]); i-- {
			top[i], top[i-1] = top[i-1], top[i]
		}
	}
	out := make([]*policy.Instance, len(top))
	for i, x := range top {
		out[i] = x.inst
	}
	return policy.Decision{Ranked: out}
}
