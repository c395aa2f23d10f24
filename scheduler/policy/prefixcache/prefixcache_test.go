package prefixcache

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

func newPolicy(t testing.TB, log *zap.Logger) *Policy {
	t.Helper()
	p, err := New(policy.Deps{Config: config.Default(), Rand: rand.New(rand.NewPCG(1, 2)), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func fleet(n int) []*policy.Instance {
	out := make([]*policy.Instance, n)
	for i := range out {
		out[i] = &policy.Instance{ID: fmt.Sprintf("i%d", i), Address: fmt.Sprintf("10.0.0.%d:8000", i)}
	}
	return out
}

func chain(seed uint64, n int) []uint64 {
	out := make([]uint64, n)
	h := seed
	for i := range out {
		h = h*0x9E3779B97F4A7C15 + uint64(i) + 1
		out[i] = h
	}
	return out
}

func req(id string, hs []uint64) *policy.Request {
	return &policy.Request{ID: id, BlockHashes: hs, BlockChars: 64, PromptTokens: int64(len(hs) * 16)}
}

func TestTiesAreRandom(t *testing.T) {
	p := newPolicy(t, nil)
	cands := fleet(4)
	first := map[string]int{}
	for i := range 4000 {
		first[p.Pick(req(fmt.Sprint(i), chain(uint64(i), 4)), cands).Ranked[0].ID]++
	}
	for _, c := range cands {
		if f := first[c.ID]; f < 800 || f > 1200 {
			t.Fatalf("equal instances led %v of 4000 picks; want about 1000 each", first)
		}
	}
}

func TestPrefersInstanceHoldingPrefix(t *testing.T) {
	p := newPolicy(t, nil)
	cands := fleet(4)
	hs := chain(1, 64) // 1,024 prompt tokens
	r := req("a", hs)
	d := p.Pick(r, cands)
	home := d.Ranked[0]
	p.Picked(r, d)
	next := req("b", append(append([]uint64{}, hs...), chain(2, 4)...))
	for range 50 {
		if got := p.Pick(next, cands).Ranked[0]; got != home {
			t.Fatalf("picked %s, want the prefix's home %s", got.ID, home.ID)
		}
	}
	// A busier home still wins while its queue costs less than the prefill
	// it saves, and loses once its backlog costs more.
	for _, c := range cands {
		c.Running = 4
	}
	home.Running = 6
	if got := p.Pick(next, cands).Ranked[0]; got != home {
		t.Fatalf("home with 2 more running requests lost to %s", got.ID)
	}
	home.Running, home.Waiting = 4, 4
	if got := p.Pick(next, cands).Ranked[0]; got == home {
		t.Fatal("home with 4 waiting requests still picked; its queue costs more than the prefill saved")
	}
}

func TestHotPrefixSpillsAndIndexLearnsNewHome(t *testing.T) {
	p := newPolicy(t, nil)
	cands := fleet(3)
	hs := chain(9, 40)
	r := req("a", hs)
	d := p.Pick(r, cands)
	p.Picked(r, d)
	home := d.Ranked[0]
	// The home is saturated: the scheduler leaves it out of the candidates.
	var rest []*policy.Instance
	for _, c := range cands {
		if c != home {
			rest = append(rest, c)
		}
	}
	r2 := req("b", hs)
	d2 := p.Pick(r2, rest)
	second := d2.Ranked[0]
	if second == home {
		t.Fatal("saturated home picked although not a candidate")
	}
	p.Picked(r2, d2)
	p.idx.Match(hs)
	if got := p.idx.Matched(p.idx.Slot(second.ID)); got != len(hs) {
		t.Fatalf("the index holds %d of %d blocks on the new home", got, len(hs))
	}
	// Both homes now hold it: the prefix stays between them.
	for range 50 {
		if got := p.Pick(req("c", hs), cands).Ranked[0]; got != home && got != second {
			t.Fatalf("picked %s, which holds none of the prefix", got.ID)
		}
	}
}

func TestLoadCapSpillsHotPrefix(t *testing.T) {
	p := newPolicy(t, nil)
	cands := fleet(4)
	hs := chain(3, 200) // a long prompt: the cache saves a lot
	r := req("a", hs)
	d := p.Pick(r, cands)
	p.Picked(r, d)
	home := d.Ranked[0]
	for _, c := range cands {
		c.Running = 1
	}
	home.Running = 3 // (3+1) > 2 × mean (6+1)/4: over the cap
	got := p.Pick(req("b", hs), cands)
	if got.Ranked[0] == home {
		t.Fatal("the home over twice the mean load was still picked first")
	}
	if got.Ranked[len(got.Ranked)-1] != home {
		t.Fatal("the overloaded home is not ranked last")
	}
}

func TestInstanceRemovedBetweenPicks(t *testing.T) {
	p := newPolicy(t, nil)
	cands := fleet(3)
	hs := chain(4, 30)
	r := req("a", hs)
	d := p.Pick(r, cands)
	p.Picked(r, d)
	gone := d.Ranked[0]
	p.Removed(gone.ID)
	if p.idx.Held(gone.ID) != 0 {
		t.Fatal("removed instance still holds blocks")
	}
	// The scheduler's candidate slice may still carry it for this decision.
	d2 := p.Pick(req("b", hs), cands)
	if len(d2.Ranked) != 3 {
		t.Fatalf("ranked %d of 3", len(d2.Ranked))
	}
	p.Picked(req("b", hs), policy.Decision{Ranked: []*policy.Instance{cands[(indexOf(cands, gone)+1)%3]}})
	// A new instance under a reused slot does not inherit anything.
	newcomer := &policy.Instance{ID: "new"}
	p.Picked(req("c", chain(5, 3)), policy.Decision{Ranked: []*policy.Instance{newcomer}})
	p.idx.Match(hs)
	if p.idx.Matched(p.idx.Slot("new")) != 0 {
		t.Fatal("a new instance inherited a removed one's blocks")
	}
}

func indexOf(xs []*policy.Instance, x *policy.Instance) int {
	for i, y := range xs {
		if y == x {
			return i
		}
	}
	return -1
}

func TestEmptyCandidatesAndRequest(t *testing.T) {
	p := newPolicy(t, nil)
	if d := p.Pick(req("a", nil), nil); len(d.Ranked) != 0 {
		t.Fatal("ranked something out of nothing")
	}
	c := fleet(1)
	d := p.Pick(&policy.Request{ID: "x"}, c) // no hashes, no token estimate
	if len(d.Ranked) != 1 || d.Ranked[0] != c[0] {
		t.Fatal("a single candidate was not picked")
	}
	p.Picked(&policy.Request{ID: "x"}, d)
	p.Picked(req("y", chain(1, 2)), policy.Decision{})
	p.Completed("x", "i0", 10, 20)
	p.Removed("unknown")
}

func TestDebugLineExplainsDecision(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	p := newPolicy(t, zap.New(core))
	cands := fleet(3)
	p.Pick(req("r1", chain(1, 8)), cands)
	if logs.Len() != 1 {
		t.Fatalf("%d log lines, want 1", logs.Len())
	}
	e := logs.All()[0]
	costs, ok := e.ContextMap()["costs"].([]any)
	if !ok || len(costs) != 3 {
		t.Fatalf("costs field %#v, want one entry per candidate", e.ContextMap()["costs"])
	}
	for _, c := range costs {
		m := c.(map[string]any)
		if _, ok := m["cost_ms"]; !ok || !strings.HasPrefix(m["id"].(string), "i") {
			t.Fatalf("entry %v lacks id or cost", m)
		}
	}
	// At info level nothing is built or written.
	core2, logs2 := observer.New(zapcore.InfoLevel)
	p2 := newPolicy(t, zap.New(core2))
	p2.Pick(req("r1", chain(1, 8)), cands)
	if logs2.Len() != 0 {
		t.Fatal("decision logged at info level")
	}
}

func TestOutputEstimateFollowsCompletions(t *testing.T) {
	p := newPolicy(t, nil)
	for range 200 {
		p.Completed("r", "i0", 100, 1000)
	}
	if p.avgOut < 900 {
		t.Fatalf("output estimate %v after 200 outputs of 1000 tokens", p.avgOut)
	}
	in := p.inputs(&policy.Request{MaxTokens: 50})
	if in.out != 50 {
		t.Fatalf("expected output %v tokens, want max_tokens 50 to bound it", in.out)
	}
}
