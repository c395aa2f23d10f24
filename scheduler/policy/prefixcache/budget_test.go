package prefixcache

import (
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// TestLongPromptIsTaughtWithinTheBudget: a pick teaches the index at most
// insertBudget blocks its instance did not hold; the rest of the prompt is
// credited as held, so the next turn of the conversation is priced on its
// home exactly as when every block went in, later picks teach the index the
// rest, and what the index holds stays a prefix of the chain.
func TestLongPromptIsTaughtWithinTheBudget(t *testing.T) {
	p := newPolicy(t, nil)
	cands := fleet(3)
	const n = 2000 // blocks; a 256 KiB window holds 4,096
	turn := chain(41, n)
	r := req("t1", turn)
	d := p.Pick(r, cands)
	p.Picked(r, d)
	home := d.Ranked[0]
	if got := p.idx.Held(home.ID); got != insertBudget {
		t.Fatalf("a pick of %d new blocks taught the index %d, want the budget %d", n, got, insertBudget)
	}
	taught := insertBudget
	answer := int(p.avgOut / 16) // blocks of a typical answer, as heldTail credits it
	for i := 0; taught < len(turn); i++ {
		if i == 40 {
			t.Fatalf("after 40 turns the index holds %d of %d blocks: repeated prompts must get in whole", taught, len(turn))
		}
		// The next turn: the last prompt, its answer, a new question.
		turn = append(append(slices.Clone(turn), chain(uint64(100+i), answer)...), chain(uint64(200+i), 6)...)
		r := req("next", turn)
		d := p.Pick(r, cands)
		for j, c := range cands {
			want := int32(0)
			if c == home {
				want = int32(len(turn) - 6) // every block of the last prompt and its answer
			}
			if p.match[j] != want {
				t.Fatalf("turn %d: %s credited with %d blocks, want %d", i+2, c.ID, p.match[j], want)
			}
		}
		if d.Ranked[0] != home {
			t.Fatalf("turn %d went to %s, not its home %s", i+2, d.Ranked[0].ID, home.ID)
		}
		p.Picked(r, d)
		taught = min(taught+insertBudget, len(turn))
		// The chain invariant: the index holds exactly the first blocks.
		if got := p.idx.Held(home.ID); got != taught {
			t.Fatalf("turn %d: the index holds %d blocks of home, want %d", i+2, got, taught)
		}
		if p.idx.MatchChain(turn) != 1 || p.idx.Matched(p.idx.Slot(home.ID)) != taught {
			t.Fatalf("turn %d: home matches %d blocks of the prompt, want its first %d", i+2, p.idx.Matched(p.idx.Slot(home.ID)), taught)
		}
	}
}

// TestAnotherPromptIsCreditedOnlyWhatItShares: a prompt that shares the
// start of a long prompt the index was taught only part of is credited on
// that prompt's home as far as it shares it (to within tailMarks), never
// the other prompt's whole length, and not at all on an instance that
// merely holds the same taught start.
func TestAnotherPromptIsCreditedOnlyWhatItShares(t *testing.T) {
	p := newPolicy(t, nil)
	cands := fleet(3)
	const n, shared = 3000, 2000
	a := chain(51, n)
	r := req("a", a)
	d := p.Pick(r, cands)
	p.Picked(r, d)
	home := d.Ranked[0]
	other := otherThan(cands, home)
	// other holds the taught start of a, as part of a prompt that goes on
	// elsewhere (so no answer of its own is credited there either).
	x := append(slices.Clone(a[:insertBudget]), chain(53, 10)...)
	p.Picked(req("x", x), policy.Decision{Ranked: []*policy.Instance{other}})
	b := append(slices.Clone(a[:shared]), chain(52, 500)...)
	p.Pick(req("b", b), cands)
	lo := shared - (n-insertBudget)/tailMarks
	for j, c := range cands {
		switch got := int(p.match[j]); {
		case c == home && (got < lo || got > shared):
			t.Fatalf("home credited with %d blocks of a prompt sharing its first %d with a's %d, want %d to %d", got, shared, n, lo, shared)
		case c == other && got != insertBudget:
			t.Fatalf("%s credited with %d blocks, want the %d it was sent", c.ID, got, insertBudget)
		}
	}
}

// TestHitAndMissBlocksCountTheCredit: the block counters count a long
// prompt's untaught blocks as hits on the home that holds them.
func TestHitAndMissBlocksCountTheCredit(t *testing.T) {
	p := newPolicy(t, nil)
	cands := fleet(2)
	turn := chain(61, 1500)
	r := req("a", turn)
	p.Picked(r, p.Pick(r, cands))
	next := append(slices.Clone(turn), chain(62, 10)...)
	r = req("b", next)
	p.Picked(r, p.Pick(r, cands))
	hit, miss := counted(t, p.hitBlocks), counted(t, p.missBlocks)
	if hit != 1500+10 || miss != 1500 {
		t.Fatalf("hit %v miss %v blocks, want 1,510 hits (the first prompt and the answer credited) and 1,500 misses", hit, miss)
	}
}

func counted(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestHoldCountsTheUntaughtBlocks: a saturated home holding a long prompt
// the index was taught only the start of is worth waiting for when an
// unsaturated instance holds that start alone (Hold), as Pick would see.
func TestHoldCountsTheUntaughtBlocks(t *testing.T) {
	p := newPolicy(t, nil)
	home, other := &policy.Instance{ID: "home"}, &policy.Instance{ID: "other"}
	cands := []*policy.Instance{home, other}
	a := chain(71, 3*insertBudget)
	p.Picked(req("a", a), policy.Decision{Ranked: []*policy.Instance{home}})
	x := append(slices.Clone(a[:insertBudget]), chain(72, 10)...)
	p.Picked(req("x", x), policy.Decision{Ranked: []*policy.Instance{other}})
	if p.idx.Held("home") != insertBudget || p.idx.Held("other") != insertBudget {
		t.Fatalf("the index holds %d and %d blocks, want the budget on both: the test proves nothing", p.idx.Held("home"), p.idx.Held("other"))
	}
	next := req("next", append(slices.Clone(a), chain(73, 6)...))
	home.Saturated = true
	if !p.Hold(next, cands, 0) {
		t.Fatalf("not held, though the saturated home holds %d blocks more than the other", 2*insertBudget)
	}
	if p.Hold(next, cands, time.Hour) {
		t.Fatal("held past the prefill it saves")
	}
}
