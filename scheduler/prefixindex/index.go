package prefixindex

import "sync/atomic"

const (
	none = -1
	// A block held by more than hotAt instances gets a holder bitset; it
	// loses it again at coldAt or fewer (hysteresis, so a block hovering at
	// the edge does not flap).
	hotAt  = 16
	coldAt = 8
	// Below this many active instances a lookup tracks them in a list, above
	// it in a bitset.
	sparseMax = 64
)

// node is one (block, instance) pair: a member of the instance's LRU list
// and, for a cold block, of the block's holder chain.
type node struct {
	hash       uint64
	inst       int32
	prev, next int32 // LRU: prev is toward the most recently used end
	same       int32 // next holder of the same block (cold blocks only)
}

// nodeStore holds the nodes in chunks of a fixed size, numbered in one
// sequence. A single slice doubled as the index grew: at a few million
// pairs appending one node copied tens of megabytes under the scheduler's
// lock, a pause of tens of milliseconds for whichever picks waited on it
// (make bench's overhead run, while a 256 KiB window filled the index).
// A chunk is allocated once and never moves.
type nodeStore struct {
	chunks [][]node
	n      int32
}

const (
	chunkBits = 13 // 8,192 nodes, 192 KiB a chunk
	chunkMask = 1<<chunkBits - 1
)

func (ns *nodeStore) at(i int32) *node { return &ns.chunks[i>>chunkBits][i&chunkMask] }

// grow adds a node at the end and returns its number.
func (ns *nodeStore) grow() int32 {
	if int(ns.n)>>chunkBits == len(ns.chunks) {
		ns.chunks = append(ns.chunks, make([]node, 1<<chunkBits))
	}
	ns.n++
	return ns.n - 1
}

// capacity is the nodes allocated, in use or free.
func (ns *nodeStore) capacity() int64 { return int64(len(ns.chunks)) << chunkBits }

// block is a map value. first ≥ 0 heads the holder chain of a cold block;
// first < 0 marks a hot block whose holders live in hots[^first].
type block struct {
	first int32
	n     int32
}

type hotBlock struct {
	bits  []uint64        // holder slots
	nodes map[int32]int32 // slot → node
}

type slot struct {
	id         string
	head, tail int32 // most and least recently used nodes
	n, cap     int32
	live       bool
}

// Index maps block hashes to the instances believed to hold them. It is not
// safe for concurrent use: the scheduler calls a policy, and so its index,
// serially. Only the exported statistics may be read concurrently.
type Index struct {
	blocks    map[uint64]block
	nodes     nodeStore
	freeNode  int32
	slots     []slot
	slotOf    map[string]int32
	freeSlots []int32
	hots      []hotBlock
	freeHots  []int32
	liveSlots int
	slotGen   uint64 // changes whenever an instance gains or loses its slot
	maxTotal  int
	total     int // nodes in use
	hotPairs  int // holders of hot blocks

	// lookup scratch, indexed by slot
	mark    uint32
	stamp   []uint32
	lens    []int32
	lensAt  []uint32
	lookup  uint32
	list    []int32
	list2   []int32
	dense   []uint64
	matched []int32
	cuts    []cut

	// statistics for metrics (written under serial use, read by scrapes)
	statNodes  atomic.Int64
	statBlocks atomic.Int64
	statBytes  atomic.Int64
}

// New returns an index holding at most maxTotal (block, instance) pairs in
// all; 0 means no global bound beyond the per-instance capacities.
func New(maxTotal int) *Index {
	return &Index{
		blocks:   map[uint64]block{},
		slotOf:   map[string]int32{},
		freeNode: none,
		maxTotal: maxTotal,
	}
}

// CapacityBlocks converts an instance's KV capacity (numGPUBlocks KV blocks
// of blockSize tokens) into hashed prompt blocks of blockChars characters at
// charsPerToken characters per token. Unknown capacity gives def.
func CapacityBlocks(numGPUBlocks, blockSize int64, charsPerToken float64, blockChars, def int) int {
	if numGPUBlocks <= 0 || blockSize <= 0 || charsPerToken <= 0 || blockChars <= 0 {
		return def
	}
	c := float64(numGPUBlocks) * float64(blockSize) * charsPerToken / float64(blockChars)
	if c < 1 {
		return 1
	}
	if c > 1<<30 {
		return 1 << 30
	}
	return int(c)
}

// Insert records that instance id now holds every block of hashes (a
// request's chain, in prompt order) and sets its capacity in blocks. Blocks
// are touched last to first, so the prefix is the most recently used part
// and the LRU evicts a chain's tail before its head, as engines do.
func (x *Index) Insert(id string, capacity int, hashes []uint64) {
	x.InsertBounded(id, capacity, hashes, len(hashes))
}

// InsertBounded is Insert for a chained request (internal/prompthash) that
// teaches the index at most maxNew blocks id does not hold yet: of hashes
// it inserts the leading blocks id already holds plus the next maxNew at
// most, and returns how many leading blocks id held before (held) and
// holds now (inserted). What it leaves out is the end of the chain, so
// what id holds stays a prefix of it, as MatchChain's bisection needs.
//
// Each new block costs a map insert, a node and usually an eviction, about
// 0.4 µs under the scheduler's lock: a pick of a long prompt nobody sent
// before (a 256 KiB window's 4,096 blocks) took milliseconds, and a stream
// of them held the lock for most of every second (docs/policies.md, "The
// hashed window, looked at again"). The caller credits the rest of the
// prompt on id as it credits a prompt's unhashed rest, and a prompt sent
// again to id gets maxNew more of its blocks in with each pick.
func (x *Index) InsertBounded(id string, capacity int, hashes []uint64, maxNew int) (held, inserted int) {
	s := x.slotFor(id)
	sl := &x.slots[s]
	if capacity < 1 {
		capacity = 1
	}
	sl.cap = int32(min(capacity, 1<<30))
	limit := x.limit(s)
	// The next turn of a conversation mostly repeats a prompt the instance
	// already holds, and holds in chain order as one run of its LRU list
	// (the last Insert put it there). Moving that run to the front at once
	// replaces a map lookup and a relink per block with a walk along the
	// list; the remaining blocks then go in right behind it. While the
	// request fits the capacity, evictions only take blocks older than all
	// of the request's, so the result is the block-by-block one's.
	first, last, r := x.run(s, hashes)
	held = r
	for held < len(hashes) && x.holds(s, hashes[held]) {
		held++
	}
	if maxNew = max(maxNew, 0); len(hashes)-held > maxNew {
		hashes = hashes[:held+maxNew]
	}
	anchor, spliced := int32(none), 0
	if r > 0 && len(hashes) <= int(limit) {
		x.lruSplice(s, first, last)
		anchor, spliced = last, r
	}
	for i := len(hashes) - 1; i >= spliced; i-- {
		x.touch(s, hashes[i], anchor)
		for x.slots[s].n > limit {
			x.evict(s)
		}
	}
	for x.slots[s].n > limit {
		x.evict(s)
	}
	x.updateStats()
	return held, len(hashes)
}

// holds reports whether s holds block h.
func (x *Index) holds(s int32, h uint64) bool {
	b, ok := x.blocks[h]
	return ok && x.find(b, s, h) != none
}

// run finds the longest prefix of hashes that s holds as consecutive
// entries of its LRU list, hashes[0] most recent: its first and last nodes
// and its length (0 when s does not hold hashes[0]).
func (x *Index) run(s int32, hashes []uint64) (first, last int32, n int) {
	if len(hashes) == 0 {
		return none, none, 0
	}
	b, ok := x.blocks[hashes[0]]
	if !ok {
		return none, none, 0
	}
	first = x.find(b, s, hashes[0])
	if first == none {
		return none, none, 0
	}
	last, n = first, 1
	for n < len(hashes) {
		nx := x.nodes.at(last).next
		if nx == none || x.nodes.at(nx).hash != hashes[n] {
			break
		}
		last = nx
		n++
	}
	return first, last, n
}

// limit is an instance's effective capacity: its own, bounded by a fair
// share of the global bound.
func (x *Index) limit(s int32) int32 {
	c := x.slots[s].cap
	if x.maxTotal > 0 && x.liveSlots > 0 {
		share := max(x.maxTotal/x.liveSlots, 1)
		c = min(c, int32(min(share, 1<<30)))
	}
	return c
}

// Remove forgets an instance and every block it held.
func (x *Index) Remove(id string) {
	s, ok := x.slotOf[id]
	if !ok {
		return
	}
	for x.slots[s].n > 0 {
		x.evict(s)
	}
	delete(x.slotOf, id)
	x.slots[s] = slot{head: none, tail: none}
	x.freeSlots = append(x.freeSlots, s)
	x.liveSlots--
	x.slotGen++
	x.updateStats()
}

// SlotGen changes whenever any instance gains or loses its slot, so a
// caller may cache Slot results while it stays the same.
func (x *Index) SlotGen() uint64 { return x.slotGen }

// Instances is the number of instances the index knows.
func (x *Index) Instances() int { return x.liveSlots }

// Held is the number of blocks the index believes instance id holds.
func (x *Index) Held(id string) int {
	if s, ok := x.slotOf[id]; ok {
		return int(x.slots[s].n)
	}
	return 0
}

func (x *Index) slotFor(id string) int32 {
	if s, ok := x.slotOf[id]; ok {
		return s
	}
	var s int32
	if n := len(x.freeSlots); n > 0 {
		s = x.freeSlots[n-1]
		x.freeSlots = x.freeSlots[:n-1]
	} else {
		s = int32(len(x.slots))
		x.slots = append(x.slots, slot{})
		x.stamp = append(x.stamp, 0)
		x.lens = append(x.lens, 0)
		x.lensAt = append(x.lensAt, 0)
	}
	x.slots[s] = slot{id: id, head: none, tail: none, live: true}
	x.slotOf[id] = s
	x.slotGen++
	x.liveSlots++
	return s
}

// touch makes (hash, s) the most recently used block of s after anchor (the
// most recently used of all when anchor is none), adding it if new.
func (x *Index) touch(s int32, h uint64, anchor int32) {
	b, ok := x.blocks[h]
	if ok {
		if n := x.find(b, s, h); n != none {
			if n != anchor { // a chain that repeats a hash may name the anchor again
				x.lruUnlink(s, n)
				x.lruInsert(s, n, anchor)
			}
			return
		}
	}
	n := x.allocNode(h, s)
	x.lruInsert(s, n, anchor)
	if !ok {
		x.blocks[h] = block{first: n, n: 1}
		return
	}
	if b.first >= 0 {
		x.nodes.at(n).same = b.first
		b.first = n
		b.n++
		if b.n > hotAt {
			b = x.promote(b)
		}
	} else {
		hb := &x.hots[^b.first]
		setBit(&hb.bits, s)
		hb.nodes[s] = n
		x.hotPairs++
		b.n++
	}
	x.blocks[h] = b
}

// find returns the node of (h, s) or none.
func (x *Index) find(b block, s int32, h uint64) int32 {
	if b.first < 0 {
		if n, ok := x.hots[^b.first].nodes[s]; ok {
			return n
		}
		return none
	}
	for n := b.first; n != none; n = x.nodes.at(n).same {
		if x.nodes.at(n).inst == s {
			return n
		}
	}
	return none
}

func (x *Index) promote(b block) block {
	var h int32
	if k := len(x.freeHots); k > 0 {
		h = x.freeHots[k-1]
		x.freeHots = x.freeHots[:k-1]
	} else {
		h = int32(len(x.hots))
		x.hots = append(x.hots, hotBlock{})
	}
	hb := hotBlock{nodes: make(map[int32]int32, b.n*2)}
	for n := b.first; n != none; {
		nx := x.nodes.at(n).same
		s := x.nodes.at(n).inst
		setBit(&hb.bits, s)
		hb.nodes[s] = n
		x.hotPairs++
		x.nodes.at(n).same = none
		n = nx
	}
	x.hots[h] = hb
	return block{first: ^h, n: b.n}
}

func (x *Index) demote(b block) block {
	h := ^b.first
	hb := x.hots[h]
	first := int32(none)
	for _, n := range hb.nodes {
		x.nodes.at(n).same = first
		first = n
	}
	x.hotPairs -= len(hb.nodes)
	x.hots[h] = hotBlock{}
	x.freeHots = append(x.freeHots, h)
	return block{first: first, n: b.n}
}

// evict drops the least recently used block of s.
func (x *Index) evict(s int32) {
	n := x.slots[s].tail
	if n == none {
		return
	}
	h := x.nodes.at(n).hash
	x.lruUnlink(s, n)
	b := x.blocks[h]
	b.n--
	if b.first < 0 {
		hb := &x.hots[^b.first]
		clearBit(hb.bits, s)
		delete(hb.nodes, s)
		x.hotPairs--
		if b.n <= coldAt {
			b = x.demote(b)
		}
	} else if b.first == n {
		b.first = x.nodes.at(n).same
	} else {
		p := b.first
		for x.nodes.at(p).same != n {
			p = x.nodes.at(p).same
		}
		x.nodes.at(p).same = x.nodes.at(n).same
	}
	if b.n == 0 {
		delete(x.blocks, h)
	} else {
		x.blocks[h] = b
	}
	x.freeNodeAt(n)
}

func (x *Index) allocNode(h uint64, s int32) int32 {
	var n int32
	if x.freeNode != none {
		n = x.freeNode
		x.freeNode = x.nodes.at(n).next
	} else {
		n = x.nodes.grow()
	}
	*x.nodes.at(n) = node{hash: h, inst: s, prev: none, next: none, same: none}
	x.slots[s].n++
	x.total++
	return n
}

func (x *Index) freeNodeAt(n int32) {
	s := x.nodes.at(n).inst
	x.slots[s].n--
	x.total--
	*x.nodes.at(n) = node{inst: none, prev: none, next: x.freeNode, same: none}
	x.freeNode = n
}

func (x *Index) lruPush(s, n int32) {
	sl := &x.slots[s]
	x.nodes.at(n).prev = none
	x.nodes.at(n).next = sl.head
	if sl.head != none {
		x.nodes.at(sl.head).prev = n
	}
	sl.head = n
	if sl.tail == none {
		sl.tail = n
	}
}

// lruInsert links n after anchor, or at the head when anchor is none.
func (x *Index) lruInsert(s, n, anchor int32) {
	if anchor == none {
		x.lruPush(s, n)
		return
	}
	nx := x.nodes.at(anchor).next
	x.nodes.at(n).prev, x.nodes.at(n).next = anchor, nx
	x.nodes.at(anchor).next = n
	if nx != none {
		x.nodes.at(nx).prev = n
	} else {
		x.slots[s].tail = n
	}
}

// lruSplice moves the segment first..last (first the more recent) of s's
// list to its head.
func (x *Index) lruSplice(s, first, last int32) {
	sl := &x.slots[s]
	if sl.head == first {
		return
	}
	p, nx := x.nodes.at(first).prev, x.nodes.at(last).next
	x.nodes.at(p).next = nx // p exists: first is not the head
	if nx != none {
		x.nodes.at(nx).prev = p
	} else {
		sl.tail = p
	}
	x.nodes.at(first).prev = none
	x.nodes.at(last).next = sl.head
	x.nodes.at(sl.head).prev = last
	sl.head = first
}

func (x *Index) lruUnlink(s, n int32) {
	sl := &x.slots[s]
	nd := x.nodes.at(n)
	if nd.prev != none {
		x.nodes.at(nd.prev).next = nd.next
	} else {
		sl.head = nd.next
	}
	if nd.next != none {
		x.nodes.at(nd.next).prev = nd.prev
	} else {
		sl.tail = nd.prev
	}
	nd.prev, nd.next = none, none
}

func setBit(bs *[]uint64, s int32) {
	w := int(s) >> 6
	for len(*bs) <= w {
		*bs = append(*bs, 0)
	}
	(*bs)[w] |= 1 << (uint(s) & 63)
}

func clearBit(bs []uint64, s int32) {
	if w := int(s) >> 6; w < len(bs) {
		bs[w] &^= 1 << (uint(s) & 63)
	}
}

// nodeBytes and mapEntryBytes estimate memory for the exported gauge: a node
// is 24 bytes; a map entry is a 16-byte slot plus a control byte at Go's
// average swiss-table load.
const (
	nodeBytes     = 24
	mapEntryBytes = 26
	// A hot block's holder is also a map[int32]int32 entry; the block has
	// a bitset and a map header.
	hotPairBytes  = 12
	hotBlockBytes = 192
)

func (x *Index) updateStats() {
	x.statNodes.Store(int64(x.total))
	x.statBlocks.Store(int64(len(x.blocks)))
	bytes := x.nodes.capacity()*nodeBytes + int64(len(x.blocks))*mapEntryBytes +
		int64(cap(x.slots))*64 + int64(x.hotPairs)*hotPairBytes + int64(len(x.hots))*hotBlockBytes
	x.statBytes.Store(bytes)
}

// Pairs is the number of (block, instance) pairs held; safe to call concurrently.
func (x *Index) Pairs() int64 { return x.statNodes.Load() }

// Blocks is the number of distinct blocks held; safe to call concurrently.
func (x *Index) Blocks() int64 { return x.statBlocks.Load() }

// Bytes estimates the index's memory; safe to call concurrently.
func (x *Index) Bytes() int64 { return x.statBytes.Load() }
