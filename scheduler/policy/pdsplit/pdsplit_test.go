package pdsplit

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/leasttoken"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/prefixcache"
)

func build(t *testing.T, name string, mut func(*config.Config)) *Split {
	t.Helper()
	c := config.Default()
	c.Scheduler.Policy = name
	if mut != nil {
		mut(&c)
	}
	p, err := policy.New(name, policy.Deps{Config: c, Rand: rand.New(rand.NewPCG(9, 9))})
	if err != nil {
		t.Fatal(err)
	}
	return p.(*Split)
}

func inst(id string, role policy.Role) *policy.Instance {
	return &policy.Instance{ID: id, Role: role}
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

func req(id string, blocks int) *policy.Request {
	return &policy.Request{ID: id, BlockHashes: chain(uint64(len(id)+blocks), blocks), BlockChars: 64, PromptTokens: int64(blocks * 16)}
}

func TestPDSplitRespectsRoles(t *testing.T) {
	s := build(t, Name, nil)
	p1, p2 := inst("p1", policy.RolePrefill), inst("p2", policy.RolePrefill)
	d1, d2 := inst("d1", policy.RoleDecode), inst("d2", policy.RoleDecode)
	cands := []*policy.Instance{p1, d1, p2, d2}
	seenPre := map[string]bool{}
	for i := range 200 {
		d := s.Pick(req(fmt.Sprint(i), 8), cands)
		if d.Prefill == nil || d.Prefill.Role != policy.RolePrefill {
			t.Fatalf("prefill instance %v, want a prefill-role one", d.Prefill)
		}
		if len(d.Ranked) != 2 {
			t.Fatalf("ranked %d, want the 2 decode instances", len(d.Ranked))
		}
		for _, r := range d.Ranked {
			if r.Role != policy.RoleDecode {
				t.Fatalf("%s ranked as a decode instance", r.ID)
			}
		}
		seenPre[d.Prefill.ID] = true
	}
	if len(seenPre) != 2 {
		t.Fatalf("prefill ties not shared: %v", seenPre)
	}
}

func TestPDSplitDegradedPools(t *testing.T) {
	s := build(t, Name, nil)
	d1, b1 := inst("d1", policy.RoleDecode), inst("b1", policy.RoleBoth)
	// No prefill-capable instance but the destination: no disaggregation.
	if d := s.Pick(req("a", 4), []*policy.Instance{d1}); d.Prefill != nil || d.Ranked[0] != d1 {
		t.Fatal("a lone decode instance should serve the request itself")
	}
	if d := s.Pick(req("a", 4), []*policy.Instance{b1}); d.Prefill != nil || d.Ranked[0] != b1 {
		t.Fatal("a lone both-role instance should not prefill for itself remotely")
	}
	p1 := inst("p1", policy.RolePrefill)
	if d := s.Pick(req("a", 4), []*policy.Instance{p1}); len(d.Ranked) != 1 || d.Ranked[0] != p1 {
		t.Fatal("with only a prefill instance left it must still get the request")
	}
	if d := s.Pick(req("a", 4), nil); len(d.Ranked) != 0 || d.Prefill != nil {
		t.Fatal("ranked something out of nothing")
	}
}

func TestPDSplitTeachesPrefillPolicyAndForwardsRemoval(t *testing.T) {
	s := build(t, Name, nil) // prefill_policy prefix-cache
	p1, p2, d1 := inst("p1", policy.RolePrefill), inst("p2", policy.RolePrefill), inst("d1", policy.RoleDecode)
	cands := []*policy.Instance{p1, p2, d1}
	r := req("conv", 64)
	d := s.Pick(r, cands)
	s.Picked(r, d)
	home := d.Prefill
	for range 20 {
		if got := s.Pick(r, cands).Prefill; got != home {
			t.Fatalf("prefill went to %s, not to %s which holds the prompt", got.ID, home.ID)
		}
	}
	s.Removed(home.ID)
	other := p1
	if home == p1 {
		other = p2
	}
	if got := s.Pick(r, []*policy.Instance{other, d1}).Prefill; got != other {
		t.Fatal("after the home left, its peer should prefill")
	}
	s.Completed("conv", "d1", 1024, 10)
}

func TestDynamicDecidesPerRequest(t *testing.T) {
	s := build(t, DynamicName, func(c *config.Config) {
		c.Scheduler.Policies.PDMinPrefillTokens = 512
		c.Scheduler.Policies.PDDecodeBusyLoad = 4
	})
	p1, d1 := inst("p1", policy.RolePrefill), inst("d1", policy.RoleDecode)
	cands := []*policy.Instance{p1, d1}
	long := req("long", 64) // 1,024 tokens
	if d := s.Pick(long, cands); d.Prefill != nil {
		t.Fatal("disaggregated while the decode instance is idle")
	}
	d1.Running = 6
	if d := s.Pick(req("short", 8), cands); d.Prefill != nil {
		t.Fatal("disaggregated a short prompt")
	}
	d := s.Pick(long, cands)
	if d.Prefill != p1 || d.Ranked[0] != d1 {
		t.Fatal("a long uncached prompt on a busy decode instance was not sent through the prefill instance")
	}
	s.Picked(long, d)
	// The destination now holds the prompt: its next turn is cached.
	next := &policy.Request{ID: "next", BlockHashes: append(append([]uint64{}, long.BlockHashes...), chain(77, 4)...), BlockChars: 64, PromptTokens: 68 * 16}
	if d := s.Pick(next, cands); d.Prefill != nil {
		t.Fatal("disaggregated a prompt the decode instance already holds")
	}
}

func TestDynamicBalancesBothRole(t *testing.T) {
	s := build(t, DynamicName, func(c *config.Config) { c.Scheduler.DecodePolicy = "least-token" })
	b1, b2 := inst("b1", policy.RoleBoth), inst("b2", policy.RoleBoth)
	b1.Running, b1.InflightPromptTokens = 8, 100
	b2.Running, b2.InflightPromptTokens = 1, 9000
	d := s.Pick(req("long", 64), []*policy.Instance{b1, b2})
	// b1 is busy decoding but has few tokens in flight, so least-token
	// makes it the destination; being busy, it hands the long prefill to
	// the other both-role instance instead of stalling its decodes.
	if d.Ranked[0] != b1 || d.Prefill != b2 {
		t.Fatalf("destination %v prefill %v, want b1 and b2", d.Ranked[0].ID, d.Prefill)
	}
	b1.Running = 2 // not busy: it prefills for itself
	if d := s.Pick(req("long", 64), []*policy.Instance{b1, b2}); d.Ranked[0] != b1 || d.Prefill != nil {
		t.Fatal("an idle both-role destination should prefill locally")
	}
}

func TestRejectsRecursiveSubPolicy(t *testing.T) {
	c := config.Default()
	c.Scheduler.PrefillPolicy = "pd-split"
	if _, err := policy.New(Name, policy.Deps{Config: c}); err == nil {
		t.Fatal("pd-split accepted itself as its prefill policy")
	}
}
