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

// insertEach is Insert without the run splice: every block touched on its
// own, last to first — the definition Insert's shortcut must agree with.
func insertEach(x *Index, id string, capacity int, hashes []uint64) {
	s := x.slotFor(id)
	x.slots[s].cap = int32(max(capacity, 1))
	limit := x.limit(s)
	for i := len(hashes) - 1; i >= 0; i-- {
		x.touch(s, hashes[i], none)
		for x.slots[s].n > limit {
			x.evict(s)
		}
	}
	for x.slots[s].n > limit {
		x.evict(s)
	}
	x.updateStats()
}

// lruOf lists the blocks of id, most recently used first.
func lruOf(x *Index, id string) []uint64 {
	s := x.Slot(id)
	if s < 0 {
		return nil
	}
	var out []uint64
	for n := x.slots[s].head; n != none; n = x.nodes.at(n).next {
		out = append(out, x.nodes.at(n).hash)
	}
	return out
}

// TestInsertRunSpliceAgreesWithEachBlock replays chained conversations —
// next turns on the same instance, turns moving to another instance,
// restarts, tight and changing capacities, a global bound, removals — into
// two indexes, one through Insert and one block by block, and requires the
// same LRU order on every instance and the same totals after every step.
func TestInsertRunSpliceAgreesWithEachBlock(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	const nInst = 12
	a, b := New(nInst*50), New(nInst*50)
	ids := make([]string, nInst)
	for i := range ids {
		ids[i] = fmt.Sprintf("10.0.2.%d:8000", i)
	}
	sys := [][]uint64{extend(nil, 1, 10), extend(nil, 2, 25)}
	convs := make([][]uint64, 30)
	home := make([]string, len(convs))
	for i := range convs {
		convs[i], home[i] = sys[i%2], ids[i%nInst]
	}
	spliced := 0
	for step := range 5000 {
		ci := r.IntN(len(convs))
		switch op := r.IntN(100); {
		case op < 2:
			id := ids[r.IntN(nInst)]
			a.Remove(id)
			b.Remove(id)
		case op < 8:
			home[ci] = ids[r.IntN(nInst)] // the conversation moves
		case op < 10:
			convs[ci] = sys[r.IntN(2)] // starts over
		default:
			convs[ci] = extend(convs[ci], uint64(step), 1+r.IntN(6))
			if len(convs[ci]) > 90 {
				convs[ci] = sys[r.IntN(2)]
			}
			capacity := 20 + r.IntN(120)
			hs := convs[ci]
			if r.IntN(4) == 0 {
				hs = hs[:1+r.IntN(len(hs))] // an older turn again
			}
			if s := a.Slot(home[ci]); s >= 0 && len(hs) > 1 {
				if _, _, n := a.run(s, hs); n > 1 {
					spliced++
				}
			}
			a.Insert(home[ci], capacity, hs)
			insertEach(b, home[ci], capacity, hs)
		}
		for _, id := range ids {
			if la, lb := lruOf(a, id), lruOf(b, id); fmt.Sprint(la) != fmt.Sprint(lb) {
				t.Fatalf("step %d: %s holds\n%v\nblock by block\n%v", step, id, la, lb)
			}
		}
		if a.Pairs() != b.Pairs() || a.Blocks() != b.Blocks() {
			t.Fatalf("step %d: pairs %d/%d, blocks %d/%d", step, a.Pairs(), b.Pairs(), a.Blocks(), b.Blocks())
		}
	}
	if spliced < 1000 {
		t.Fatalf("only %d inserts took the run shortcut: the scenario does not test it", spliced)
	}
}

// TestInsertBoundedTeachesAPrefix replays chained conversations whose turns
// move between instances and bring up to 60 new blocks, teaching one index
// at most 8 new blocks a pick (InsertBounded) and another the same prefix
// of each chain with Insert: InsertBounded must report the blocks the
// instance held before and after, give the same LRU order as Insert of
// that prefix, and keep what every instance holds a prefix of the chain, so
// MatchChain's bisection still finds Match's lengths.
func TestInsertBoundedTeachesAPrefix(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	const nInst, budget = 6, 8
	a, b := New(nInst*120), New(nInst*120)
	ids := make([]string, nInst)
	for i := range ids {
		ids[i] = fmt.Sprintf("10.0.4.%d:8000", i)
	}
	sys := [][]uint64{extend(nil, 1, 40), extend(nil, 2, 5)}
	convs := make([][]uint64, 20)
	for i := range convs {
		convs[i] = sys[i%2]
	}
	bounded, checked := 0, 0
	for step := range 4000 {
		ci := r.IntN(len(convs))
		if r.IntN(3) == 0 {
			q := convs[ci][:1+r.IntN(len(convs[ci]))]
			a.Match(q)
			lens := make([]int, nInst)
			for i, id := range ids {
				lens[i] = a.Matched(a.Slot(id))
			}
			a.MatchChain(q)
			for i, id := range ids {
				if g := a.Matched(a.Slot(id)); g != lens[i] {
					t.Fatalf("step %d: %s: MatchChain %d blocks, Match %d", step, id, g, lens[i])
				}
			}
			checked++
			continue
		}
		convs[ci] = extend(convs[ci], uint64(step), 1+r.IntN(60))
		if len(convs[ci]) > 150 {
			convs[ci] = sys[r.IntN(2)]
		}
		id, capacity := ids[r.IntN(nInst)], 60+r.IntN(100)
		hs := convs[ci]
		want := 0
		if b.Match(hs) > 0 {
			want = b.Matched(b.Slot(id))
		}
		held, inserted := a.InsertBounded(id, capacity, hs, budget)
		if held != want || inserted != min(len(hs), want+budget) {
			t.Fatalf("step %d: InsertBounded reports %d held, %d inserted; want %d and %d", step, held, inserted, want, min(len(hs), want+budget))
		}
		if inserted < len(hs) {
			bounded++
		}
		b.Insert(id, capacity, hs[:inserted])
		for _, id := range ids {
			if la, lb := lruOf(a, id), lruOf(b, id); fmt.Sprint(la) != fmt.Sprint(lb) {
				t.Fatalf("step %d: %s holds\n%v\nInsert of the prefix gives\n%v", step, id, la, lb)
			}
		}
	}
	if bounded < 500 || checked < 1000 {
		t.Fatalf("%d bounded inserts, %d lookups compared: the scenario does not test the bound", bounded, checked)
	}
}
