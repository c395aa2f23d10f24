package extproc

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// BufferPool is the gRPC buffer pool the ext_proc server runs with (and the
// Envoy stand-in of the overhead benchmark, for the same reason). gRPC's
// default pool clears every buffer it hands out and serves everything from
// 32 KiB to 1 MiB from its 1 MiB tier: each buffered 256 KiB body cost a
// 1 MiB clear when the frames were joined into one message, about as much
// CPU as parsing the body. gRPC writes every byte of a pooled buffer before
// reading it (frames are read into it, messages copied or marshalled into
// it), so this pool skips the clearing, and its tiers are every power of two
// so a message takes at most twice its size.
func BufferPool() mem.BufferPool { return sharedPool }

var sharedPool = newBufferPool()

const (
	minPoolShift = 8  // 256 B; smaller buffers are allocated
	maxPoolShift = 24 // 16 MiB; larger ones too (and left to the GC)
)

type bufferPool struct {
	tiers [maxPoolShift + 1]sync.Pool
}

func newBufferPool() *bufferPool { return &bufferPool{} }

// tier is the smallest power of two holding size, at least minPoolShift.
func tier(size int) int {
	if size <= 1<<minPoolShift {
		return minPoolShift
	}
	return bits.Len(uint(size - 1))
}

func (p *bufferPool) Get(size int) *[]byte {
	t := tier(size)
	if t > maxPoolShift {
		b := make([]byte, size)
		return &b
	}
	if b, ok := p.tiers[t].Get().(*[]byte); ok {
		*b = (*b)[:size]
		return b
	}
	b := make([]byte, size, 1<<t)
	return &b
}

// Put keeps buffers this pool made (their capacity is a tier's size) and
// drops anything else.
func (p *bufferPool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minPoolShift || c > 1<<maxPoolShift || c&(c-1) != 0 {
		return
	}
	p.tiers[bits.Len(uint(c))-1].Put(b)
}
