package leasttoken

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

func newPolicy(t *testing.T) (*Policy, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	p, err := policy.New(Name, policy.Deps{Config: config.Default(), Clock: clk, Rand: rand.New(rand.NewPCG(5, 5))})
	if err != nil {
		t.Fatal(err)
	}
	return p.(*Policy), clk
}

func fleet(n int) []*policy.Instance {
	out := make([]*policy.Instance, n)
	for i := range out {
		out[i] = &policy.Instance{ID: fmt.Sprint(i)}
	}
	return out
}

func TestFewestTokensFirst(t *testing.T) {
	p, _ := newPolicy(t)
	c := fleet(3)
	c[0].InflightPromptTokens = 5000
	// One long generation on c[1] weighs more than two short ones on c[2].
	p.Picked(&policy.Request{ID: "long", MaxTokens: 0}, policy.Decision{Ranked: c[1:2]})
	p.Picked(&policy.Request{ID: "s1", MaxTokens: 10}, policy.Decision{Ranked: c[2:3]})
	p.Picked(&policy.Request{ID: "s2", MaxTokens: 10}, policy.Decision{Ranked: c[2:3]})
	d := p.Pick(&policy.Request{}, c)
	if d.Ranked[0] != c[2] || d.Ranked[1] != c[1] || d.Ranked[2] != c[0] {
		t.Fatalf("order %s %s %s, want 2 1 0", d.Ranked[0].ID, d.Ranked[1].ID, d.Ranked[2].ID)
	}
	p.Completed("long", "1", 0, 300)
	if got := p.Tokens(c[1]); got != 0 {
		t.Fatalf("after completion instance 1 still has %v tokens", got)
	}
}

func TestOutputEstimateLearnsWithoutMaxTokens(t *testing.T) {
	p, _ := newPolicy(t)
	for i := range 300 {
		p.Completed(fmt.Sprint(i), "0", 100, 40)
	}
	if got := p.ExpectedOutput(&policy.Request{}); got < 39 || got > 45 {
		t.Fatalf("expected output %v after outputs of 40", got)
	}
	if got := p.ExpectedOutput(&policy.Request{MaxTokens: 5}); got != 5 {
		t.Fatalf("max_tokens 5 gave %v", got)
	}
}

func TestUnknownRequestsCount(t *testing.T) {
	p, _ := newPolicy(t)
	c := fleet(2)
	c[0].Running = 4 // engine-reported work the policy never picked
	for range 20 {
		if p.Pick(&policy.Request{}, c).Ranked[0] != c[1] {
			t.Fatal("an instance running unknown requests looked idle")
		}
	}
}

func TestExpiryAndRemoval(t *testing.T) {
	p, clk := newPolicy(t)
	c := fleet(2)
	p.Picked(&policy.Request{ID: "lost"}, policy.Decision{Ranked: c[:1]})
	clk.t = clk.t.Add(11 * time.Minute) // past inflight_timeout
	p.Pick(&policy.Request{}, c)
	if p.Tokens(c[0]) != 0 || len(p.byReq) != 0 {
		t.Fatal("a pick never reported was not released after inflight_timeout")
	}
	p.Picked(&policy.Request{ID: "x"}, policy.Decision{Ranked: c[1:]})
	p.Removed("1")
	if p.Tokens(c[1]) != 0 {
		t.Fatal("removed instance kept its account")
	}
	p.Completed("x", "1", 1, 1) // completion after removal is harmless
	if d := p.Pick(&policy.Request{}, nil); len(d.Ranked) != 0 {
		t.Fatal("ranked something out of nothing")
	}
}

func TestTiesRandom(t *testing.T) {
	p, _ := newPolicy(t)
	c := fleet(4)
	first := map[*policy.Instance]int{}
	for range 4000 {
		first[p.Pick(&policy.Request{}, c).Ranked[0]]++
	}
	for _, x := range c {
		if first[x] < 800 || first[x] > 1200 {
			t.Fatalf("ties not shared: %v", first)
		}
	}
}
