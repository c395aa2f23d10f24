package peers

import (
	"math/rand/v2"

	"github.com/llmrouter/llmrouter/scheduler/policy"
	"github.com/llmrouter/llmrouter/scheduler/prefixindex"
)

// Names of the comparison policies.
const (
	CacheAware = "peer-cache-aware"
	Scorer     = "peer-scorer"
)

// The published defaults (see the package comment).
const (
	cacheThreshold      = 0.3
	balanceAbsThreshold = 64
	balanceRelThreshold = 1.5

	prefixWeight, queueWeight, kvWeight = 3, 2, 2
)

func init() {
	policy.Register(CacheAware, func(d policy.Deps) (policy.Policy, error) { return newPeer(d, cacheAware), nil })
	policy.Register(Scorer, func(d policy.Deps) (policy.Policy, error) { return newPeer(d, scorer), nil })
}

type kind int

const (
	cacheAware kind = iota
	scorer
)

// peer is either comparison policy: a prefix index learnt from its own
// picks and a decision rule.
type peer struct {
	kind   kind
	rand   *rand.Rand
	idx    *prefixindex.Index
	size   prefixindex.Sizing
	scores []float64
}

func newPeer(d policy.Deps, k kind) *peer {
	c := d.Config
	p := &peer{
		kind: k, rand: d.Rand, idx: prefixindex.New(c.Scheduler.Policies.PrefixIndexMaxBlocks),
		size: prefixindex.NewSizing(c),
	}
	if p.rand == nil {
		p.rand = rand.New(rand.NewPCG(1, 2))
	}
	return p
}

func (p *peer) Name() string {
	if p.kind == scorer {
		return Scorer
	}
	return CacheAware
}

// Pick scores every candidate (higher is better) and ranks them.
func (p *peer) Pick(req *policy.Request, cands []*policy.Instance) policy.Decision {
	if len(cands) == 0 {
		return policy.Decision{}
	}
	if cap(p.scores) < len(cands) {
		p.scores = make([]float64, len(cands))
	}
	sc := p.scores[:len(cands)]
	match := func(c *policy.Instance) float64 { return 0 }
	if n := len(req.BlockHashes); n > 0 && p.idx.MatchChain(req.BlockHashes) > 0 {
		match = func(c *policy.Instance) float64 { return float64(p.idx.Matched(p.idx.Slot(c.ID))) / float64(n) }
	}
	if p.kind == scorer {
		p.score(cands, sc, match)
	} else {
		p.cacheAware(cands, sc, match)
	}
	// RankBy sorts ascending and breaks exact ties at random.
	pos := make(map[*policy.Instance]int, len(cands))
	for i, c := range cands {
		pos[c] = i
	}
	return policy.Decision{Ranked: policy.RankBy(p.rand, cands, func(c *policy.Instance) float64 { return -sc[pos[c]] })}
}

// cacheAware: least loaded when the fleet is imbalanced, else the longest
// match above the threshold, else the instance holding the fewest blocks.
func (p *peer) cacheAware(cands []*policy.Instance, sc []float64, match func(*policy.Instance) float64) {
	lo, hi := cands[0].Load(), cands[0].Load()
	for _, c := range cands {
		lo, hi = min(lo, c.Load()), max(hi, c.Load())
	}
	if hi-lo > balanceAbsThreshold && float64(hi) > balanceRelThreshold*float64(lo) {
		for i, c := range cands {
			sc[i] = -float64(c.Load())
		}
		return
	}
	best := 0.0
	for i, c := range cands {
		sc[i] = match(c)
		best = max(best, sc[i])
	}
	if best > cacheThreshold {
		return
	}
	for i, c := range cands {
		sc[i] = -float64(p.idx.Held(c.ID))
	}
}

// score is the weighted sum of the prefix match, the queue score (the
// shortest waiting queue 1, the longest 0) and the free KV cache.
func (p *peer) score(cands []*policy.Instance, sc []float64, match func(*policy.Instance) float64) {
	lo, hi := cands[0].Waiting, cands[0].Waiting
	for _, c := range cands {
		lo, hi = min(lo, c.Waiting), max(hi, c.Waiting)
	}
	for i, c := range cands {
		queue := 1.0
		if hi > lo {
			queue = float64(hi-c.Waiting) / float64(hi-lo)
		}
		sc[i] = prefixWeight*match(c) + queueWeight*queue + kvWeight*(1-c.KVCacheUsage)
	}
}

// Picked teaches the index that the chosen instance holds the prompt.
func (p *peer) Picked(req *policy.Request, d policy.Decision) {
	if len(d.Ranked) == 0 || len(req.BlockHashes) == 0 {
		return
	}
	c := d.Ranked[0]
	p.idx.Insert(c.ID, p.size.Capacity(c.NumGPUBlocks, c.BlockSize, req.BlockChars), req.BlockHashes)
}

func (*peer) Completed(string, string, int64, int64) {}

// Removed forgets an instance's blocks.
func (p *peer) Removed(id string) { p.idx.Remove(id) }

var _ policy.Observer = (*peer)(nil)
