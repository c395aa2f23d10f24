// Package rank orders candidates by score fast enough for fleets of a
// thousand instances. A full sort of 1,024 candidates costs more than the
// whole pick budget (≈70–140 µs on a 2-core machine), yet the scheduler only
// uses the first 1+retry_count; so the k best are selected with a bounded
// heap and sorted, breaking exact ties at random like policy.RankBy.
//
// Top returns every candidate (the k best first, the rest unordered). A
// Ranker returns only the k best and reuses its scratch space, so a pick
// over a thousand candidates allocates a few dozen bytes instead of
// ≈10 KB: at tens of thousands of picks a second that allocation rate is
// what drives the garbage collector, and its pauses, into the pick's p99.
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
	h := selectBest(r, scores, k, nil)
	for _, x := range h {
		out = append(out, cands[x.i])
	}
	if len(h) == n {
		return out
	}
	taken := make([]bool, n)
	for _, x := range h {
		taken[x.i] = true
	}
	for i, c := range cands {
		if !taken[i] {
			out = append(out, c)
		}
	}
	return out
}

// Ranker selects the best candidates with scratch space kept between calls.
// It is not safe for concurrent use (a policy's picks are serial).
type Ranker struct {
	scratch []item
	stream  Stream
}

// Top returns a new slice of the k candidates with the lowest scores in
// ascending order (exact ties in random order); with fewer than FullBelow
// candidates, or k ≥ len(cands), every candidate, sorted. It draws the same
// random numbers as the package's Top, so both rank identically.
func (rk *Ranker) Top(r *rand.Rand, cands []*policy.Instance, scores []float64, k int) []*policy.Instance {
	if len(cands) == 0 {
		return []*policy.Instance{}
	}
	h := selectBest(r, scores, k, rk.scratch)
	rk.scratch = h[:0]
	out := make([]*policy.Instance, len(h))
	for j, x := range h {
		out[j] = cands[x.i]
	}
	return out
}

// selectBest returns the best min(k, n) items sorted, or all n when n is
// below FullBelow or k ≥ n, in buf's storage when it is large enough.
func selectBest(r *rand.Rand, scores []float64, k int, buf []item) []item {
	n := len(scores)
	k = max(k, 1)
	if n < FullBelow || k >= n {
		xs := slices.Grow(buf[:0], n)[:n]
		for i := range xs {
			xs[i] = item{scores[i], r.Uint64(), int32(i)}
		}
		slices.SortFunc(xs, cmpItem)
		return xs
	}
	// A max-heap of the k best so far; most candidates lose against its
	// top in one comparison and never draw a random number.
	h := slices.Grow(buf[:0], k)
	for i, s := range scores[:k] {
		h = append(h, item{s, r.Uint64(), int32(i)})
		up(h, len(h)-1)
	}
	top := h[0].s // kept in a register: the loop below mostly compares
	for i := k; i < len(scores); i++ {
		s := scores[i]
		if s > top {
			continue
		}
		it := item{s, r.Uint64(), int32(i)}
		if less(it, h[0]) {
			h[0] = it
			down(h, 0)
			top = h[0].s
		}
	}
	slices.SortFunc(h, cmpItem)
	return h
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

// Stream selects the k best of candidates offered one at a time, in index
// order, drawing tie-break numbers exactly as selectBest does — so a policy
// that offers every candidate ranks identically to Top — while letting the
// policy skip the scoring of a candidate it can prove loses: once Full, a
// candidate whose score would exceed Threshold would have been passed over
// without a draw, so not offering it changes nothing.
//
// Use it only where selectBest keeps a heap: n ≥ FullBelow and k < n.
type Stream struct {
	r   *rand.Rand
	k   int
	h   []item
	top float64
}

// Stream starts a selection of the k best (k ≥ 1) in rk's scratch space.
func (rk *Ranker) Stream(r *rand.Rand, k int) *Stream {
	st := &rk.stream
	*st = Stream{r: r, k: max(k, 1), h: slices.Grow(rk.scratch[:0], max(k, 1))}
	return st
}

// Full reports whether k candidates are held; until then every candidate
// must be offered.
func (st *Stream) Full() bool { return len(st.h) == st.k }

// Threshold is the largest score that can still enter once Full.
func (st *Stream) Threshold() float64 { return st.top }

// Offer considers candidate i with score s.
func (st *Stream) Offer(i int32, s float64) {
	if len(st.h) < st.k {
		st.h = append(st.h, item{s, st.r.Uint64(), i})
		up(st.h, len(st.h)-1)
		st.top = st.h[0].s
		return
	}
	if s > st.top {
		return
	}
	it := item{s, st.r.Uint64(), i}
	if less(it, st.h[0]) {
		st.h[0] = it
		down(st.h, 0)
		st.top = st.h[0].s
	}
}

// Ranked returns a new slice of the selected candidates, best first, and
// gives the scratch space back to the Ranker.
func (rk *Ranker) Ranked(st *Stream, cands []*policy.Instance) []*policy.Instance {
	slices.SortFunc(st.h, cmpItem)
	out := make([]*policy.Instance, len(st.h))
	for j, x := range st.h {
		out[j] = cands[x.i]
	}
	rk.scratch = st.h[:0]
	return out
}
