package engine

// kvCache is vLLM's block pool: ref-counted blocks, a hash → block map for
// blocks that hold a full, hashed block of some prompt, and a free queue in
// LRU order. A freed block keeps its hash until it is reallocated, so a later
// request can take it back out of the free queue (a prefix hit); allocation
// takes the least recently freed block and drops its hash (eviction).
//
// The free queue is an intrusive doubly linked list over block ids, so every
// operation is O(1) and allocation-free.
type kvCache struct {
	blockSize int
	ref       []int32
	hash      []uint64
	hashed    []bool
	// prev/next link the free queue; index n is the sentinel.
	prev, next []int32
	numFree    int
	cached     map[uint64]int32
	// scratch holds the hit blocks found by lookup for admit.
	scratch []int32
}

func newKVCache(numBlocks, blockSize int) *kvCache {
	kv := &kvCache{
		blockSize: blockSize,
		ref:       make([]int32, numBlocks),
		hash:      make([]uint64, numBlocks),
		hashed:    make([]bool, numBlocks),
		prev:      make([]int32, numBlocks+1),
		next:      make([]int32, numBlocks+1),
		cached:    make(map[uint64]int32),
	}
	s := int32(numBlocks)
	kv.prev[s], kv.next[s] = s, s
	for b := int32(0); b < s; b++ {
		kv.pushTail(b)
	}
	return kv
}

func (kv *kvCache) pushTail(b int32) {
	s := int32(len(kv.ref))
	last := kv.prev[s]
	kv.next[last], kv.prev[b] = b, last
	kv.next[b], kv.prev[s] = s, b
	kv.numFree++
}

func (kv *kvCache) remove(b int32) {
	p, n := kv.prev[b], kv.next[b]
	kv.next[p], kv.prev[n] = n, p
	kv.numFree--
}

// popHead takes the least recently freed block, evicting its cached hash.
func (kv *kvCache) popHead() int32 {
	b := kv.next[len(kv.ref)]
	kv.remove(b)
	if kv.hashed[b] {
		delete(kv.cached, kv.hash[b])
		kv.hashed[b] = false
	}
	return b
}

// lookup finds the longest cached prefix of hashes (at most maxBlocks blocks)
// without changing anything, leaving the blocks in kv.scratch. It returns the
// hit count and how many of the hit blocks sit in the free queue (a hit on
// them takes them out of it, so they count against the free blocks).
func (kv *kvCache) lookup(hashes []uint64, maxBlocks int) (hits, hitsFree int) {
	kv.scratch = kv.scratch[:0]
	if len(hashes) < maxBlocks {
		maxBlocks = len(hashes)
	}
	for i := 0; i < maxBlocks; i++ {
		b, ok := kv.cached[hashes[i]]
		if !ok {
			break
		}
		kv.scratch = append(kv.scratch, b)
		if kv.ref[b] == 0 {
			hitsFree++
		}
	}
	return len(kv.scratch), hitsFree
}

// admit gives s the hit blocks left in kv.scratch by lookup plus enough new
// blocks for tokens, or changes nothing and returns false when the free
// blocks do not suffice.
func (kv *kvCache) admit(s *seq, hitsFree, tokens int) bool {
	hits := len(kv.scratch)
	fresh := kv.blocksFor(tokens) - hits
	if fresh < 0 {
		fresh = 0
	}
	if fresh+hitsFree > kv.numFree {
		return false
	}
	// Take the hits first so that allocating fresh blocks cannot evict them.
	for _, b := range kv.scratch {
		if kv.ref[b] == 0 {
			kv.remove(b)
		}
		kv.ref[b]++
		s.blocks = append(s.blocks, b)
	}
	for i := 0; i < fresh; i++ {
		b := kv.popHead()
		kv.ref[b] = 1
		s.blocks = append(s.blocks, b)
	}
	return true
}

// grow gives s enough blocks for tokens, or returns false.
func (kv *kvCache) grow(s *seq, tokens int) bool {
	need := kv.blocksFor(tokens) - len(s.blocks)
	if need <= 0 {
		return true
	}
	if need > kv.numFree {
		return false
	}
	for i := 0; i < need; i++ {
		b := kv.popHead()
		kv.ref[b] = 1
		s.blocks = append(s.blocks, b)
	}
	return true
}

// commit registers the blocks of s that became full and have a hash, so later
// requests can hit them. A block whose hash is already cached elsewhere stays
// unhashed, as in vLLM.
func (kv *kvCache) commit(s *seq) {
	limit := s.computed / kv.blockSize
	if limit > len(s.hashes) {
		limit = len(s.hashes)
	}
	for j := s.committed; j < limit; j++ {
		b := s.blocks[j]
		h := s.hashes[j]
		if kv.hashed[b] {
			continue
		}
		if _, dup := kv.cached[h]; dup {
			continue
		}
		kv.hash[b], kv.hashed[b] = h, true
		kv.cached[h] = b
	}
	if limit > s.committed {
		s.committed = limit
	}
}

// release frees the blocks of s, last block first, so that a prompt's tail is
// evicted before its head (vLLM frees in reverse order for the same reason).
func (kv *kvCache) release(s *seq) {
	for i := len(s.blocks) - 1; i >= 0; i-- {
		b := s.blocks[i]
		kv.ref[b]--
		if kv.ref[b] == 0 {
			kv.pushTail(b)
		}
	}
	s.blocks = s.blocks[:0]
	s.committed = 0
}

func (kv *kvCache) blocksFor(tokens int) int {
	return (tokens + kv.blockSize - 1) / kv.blockSize
}

func (kv *kvCache) usedBlocks() int { return len(kv.ref) - kv.numFree }

// probe is lookup without side effects: the hit count of the longest cached
// prefix of hashes, at most maxBlocks blocks.
func (kv *kvCache) probe(hashes []uint64, maxBlocks int) int {
	maxBlocks = min(maxBlocks, len(hashes))
	for i := 0; i < maxBlocks; i++ {
		if _, ok := kv.cached[hashes[i]]; !ok {
			return i
		}
	}
	return maxBlocks
}

// flush forgets every cached hash (the blocks themselves stay allocated to
// whoever holds them): what vLLM's /reset_prefix_cache does.
func (kv *kvCache) flush() {
	for b := range kv.hashed {
		kv.hashed[b] = false
	}
	clear(kv.cached)
}
