package prefixcache

import (
	"testing"

	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// A prefix nobody holds goes where the load will be lightest in the long
// run — the instance home to the smallest share of what the index holds —
// not to the one running the fewest at this moment (priceHomes).
func TestNewPrefixHomeByLoadShare(t *testing.T) {
	setup := func(p *Policy, cands []*policy.Instance) {
		// i0 runs the fewest now but is home to half of what is held.
		for i, n := range []int{6, 2, 4} {
			for k := range n {
				p.idx.Insert(cands[i].ID, 1<<20, chain(uint64(100*i+k+1)<<32, 64))
			}
		}
	}
	running := func(cands []*policy.Instance) {
		for i, r := range []int64{20, 22, 24} {
			cands[i].Running = r
		}
	}

	p, cands := newPolicy(t, nil), fleet(3)
	setup(p, cands)
	running(cands)
	if got := p.Pick(req("new", chain(9<<32, 64)), cands).Ranked[0]; got != cands[1] {
		t.Fatalf("new prefix went to %s; want %s, home to the smallest share (2 of 12 prompts) though it runs 2 more than %s", got.ID, cands[1].ID, cands[0].ID)
	}
	// Requests under a prefix an instance holds are priced as before: the
	// home of this one is i0, and it stays there.
	held := chain(1<<32, 64)
	if got := p.Pick(req("held", append(held, chain(7<<32, 4)...)), cands).Ranked[0]; got != cands[0] {
		t.Fatalf("request under i0's prefix went to %s", got.ID)
	}

	// With nothing held anywhere there is no share to go by: the moment's
	// running count decides.
	p, cands = newPolicy(t, nil), fleet(3)
	running(cands)
	if got := p.Pick(req("new", chain(9<<32, 64)), cands).Ranked[0]; got != cands[0] {
		t.Fatalf("new prefix on an empty index went to %s; want %s, running the fewest", got.ID, cands[0].ID)
	}
}
