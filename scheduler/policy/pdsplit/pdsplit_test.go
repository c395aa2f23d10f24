package pdsplit

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/leasttoken"
	"github.com/llmrouter/llmrouter/scheduler/policy/prefixcache"
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

// dynamicParams gives dynamic-pd-split's thresholds the way a
// configuration still may, under their deprecated keys.
func dynamicParams(c *config.Config, minTokens, busyLoad int) {
	c.Scheduler.ParamDefaults = append(c.Scheduler.ParamDefaults,
		config.ParamDefault{Key: "llm_scheduler.policies.pd_min_prefill_tokens", PluginParam: config.PolicyKeys["pd_min_prefill_tokens"], Value: minTokens},
		config.ParamDefault{Key: "llm_scheduler.policies.pd_decode_busy_load", PluginParam: config.PolicyKeys["pd_decode_busy_load"], Value: busyLoad})
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
		dynamicParams(c, 512, 4)
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
	if !s.own || s.idx == nil {
		t.Fatal("with decode_policy least-token dynamic-pd-split must keep its own index")
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
	// Each decision was counted under its reason, once.
	for _, l := range []string{DecisionDecodeIdle, DecisionShortPrompt, DecisionDisaggregated, DecisionCached} {
		var m dto.Metric
		if err := s.decisions.WithLabelValues(DynamicName, l).Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
			t.Fatalf("decisions{%s} = %v (%v), want 1", l, m.GetCounter().GetValue(), err)
		}
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

// buildIsolated builds name with a registry and sub-policies that each get
// their own tie-break source of seed (1, 2) and the clock clk, so a
// sub-policy can be replayed alone with the same random draws.
func buildIsolated(t *testing.T, name string, clk policy.Clock, reg prometheus.Registerer, mut func(*config.Config)) *Split {
	t.Helper()
	c := config.Default()
	c.Scheduler.Policy = name
	if mut != nil {
		mut(&c)
	}
	sub := func(n string) (policy.Policy, error) {
		return policy.New(n, policy.Deps{Config: c, Clock: clk, Rand: rand.New(rand.NewPCG(1, 2)), Metrics: reg})
	}
	p, err := policy.New(name, policy.Deps{Config: c, Clock: clk, Rand: rand.New(rand.NewPCG(9, 9)), Metrics: reg, Build: sub})
	if err != nil {
		t.Fatal(err)
	}
	return p.(*Split)
}

type clock struct{ t time.Time }

func (c *clock) Now() time.Time { return c.t }

// gauge reads an unlabelled gauge from reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("%s not registered", name)
	return 0
}

func TestDynamicSharesDecodePrefixCacheIndex(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := buildIsolated(t, DynamicName, &clock{t: time.Unix(1000, 0)}, reg, func(c *config.Config) {
		c.Scheduler.DecodePolicy = "prefix-cache"
		dynamicParams(c, 512, 4)
	})
	dec, pre := s.decode.(*prefixcache.Policy), s.prefill.(*prefixcache.Policy)
	if s.own || s.idx != dec.Index() {
		t.Fatal("dynamic-pd-split keeps an index of its own although the decode policy's is there to read")
	}
	p1, d1, d2 := inst("p1", policy.RolePrefill), inst("d1", policy.RoleDecode), inst("d2", policy.RoleDecode)
	d1.Running, d2.Running = 6, 6
	only := func(d *policy.Instance) []*policy.Instance { return []*policy.Instance{p1, d} }

	long := req("long", 64) // 1,024 tokens
	d := s.Pick(long, only(d1))
	if d.Prefill != p1 || d.Ranked[0] != d1 {
		t.Fatal("a long uncached prompt on a busy decode instance was not sent through the prefill instance")
	}
	s.Picked(long, d)
	if dec.Index().Held("d1") != 64 || dec.Index().Held("p1") != 0 {
		t.Fatalf("decode index holds d1 %d p1 %d blocks, want 64 and 0", dec.Index().Held("d1"), dec.Index().Held("p1"))
	}
	// Only the sub-policies' indexes are counted: the decode one holds the
	// destination's 64 blocks, the prefill one the prefill instance's; an
	// index of dynamic-pd-split's own would add both again.
	if got, want := gauge(t, reg, "llmrouter_prefix_index_pairs"), float64(dec.Index().Pairs()+pre.Index().Pairs()); got != want || want != 128 {
		t.Fatalf("llmrouter_prefix_index_pairs = %v, want %v = 128 (decode + prefill index only)", got, want)
	}

	next := &policy.Request{ID: "next", BlockHashes: append(append([]uint64{}, long.BlockHashes...), chain(77, 4)...), BlockChars: 64, PromptTokens: 68 * 16}
	if d := s.Pick(next, only(d1)); d.Prefill != nil || d.Ranked[0] != d1 {
		t.Fatal("disaggregated a prompt the decode instance already holds")
	}
	// The same prompt on a destination that does not hold it, and another
	// long prompt on the one that does, are uncached there.
	if d := s.Pick(next, only(d2)); d.Prefill != p1 {
		t.Fatal("a prompt cached on another decode instance counted as cached on the destination")
	}
	if d := s.Pick(req("other", 64), only(d1)); d.Prefill != p1 {
		t.Fatal("an unrelated long prompt counted as cached")
	}
	// Forgotten with the decode policy's index when the destination leaves.
	s.Removed("d1")
	if d := s.Pick(next, only(d1)); d.Prefill != p1 {
		t.Fatal("a removed instance's blocks still count as cached")
	}
}

func TestDynamicOwnIndexWithLeastToken(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := buildIsolated(t, DynamicName, &clock{t: time.Unix(1000, 0)}, reg, func(c *config.Config) {
		c.Scheduler.DecodePolicy = "least-token"
	})
	if !s.own || s.idx == nil {
		t.Fatal("least-token keeps no index: dynamic-pd-split must keep its own")
	}
	p1, d1 := inst("p1", policy.RolePrefill), inst("d1", policy.RoleDecode)
	d1.Running = 6
	long := req("long", 64)
	d := s.Pick(long, []*policy.Instance{p1, d1})
	if d.Prefill != p1 {
		t.Fatal("a long uncached prompt on a busy decode instance was not disaggregated")
	}
	s.Picked(long, d)
	// The own index learns both the destination and the prefill instance.
	if s.idx.Held("d1") != 64 || s.idx.Held("p1") != 64 {
		t.Fatalf("own index holds d1 %d p1 %d blocks, want 64 each", s.idx.Held("d1"), s.idx.Held("p1"))
	}
	pre := s.prefill.(*prefixcache.Policy)
	if got, want := gauge(t, reg, "llmrouter_prefix_index_pairs"), float64(s.idx.Pairs()+pre.Index().Pairs()); got != want || want != 192 {
		t.Fatalf("llmrouter_prefix_index_pairs = %v, want %v = 192 (own + prefill index)", got, want)
	}
	if d := s.Pick(long, []*policy.Instance{p1, d1}); d.Prefill != nil {
		t.Fatal("disaggregated a prompt the own index says the destination holds")
	}
	s.Removed("d1")
	if s.idx.Held("d1") != 0 {
		t.Fatal("own index kept a removed instance")
	}
}

// TestDynamicSharedIndexKeepsDecodeDecisions: reading the decode policy's
// index between its Pick and its Picked must not change what it decides or
// learns. dynamic-pd-split (checking every request) and prefix-cache run
// alone, both with the same random draws and clock, see the same sequence
// of conversations and must rank alike and end with equal indexes.
func TestDynamicSharedIndexKeepsDecodeDecisions(t *testing.T) {
	clk := &clock{t: time.Unix(1000, 0)}
	cfg := func(c *config.Config) {
		c.Scheduler.DecodePolicy = "prefix-cache"
		dynamicParams(c, 256, 0) // every request is checked
	}
	s := buildIsolated(t, DynamicName, clk, nil, cfg)
	c := config.Default()
	cfg(&c)
	alone, err := prefixcache.New(policy.Deps{Config: c, Clock: clk, Rand: rand.New(rand.NewPCG(1, 2))}, prefixcache.DefaultParams(c))
	if err != nil {
		t.Fatal(err)
	}
	var cands []*policy.Instance
	for i := range 8 {
		role := []policy.Role{policy.RolePrefill, policy.RoleDecode, policy.RoleBoth}[i%3]
		cands = append(cands, &policy.Instance{ID: fmt.Sprint("i", i), Role: role, NumGPUBlocks: 400, BlockSize: 16})
	}
	var decCands []*policy.Instance
	for _, c := range cands {
		if c.Role != policy.RolePrefill {
			decCands = append(decCands, c)
		}
	}
	convs := make([][]uint64, 24)
	r := rand.New(rand.NewPCG(3, 4))
	var split, local int
	for i := range 600 {
		clk.t = clk.t.Add(20 * time.Millisecond)
		for j, c := range cands {
			c.Running = int64((i + j*3) % 7)
			c.Waiting = int64((i * j) % 3)
		}
		k := r.IntN(len(convs))
		// A conversation's next turn extends its previous prompt.
		convs[k] = append(convs[k], chain(uint64(i*131+k), 4+r.IntN(24))...)
		q := &policy.Request{ID: fmt.Sprint(i), BlockHashes: slices.Clone(convs[k]), BlockChars: 64, PromptTokens: int64(len(convs[k]) * 16)}

		d := s.Pick(q, cands)
		want := alone.Pick(q, decCands)
		if !slices.Equal(ids(d.Ranked), ids(want.Ranked)) {
			t.Fatalf("request %d: dynamic-pd-split ranked %v, prefix-cache alone %v", i, ids(d.Ranked), ids(want.Ranked))
		}
		s.Picked(q, d)
		alone.Picked(q, policy.Decision{Ranked: want.Ranked})
		switch {
		case d.Prefill != nil:
			split++
		case q.PromptTokens >= 256: // long but cached on the destination
			local++
		}
		if i%50 == 0 {
			s.Completed(q.ID, d.Ranked[0].ID, q.PromptTokens, int64(100+i%300))
			alone.Completed(q.ID, d.Ranked[0].ID, q.PromptTokens, int64(100+i%300))
		}
	}
	// Both kinds of decision happened for long prompts, so the shared index
	// was read and found prompts both cached and not.
	t.Logf("disaggregated %d, long kept local %d", split, local)
	if split == 0 || local == 0 {
		t.Fatalf("disaggregated %d, long kept local %d: the sequence did not exercise the check", split, local)
	}
	shared := s.decode.(*prefixcache.Policy).Index()
	for _, c := range cands {
		if a, b := shared.Held(c.ID), alone.Index().Held(c.ID); a != b {
			t.Fatalf("%s: shared index holds %d blocks, prefix-cache alone %d", c.ID, a, b)
		}
	}
	if shared.Pairs() != alone.Index().Pairs() || shared.Blocks() != alone.Index().Blocks() {
		t.Fatalf("indexes differ: %d/%d pairs, %d/%d blocks", shared.Pairs(), alone.Index().Pairs(), shared.Blocks(), alone.Index().Blocks())
	}
}

func ids(xs []*policy.Instance) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = x.ID
	}
	return out
}
