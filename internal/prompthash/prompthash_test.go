package prompthash

import (
	"fmt"
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
