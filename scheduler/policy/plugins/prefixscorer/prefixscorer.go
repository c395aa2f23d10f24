// Package prefixscorer is prefix-cache-scorer: the share of the request's
// prompt blocks each candidate holds, as far as a prefix index learnt from
// the scheduler's own picks can tell (scheduler/prefixindex, the same block
// hashes prefix-cache uses). It is llm-d's prefix-cache-scorer and the
// prefix term of SGLang's and vLLM's cache-aware routers.
//
// Parameters (llm-d's names where they mean the same):
//
//	hashBlockSize          characters per hashed block. The gateway hashes
//	                       llm_gateway.block_chars; any other value is refused
//	                       (the index could not match it).
//	maxPrefixBlocksToMatch match and learn at most this many leading blocks
//	                       (default: every block the gateway hashed).
//	lruCapacityPerServer   blocks remembered per instance (default: the
//	                       instance's reported KV capacity, else
//	                       llm_scheduler.prefix_index.default_blocks).
//	maxIndexBlocks         (block, instance) pairs over all instances
//	                       (default llm_scheduler.prefix_index.max_blocks).
//
// Newer upstream releases' autoTune, blockSize, blockSizeTokens and
// maxPrefixTokensToMatch are refused by name like any unknown parameter:
// the block size is the gateway's, and the capacity already follows the
// instance's report unless lruCapacityPerServer fixes it.
package prefixscorer

import (
	"fmt"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	"github.com/llmrouter/llmrouter/scheduler/prefixindex"
)

// Type is the plugin's type name.
const Type = "prefix-cache-scorer"

// Params are the plugin's parameters.
type Params struct {
	HashBlockSize          int  `json:"hashBlockSize" default:"llm_gateway.block_chars"`
	MaxPrefixBlocksToMatch *int `json:"maxPrefixBlocksToMatch"`
	LRUCapacityPerServer   *int `json:"lruCapacityPerServer"`
	MaxIndexBlocks         int  `json:"maxIndexBlocks" default:"llm_scheduler.prefix_index.max_blocks"`
}

// DefaultParams are the parameters with c's block size and index bound;
// the optional ones are not given.
func DefaultParams(c config.Config) Params {
	return Params{HashBlockSize: c.Gateway.BlockChars, MaxIndexBlocks: c.Scheduler.PrefixIndex.MaxBlocks}
}

// Validate checks the parameters' own rules (hashBlockSize is held to the
// gateway's block size when the scorer is built).
func (pr Params) Validate() error {
	if m := pr.MaxPrefixBlocksToMatch; m != nil && *m < 1 {
		return fmt.Errorf("parameter maxPrefixBlocksToMatch %d: accepted: 1 or more", *m)
	}
	if m := pr.LRUCapacityPerServer; m != nil && *m < 1 {
		return fmt.Errorf("parameter lruCapacityPerServer %d: accepted: 1 or more", *m)
	}
	if pr.MaxIndexBlocks < 1 {
		return fmt.Errorf("parameter maxIndexBlocks %d: accepted: 1 or more", pr.MaxIndexBlocks)
	}
	return nil
}

func init() {
	framework.RegisterPlugin(Type, DefaultParams, func(h *framework.Handle, pr Params) (any, error) {
		c := h.Deps.Config
		if pr.HashBlockSize != c.Gateway.BlockChars {
			return nil, fmt.Errorf("parameter hashBlockSize %d: accepted: %d (the gateway hashes llm_gateway.block_chars = %d characters a block; change that key to change it)", pr.HashBlockSize, c.Gateway.BlockChars, c.Gateway.BlockChars)
		}
		s := &Scorer{p: pr, idx: prefixindex.New(pr.MaxIndexBlocks), size: prefixindex.NewSizing(c)}
		if err := prefixindex.Register(h.Deps.Metrics, s.idx); err != nil {
			return nil, err
		}
		return s, nil
	})
}

// Scorer is prefix-cache-scorer. The scheduler calls it serially.
type Scorer struct {
	p    Params
	idx  *prefixindex.Index
	size prefixindex.Sizing
}

// Index is the scorer's prefix index, for plugins that read more of it
// (cache-aware-picker reads how much each instance holds).
func (s *Scorer) Index() *prefixindex.Index { return s.idx }

// hashes are the request's hashes that cover at most
// maxPrefixBlocksToMatch blocks (a tail hash counts as the blocks it
// covers, policy.Request.Blocks).
func (s *Scorer) hashes(req *policy.Request) []uint64 {
	h := req.BlockHashes
	if m := s.p.MaxPrefixBlocksToMatch; m != nil && req.Blocks(len(h)) > *m {
		k := *m
		if k > req.HeadBlocks && req.BlocksPerTail > 1 {
			k = req.HeadBlocks + (k-req.HeadBlocks)/req.BlocksPerTail
		}
		h = h[:k]
	}
	return h
}

// Score is the matched share of the prompt's blocks.
func (s *Scorer) Score(_ *framework.CycleState, req *policy.Request, cands []*policy.Instance, out []float64) {
	h := s.hashes(req)
	n := req.Blocks(len(h))
	if n == 0 || s.idx.MatchChain(h) == 0 {
		clear(out)
		return
	}
	for i, c := range cands {
		out[i] = float64(req.Blocks(s.idx.Matched(s.idx.Slot(c.ID)))) / float64(n)
	}
}

// Picked teaches the index that the chosen instance holds the prompt.
func (s *Scorer) Picked(req *policy.Request, d policy.Decision) {
	h := s.hashes(req)
	if len(d.Ranked) == 0 || len(h) == 0 {
		return
	}
	c := d.Ranked[0]
	capacity := s.size.Capacity(c.NumGPUBlocks, c.BlockSize, req.BlockChars)
	if m := s.p.LRUCapacityPerServer; m != nil {
		capacity = *m
	}
	s.idx.Insert(c.ID, capacity, h)
}

// Completed is a no-op: what an instance holds does not change when a
// request ends.
func (*Scorer) Completed(string, string, int64, int64) {}

// Removed forgets an instance's blocks.
func (s *Scorer) Removed(id string) { s.idx.Remove(id) }

var _ policy.Observer = (*Scorer)(nil)
