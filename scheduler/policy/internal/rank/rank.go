// Package rank orders candidates by score fast enough for fleets of a
// thousand instances. A full sort of 1,024 candidates costs more than the
// whole pick budget (≈70–140 µs on a 2-core machine), yet the scheduler only
// uses the first 1+retry_count; so Top sorts exactly the first k, breaking
// exact ties at random like policy.RankBy, and leaves the rest unordered.
package rank

import (
	"math/rand/v2"
	"slices"

	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// FullBelow: candidate lists this short are sorted completely.
const FullBelow = 64

type item struct {
	s   float64
	tie uint64
	i   int32
}

func less(a, b item) bool { return a.s < b.s || (a.s == b.s && a.tie < b.tie) }

func cmpItem(a, b item) int {
	switch {
	case less(a, b):
		return -1
	case less(b, a):
		return 1
	}
	return 0
}

// Top returns a new slice of every candidate: the k with the lowest scores
// first in ascending order (exact ties in random order), then the others.
// With fewer than FullBelow candidates, or k ≥ len(cands), all are sorted.
// scores[i] is cands[i]'s score.
func Top(r *rand.Rand, cands []*policy.Instance, scores []float64, k int) []*policy.Instance {
	n := len(cands)
	out := make([]*policy.Instance, 0, n)
	if n == 0 {
		return out
	}
	if k < 1 {
		k = 1
	}
	if n < FullBelow || k >= n {
		xs := make([]item, n)
		for i := range xs {
			xs[i] = item{scores[i], r.Uint64(), int32(i)}
		}
		slices.SortFunc(xs, cmpItem)
		for _, x := range xs {
			out = append(out, cands[x.i])
		}
		return out
	}
	// A max-heap of the k best so far; most candidates lose against its
	// top in one comparison and never draw a random number.
	h := make([]item, 0, k)
	for i, s := range scores {
		if len(h) < k {
			h = append(h, item{s, r.Uint64(), int32(i)})
			up(h, len(h)-1)
			continue
		}
		if s > h[0].s {
			continue
		}
		it := item{s, r.Uint64(), int32(i)}
		if less(it, h[0]) {
			h[0] = it
			down(h, 0)
		}
	}
	slices.SortFunc(h, cmpItem)
	taken := make([]bool, n)
	for _, x := range h {
		out = append(out, cands[x.i])
		taken[x.i] = true
	}
	for i, c := range cands {
		if !taken[i] {
			out = append(out, c)
		}
	}
	return out
}

func up(h []item, i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !less(h[p], h[i]) {
			return
		}
		h[p], h[i] = h[i], h[p]
		i = p
	}
}

func down(h []item, i int) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && less(h[l], h[r]) {
			m = r
		}
		if !less(h[i], h[m]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}
