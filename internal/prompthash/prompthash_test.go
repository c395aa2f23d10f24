package prompthash

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestSharedPrefixSharesHashes(t *testing.T) {
	seed := Seed("llama", "")
	turn1 := RenderChat([]Message{{"system", strings.Repeat("s", 200)}, {"user", "hello there"}})
	turn2 := RenderChat([]Message{{"system", strings.Repeat("s", 200)}, {"user", "hello there"}, {"assistant", strings.Repeat("a", 100)}})
	a := Blocks(nil, seed, turn1, 16, 0)
	b := Blocks(nil, seed, turn2, 16, 0)
	if len(a) != len(turn1)/16 || len(b) != len(turn2)/16 {
		t.Fatalf("want one hash per full block: got %d for %d bytes, %d for %d", len(a), len(turn1), len(b), len(turn2))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("block %d differs although the prefix is shared", i)
		}
	}
	if b[len(a)] == 0 {
		t.Fatal("zero hash")
	}
}

func TestChainDependsOnEverythingBefore(t *testing.T) {
	seed := Seed("m", "")
	x := Blocks(nil, seed, "aaaaBBBBcccc", 4, 0)
	y := Blocks(nil, seed, "zaaaBBBBcccc", 4, 0)
	for i := range x {
		if x[i] == y[i] {
			t.Fatalf("block %d equal although block 0 differs", i)
		}
	}
}

func TestSeedSeparatesModelsAndSalts(t *testing.T) {
	text := strings.Repeat("x", 64)
	a := Blocks(nil, Seed("m1", ""), text, 16, 0)
	b := Blocks(nil, Seed("m2", ""), text, 16, 0)
	c := Blocks(nil, Seed("m1", "tenant"), text, 16, 0)
	if a[0] == b[0] || a[0] == c[0] {
		t.Fatal("different models or salts share a block hash")
	}
}

func TestBoundedByMaxChars(t *testing.T) {
	got := Blocks(nil, 1, strings.Repeat("y", 10_000), 64, 1000)
	if len(got) != 1000/64 {
		t.Fatalf("got %d blocks, want %d", len(got), 1000/64)
	}
}

// TestTiered: the head is Blocks' chain, the tail continues it in coarse
// blocks, a longer prompt extends a shorter one's hashes, and a change in
// the tail changes its block and every later one but nothing before.
func TestTiered(t *testing.T) {
	seed := Seed("m", "")
	text := strings.Repeat("abcdefgh", 1000) // 8,000 bytes
	got, head := Tiered(nil, seed, text, 16, 1000, 256, 6000)
	if want := Blocks(nil, seed, text, 16, 1000); head != len(want) || !slices.Equal(got[:head], want) {
		t.Fatalf("head: %d hashes, want Blocks' %d", head, len(want))
	}
	// The head ends at 992 (62 blocks of 16); tail blocks of 256 through 6,000.
	if head != 62 || len(got) != 62+(6000-992)/256 {
		t.Fatalf("%d head and %d tail hashes, want 62 and %d", head, len(got)-head, (6000-992)/256)
	}
	short, sh := Tiered(nil, seed, text[:3000], 16, 1000, 256, 6000)
	if sh != head || !slices.Equal(short, got[:len(short)]) || len(short) != 62+(3000-992)/256 {
		t.Fatalf("a shorter prompt's %d hashes are not the start of the longer one's", len(short))
	}
	edited := []byte(text)
	edited[992+256*3+5] = 'X' // inside tail block 3
	e, _ := Tiered(nil, seed, string(edited), 16, 1000, 256, 6000)
	for i := range got {
		if (i < head+3) != (e[i] == got[i]) {
			t.Fatalf("hash %d: equal = %v after an edit in tail block 3", i, e[i] == got[i])
		}
	}
	if h, n := Tiered(nil, seed, text, 16, 1000, 0, 6000); n != 62 || len(h) != 62 {
		t.Fatalf("no tail block size: %d hashes, %d head; want the head alone", len(h), n)
	}
	if h, n := Tiered(nil, seed, text[:990], 16, 1000, 256, 6000); n != 61 || len(h) != 61 {
		t.Fatalf("a prompt shorter than the head: %d hashes, %d head; want 61 head blocks only", len(h), n)
	}
}

func TestEstimateTokens(t *testing.T) {
	if got := EstimateTokens(400, 4); got != 100 {
		t.Fatalf("EstimateTokens(400, 4) = %d", got)
	}
	if got := EstimateTokens(400, 0); got != 100 {
		t.Fatalf("default chars per token: got %d", got)
	}
}

func BenchmarkBlocks(b *testing.B) {
	for _, size := range []int{4 << 10, 256 << 10} {
		text := strings.Repeat("lorem ipsum ", size/12+1)[:size]
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			dst := make([]uint64, 0, 2048)
			b.SetBytes(int64(min(size, 65536)))
			for b.Loop() {
				dst = Blocks(dst[:0], 7, text, 64, 65536)
			}
		})
	}
}

// BenchmarkTiered hashes as the gateway does at its defaults: 64-character
// blocks to 64 KiB, 4 KiB blocks to 1 MiB.
func BenchmarkTiered(b *testing.B) {
	for _, size := range []int{4 << 10, 256 << 10, 1 << 20} {
		text := strings.Repeat("lorem ipsum ", size/12+1)[:size]
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			dst := make([]uint64, 0, 2048)
			b.SetBytes(int64(size))
			for b.Loop() {
				dst, _ = Tiered(dst[:0], 7, text, 64, 65536, 4096, 1<<20)
			}
		})
	}
}
