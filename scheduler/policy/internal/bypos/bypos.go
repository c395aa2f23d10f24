// Package bypos caches what a policy derives from each candidate (an index
// slot, an account) by the candidate's position in the list. The scheduler
// passes its candidates in a stable order, so with a thousand of them the
// cache saves a map lookup by ID per candidate on every pick — the largest
// cost of a pick once the pricing itself is cheap.
//
// An entry is trusted for the same instance pointer while the caller's
// generation is unchanged: the cache holds the pointer, so its address
// cannot be reused by another instance, and an Instance's ID never changes.
// The caller bumps its generation whenever what it derives may have changed
// for an instance it already saw (a slot handed out or freed, an account
// made or dropped).
package bypos

import (
	"slices"

	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// Cache holds, by position, the instance last seen there and what was
// derived from it. Not safe for concurrent use (a policy's picks are
// serial).
type Cache[T any] struct {
	ptrs []*policy.Instance
	vals []T
	gen  uint64
}

// Get returns, for each candidate, derive(candidate): cached by position,
// computed afresh where the instance at a position changed, and for every
// position when gen differs from the previous call's. The slice is the
// cache's own, valid until the next call.
func (c *Cache[T]) Get(cands []*policy.Instance, gen uint64, derive func(*policy.Instance) T) []T {
	n := len(cands)
	if len(c.ptrs) != n || c.gen != gen {
		c.ptrs = slices.Grow(c.ptrs[:0], n)[:n]
		c.vals = slices.Grow(c.vals[:0], n)[:n]
		clear(c.ptrs)
		c.gen = gen
	}
	ptrs, vals := c.ptrs[:n], c.vals[:n]
	for i, x := range cands {
		if ptrs[i] != x {
			ptrs[i], vals[i] = x, derive(x)
		}
	}
	return vals
}

// Index is the position of inst in the last Get's candidates, or -1.
func (c *Cache[T]) Index(inst *policy.Instance) int {
	return slices.Index(c.ptrs, inst)
}
