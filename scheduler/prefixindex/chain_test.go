package prefixindex

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// extend appends n blocks chained on the last hash of hs, as
// internal/prompthash does: each hash covers every block before it.
func extend(hs []uint64, salt uint64, n int) []uint64 {
	h := uint64(0xfeed)
	if len(hs) > 0 {
		h = hs[len(hs)-1]
	}
	out := append([]uint64{}, hs...)
	for i := range n {
		h = (h^(salt<<8|uint64(i)))*0x9E3779B97F4A7C15 + 1
		out = append(out, h)
	}
	return out
}

// TestMatchChainAgreesWithMatch replays chained traffic — shared system
// prompts, conversations growing turn by turn, tight and changing
// capacities, a global bound, removals — and checks that MatchChain's
// bisection finds exactly the lengths of Match's block-by-block walk for
// every instance, on requests that end inside, at and beyond what is held.
func TestMatchChainAgreesWithMatch(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 9))
	for _, nInst := range []int{3, 40, 150} { // 150 makes hot blocks
		x := New(nInst * 40)
		ids := make([]string, nInst)
		for i := range ids {
			ids[i] = fmt.Sprintf("10.0.1.%d:8000", i)
		}
		sys := [][]uint64{extend(nil, 1, 20), extend(nil, 2, 12), extend(nil, 3, 30)}
		convs := make([][]uint64, 60)
		for i := range convs {
			convs[i] = sys[i%len(sys)]
		}
		checked, multi := 0, 0
		for step := range 3000 {
			ci := r.IntN(len(convs))
			switch op := r.IntN(100); {
			case op < 2:
				x.Remove(ids[r.IntN(nInst)])
			case op < 55:
				convs[ci] = extend(convs[ci], uint64(step), 1+r.IntN(8))
				if len(convs[ci]) > 200 {
					convs[ci] = sys[r.IntN(len(sys))]
				}
				for range 1 + r.IntN(3) {
					x.Insert(ids[r.IntN(nInst)], 10+r.IntN(60), convs[ci])
				}
			default:
				// A prefix of the conversation (an older turn), all of it,
				// or all of it plus new blocks (the next turn).
				hs := convs[ci]
				switch r.IntN(3) {
				case 0:
					hs = hs[:1+r.IntN(len(hs))]
				case 1:
					hs = extend(hs, uint64(1<<20+step), 1+r.IntN(8))
				}
				want := x.Match(hs)
				lens := make(map[string]int, nInst)
				distinct := map[int]bool{}
				for _, id := range ids {
					lens[id] = x.Matched(x.Slot(id))
					if lens[id] > 0 {
						distinct[lens[id]] = true
					}
				}
				wantID, wantN := x.Best()
				got := x.MatchChain(hs)
				if got != want {
					t.Fatalf("n=%d step %d: MatchChain matched %d instances, Match %d", nInst, step, got, want)
				}
				for _, id := range ids {
					if g := x.Matched(x.Slot(id)); g != lens[id] {
						t.Fatalf("n=%d step %d: %s: MatchChain %d blocks, Match %d", nInst, step, id, g, lens[id])
					}
				}
				// MatchedSlots lists exactly the matched slots, once each.
				listed := map[int32]bool{}
				for _, s := range x.MatchedSlots() {
					if listed[s] || s < 0 || int(s) >= x.SlotCount() || x.Matched(s) == 0 {
						t.Fatalf("n=%d step %d: MatchedSlots lists slot %d (twice %v, slots %d, matched %d)", nInst, step, s, listed[s], x.SlotCount(), x.Matched(s))
					}
					listed[s] = true
				}
				if len(listed) != got {
					t.Fatalf("n=%d step %d: MatchedSlots lists %d slots, %d matched", nInst, step, len(listed), got)
				}
				if id, n := x.Best(); id != wantID || n != wantN {
					t.Fatalf("n=%d step %d: Best after MatchChain %s/%d, after Match %s/%d", nInst, step, id, n, wantID, wantN)
				}
				checked++
				if len(distinct) > 1 {
					multi++
				}
			}
		}
		// The comparison must have covered requests whose holders matched
		// different lengths, where the bisection has several cuts to find.
		if checked < 1000 || multi < 100 {
			t.Fatalf("n=%d: %d lookups compared, %d with several match lengths; the scenario is too weak", nInst, checked, multi)
		}
	}
}
