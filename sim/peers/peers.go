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
	kind kind
	rand *rand.Rand
	idx  *prefixindex.Index
	size prefixindex.Sizing
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
	match := func(*policy.Instance) float64 { return 0 }
	if n := len(req.BlockHashes); n > 0 && p.idx.MatchChain(req.BlockHashes) > 0 {
		match = func(c *policy.Instance) float64 { return float64(p.idx.Matched(p.idx.Slot(c.ID))) / float64(n) }
	}
	var score func(*policy.Instance) float64
	if p.kind == scorer {
		score = scoreWith(cands, match)
	} else {
		score = p.cacheAware(cands, match)
	}
	// RankBy sorts ascending and breaks exact ties at random.
	return policy.Decision{Ranked: policy.RankBy(p.rand, cands, func(c *policy.Instance) float64 { return -score(c) })}
}

// cacheAware: least loaded when the fleet is imbalanced, else the longest
// match above the threshold, else the instance holding the fewest blocks.
// It returns the score of a candidate, higher better.
func (p *peer) cacheAware(cands []*policy.Instance, match func(*policy.Instance) float64) func(*policy.Instance) float64 {
	lo, hi := cands[0].Load(), cands[0].Load()
	best := 0.0
	for _, c := range cands {
		lo, hi = min(lo, c.Load()), max(hi, c.Load())
		best = max(best, match(c))
	}
	switch {
	case hi-lo > balanceAbsThreshold && float64(hi) > balanceRelThreshold*float64(lo):
		return func(c *policy.Instance) float64 { return -float64(c.Load()) }
	case best > cacheThreshold:
		return match
	}
	return func(c *policy.Instance) float64 { return -float64(p.idx.Held(c.ID)) }
}

// scoreWith is the weighted sum of the prefix match, the queue score (the
// shortest waiting queue 1, the longest 0) and the free KV cache.
func scoreWith(cands []*policy.Instance, match func(*policy.Instance) float64) func(*policy.Instance) float64 {
	lo, hi := cands[0].Waiting, cands[0].Waiting
	for _, c := range cands {
		lo, hi = min(lo, c.Waiting), max(hi, c.Waiting)
	}
	return func(c *policy.Instance) float64 {
		queue := 1.0
		if hi > lo {
			queue = float64(hi-c.Waiting) / float64(hi-lo)
		}
		return prefixWeight*match(c) + queueWeight*queue + kvWeight*(1-c.KVCacheUsage)
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
