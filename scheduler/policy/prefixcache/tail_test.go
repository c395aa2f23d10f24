package prefixcache

import (
	"slices"
	"testing"

	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// tiered is a request whose first head hashes are blocks and the rest tail
// hashes of 16 blocks each (the gateway's defaults: 64-character blocks,
// 1 KiB tail blocks).
func tiered(id string, hs []uint64, head int) *policy.Request {
	r := req(id, hs)
	r.HeadBlocks, r.BlocksPerTail = head, 16
	r.PromptTokens = int64(r.Blocks(len(hs)) * 16)
	return r
}

// TestTailHashesCountAsTheirBlocks: what an instance holds of a tiered
// prompt is counted in blocks, a tail hash as the 16 it covers.
func TestTailHashesCountAsTheirBlocks(t *testing.T) {
	p := newPolicy(t, nil)
	cands := fleet(3)
	head, tail := chain(1, 64), chain(2, 8)
	turn1 := append(slices.Clone(head), tail...)
	r1 := tiered("t1", turn1, 64)
	d := p.Pick(r1, cands)
	p.Picked(r1, d)
	home := d.Ranked[0]
	turn2 := append(slices.Clone(turn1), chain(3, 2)...)
	p.Pick(tiered("t2", turn2, 64), cands)
	// 64 head blocks and 8 tail hashes of 16, and the answer that followed
	// turn 1 there (16 blocks at the default 256-token estimate).
	if got := p.match[indexOf(cands, home)]; got != 64+8*16+16 {
		t.Fatalf("home holds %d blocks of the next turn, want 64 + 8×16 + 16 of the answer", got)
	}
}

// TestTailTellsConversationsApart: two conversations under one system
// prompt longer than the fine window differ only past it. Their tail
// hashes keep each on the instance holding its history; with the head
// alone the two homes look the same.
func TestTailTellsConversationsApart(t *testing.T) {
	p := newPolicy(t, nil)
	cands := fleet(4)
	sys := chain(1, 64)
	a := append(slices.Clone(sys), chain(2, 6)...)
	b := append(slices.Clone(sys), chain(3, 6)...)
	ha, hb := cands[1], cands[2]
	p.Picked(tiered("a1", a, 64), policy.Decision{Ranked: []*policy.Instance{ha}})
	p.Picked(tiered("b1", b, 64), policy.Decision{Ranked: []*policy.Instance{hb}})
	for i := range 20 {
		if got := p.Pick(tiered("a2", append(slices.Clone(a), chain(uint64(10+i), 1)...), 64), cands).Ranked[0]; got != ha {
			t.Fatalf("conversation a's next turn went to %s, not its home %s", got.ID, ha.ID)
		}
		if got := p.Pick(tiered("b2", append(slices.Clone(b), chain(uint64(40+i), 1)...), 64), cands).Ranked[0]; got != hb {
			t.Fatalf("conversation b's next turn went to %s, not its home %s", got.ID, hb.ID)
		}
	}
}
