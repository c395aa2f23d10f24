package prefixindex

import "math/bits"

// Match computes, for every instance holding the chain's first block, how
// many leading blocks of hashes it holds, and returns how many instances
// matched at least one block. Read the results with Matched until the next
// Match, Insert or Remove.
//
// It walks the chain once, narrowing the set of instances still matching:
// a list while few remain, a bitset intersected with hot blocks' holder
// bitsets while many do. The cost is bounded by the blocks matched times the
// smaller of the holders and the instance count / 64.
func (x *Index) Match(hashes []uint64) int {
	b, ok := x.begin(hashes)
	if !ok {
		return 0
	}
	dense := false
	x.list = x.list[:0]
	if b.first < 0 {
		words := (len(x.slots) + 63) >> 6
		if cap(x.dense) < words {
			x.dense = make([]uint64, words)
		}
		x.dense = x.dense[:words]
		clear(x.dense)
		copy(x.dense, x.hots[^b.first].bits)
		dense = true
		if int(b.n) <= sparseMax {
			x.toSparse()
			dense = false
		}
	} else {
		for n := b.first; n != none; n = x.nodes.at(n).same {
			x.list = append(x.list, x.nodes.at(n).inst)
		}
	}
	for i := 1; i < len(hashes); i++ {
		if !dense && len(x.list) == 0 {
			break
		}
		b, ok := x.blocks[hashes[i]]
		if !ok {
			x.endAll(dense, i)
			return len(x.matched)
		}
		switch {
		case dense && b.first < 0:
			hb := x.hots[^b.first].bits
			left := 0
			for w := range x.dense {
				var keep uint64
				if w < len(hb) {
					keep = hb[w]
				}
				x.endBits(x.dense[w]&^keep, w, i)
				x.dense[w] &= keep
				left += bits.OnesCount64(x.dense[w])
			}
			if left == 0 {
				return len(x.matched)
			}
			if left <= sparseMax {
				x.toSparse()
				dense = false
			}
		case dense:
			// A cold block: its few holders that are still active go on.
			x.list = x.list[:0]
			for n := b.first; n != none; n = x.nodes.at(n).same {
				s := x.nodes.at(n).inst
				if w := int(s) >> 6; x.dense[w]&(1<<(uint(s)&63)) != 0 {
					x.list = append(x.list, s)
					x.dense[w] &^= 1 << (uint(s) & 63)
				}
			}
			for w, v := range x.dense {
				x.endBits(v, w, i)
			}
			dense = false
		case b.first < 0:
			hb := x.hots[^b.first].bits
			x.list2 = x.list2[:0]
			for _, s := range x.list {
				if w := int(s) >> 6; w < len(hb) && hb[w]&(1<<(uint(s)&63)) != 0 {
					x.list2 = append(x.list2, s)
				} else {
					x.end(s, i)
				}
			}
			x.list, x.list2 = x.list2, x.list
		default:
			x.nextMark()
			for n := b.first; n != none; n = x.nodes.at(n).same {
				x.stamp[x.nodes.at(n).inst] = x.mark
			}
			x.list2 = x.list2[:0]
			for _, s := range x.list {
				if x.stamp[s] == x.mark {
					x.list2 = append(x.list2, s)
				} else {
					x.end(s, i)
				}
			}
			x.list, x.list2 = x.list2, x.list
		}
	}
	x.endAll(dense, len(hashes))
	return len(x.matched)
}

// begin starts a lookup: it forgets the last one's results and returns the
// chain's first block (false when nothing holds it, or there is none).
func (x *Index) begin(hashes []uint64) (block, bool) {
	x.lookup++
	if x.lookup == 0 { // wrapped: old stamps could alias
		clear(x.lensAt)
		x.lookup = 1
	}
	x.matched = x.matched[:0]
	if len(hashes) == 0 {
		return block{}, false
	}
	b, ok := x.blocks[hashes[0]]
	return b, ok
}

// Matched is the number of leading blocks instance slot s held in the last
// Match; 0 when it held none or s is out of range.
func (x *Index) Matched(s int32) int {
	if s < 0 || int(s) >= len(x.lensAt) || x.lensAt[s] != x.lookup {
		return 0
	}
	return int(x.lens[s])
}

// MatchedSlots lists the slots that matched at least one block in the last
// Match or MatchChain, in no particular order; valid (and not to be kept or
// changed) until the next Match, MatchChain, Insert or Remove. A caller that
// reads the lengths of a few matched instances out of a thousand candidates
// walks this list instead of asking Matched for every candidate.
func (x *Index) MatchedSlots() []int32 { return x.matched }

// HeldAt is the number of blocks the index believes slot s holds (Held by
// slot); 0 for a free or out-of-range slot.
func (x *Index) HeldAt(s int32) int {
	if s < 0 || int(s) >= len(x.slots) {
		return 0
	}
	return int(x.slots[s].n)
}

// SlotCount bounds the slot numbers: every slot is below it.
func (x *Index) SlotCount() int { return len(x.slots) }

// Slot is the index's number for instance id, or -1 when it holds nothing.
// Slots are reused after Remove; SlotID tells which instance holds one now.
func (x *Index) Slot(id string) int32 {
	if s, ok := x.slotOf[id]; ok {
		return s
	}
	return none
}

// SlotID is the instance of slot s ("" when free).
func (x *Index) SlotID(s int32) string {
	if s < 0 || int(s) >= len(x.slots) {
		return ""
	}
	return x.slots[s].id
}

// Best returns the instance with the longest match in the last Match and its
// length ("" and 0 when none matched); ties go to the lowest slot.
func (x *Index) Best() (string, int) {
	best, n := int32(none), int32(0)
	for _, s := range x.matched {
		if l := x.lens[s]; l > n || (l == n && s < best) {
			best, n = s, l
		}
	}
	if best == none {
		return "", 0
	}
	return x.slots[best].id, int(n)
}

func (x *Index) end(s int32, l int) {
	x.lens[s] = int32(l)
	x.lensAt[s] = x.lookup
	x.matched = append(x.matched, s)
}

func (x *Index) endBits(v uint64, w, l int) {
	for v != 0 {
		t := bits.TrailingZeros64(v)
		x.end(int32(w<<6+t), l)
		v &= v - 1
	}
}

func (x *Index) endAll(dense bool, l int) {
	if dense {
		for w, v := range x.dense {
			x.endBits(v, w, l)
		}
		return
	}
	for _, s := range x.list {
		x.end(s, l)
	}
	x.list = x.list[:0]
}

func (x *Index) toSparse() {
	x.list = x.list[:0]
	for w, v := range x.dense {
		for v != 0 {
			t := bits.TrailingZeros64(v)
			x.list = append(x.list, int32(w<<6+t))
			v &= v - 1
		}
	}
}

func (x *Index) nextMark() {
	x.mark++
	if x.mark == 0 {
		clear(x.stamp)
		x.mark = 1
	}
}

// cut is where the holder set of a chain shrinks: the holders of block b
// (at position pos-1) that do not hold the next block matched pos blocks.
type cut struct {
	pos int32
	b   block
}

// MatchChain is Match for a chained request — one where each block's hash
// covers every block before it, as internal/prompthash makes them — and
// gives the same results with far fewer map lookups.
//
// Why it may bisect: Insert touches a chain last block first, so in every
// instance's LRU a block is always more recent than its successor, and
// eviction (which takes the least recent) never drops a block before the
// blocks after it. A held block's hash names its whole prefix, so an
// instance holding block i holds blocks 0..i: the holders of successive
// blocks are nested, and equal holder counts at two positions mean equal
// holder sets in between. MatchChain bisects the chain for the positions
// where the count drops — about log2(blocks) lookups per distinct match
// length instead of one per block — and then reads the holders of the
// block before each drop. For unchained input (blocks shared between
// unrelated chains) the results may differ from Match; use Match there.
func (x *Index) MatchChain(hashes []uint64) int {
	b0, ok := x.begin(hashes)
	if !ok {
		return 0
	}
	x.cuts = x.cuts[:0]
	x.bisect(hashes, 0, b0, int32(len(hashes)), block{})
	// Longest first: a holder of a later cut's block holds every earlier
	// one, so each instance takes the first (longest) length it appears at.
	for i := len(x.cuts) - 1; i >= 0; i-- {
		c := x.cuts[i]
		if c.b.first >= 0 {
			for n := c.b.first; n != none; n = x.nodes.at(n).same {
				if s := x.nodes.at(n).inst; x.lensAt[s] != x.lookup {
					x.end(s, int(c.pos))
				}
			}
			continue
		}
		for w, v := range x.hots[^c.b.first].bits {
			for v != 0 {
				t := bits.TrailingZeros64(v)
				v &= v - 1
				if s := int32(w<<6 + t); x.lensAt[s] != x.lookup {
					x.end(s, int(c.pos))
				}
			}
		}
	}
	return len(x.matched)
}

// bisect records, in chain order, the cuts between positions lo and hi,
// whose blocks are blo and bhi (bhi.n is 0 when hi is past the chain or
// not held). It is called only when blo has more holders than bhi.
func (x *Index) bisect(hashes []uint64, lo int32, blo block, hi int32, bhi block) {
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		bm := x.blocks[hashes[mid]] // zero (n 0) when not held
		if blo.n > bm.n {
			if bm.n > bhi.n {
				x.bisect(hashes, lo, blo, mid, bm)
				lo, blo = mid, bm
				continue
			}
			hi, bhi = mid, bm
			continue
		}
		lo, blo = mid, bm
	}
	x.cuts = append(x.cuts, cut{pos: hi, b: blo})
}
