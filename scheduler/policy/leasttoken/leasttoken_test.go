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

func newPolicy(t testing.TB) (*Policy, *fakeClock) {
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

// pickOn records n picks of the given max_tokens on inst, IDs prefix0...
func pickOn(p *Policy, inst *policy.Instance, prefix string, n int, maxTokens int64) {
	for i := range n {
		p.Picked(&policy.Request{ID: fmt.Sprint(prefix, i), MaxTokens: maxTokens}, policy.Decision{Ranked: []*policy.Instance{inst}})
	}
}

func TestOutputCountsDown(t *testing.T) {
	// Four picks expecting 256 tokens each (the default mean) or their
	// max_tokens, weighed some time after they were picked.
	for _, tc := range []struct {
		name      string
		maxTokens int64
		running   int64
		genTPS    float64
		age       time.Duration
		want      float64
	}{
		{"no rate reported: no count-down", 0, 4, 0, 20 * time.Second, 4 * 256},
		{"just picked", 0, 4, 160, 0, 4 * 256},
		{"partway: 10 tok/s each for 10 s", 0, 4, 40, 10 * time.Second, 4 * (256 - 100)},
		{"rate shared by the running batch", 0, 8, 80, 10 * time.Second, 4*(256-100) + 4*256/2}, // 4 unknown at half
		{"no batch reported counts as one", 0, 0, 10, 10 * time.Second, 4 * (256 - 100)},
		{"past expectation: held at the floor", 0, 4, 160, 20 * time.Second, 4 * 256 / 8},
		{"long past expectation: still the floor", 0, 4, 160, 9 * time.Minute, 4 * 256 / 8},
		{"max_tokens caps expectation and floor", 16, 4, 40, 10 * time.Second, 4 * 2},
		{"floor at least one token", 4, 4, 40, 10 * time.Second, 4 * 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, clk := newPolicy(t)
			c := fleet(1)[0]
			c.Running, c.GenTPS = tc.running, tc.genTPS
			pickOn(p, c, "r", 4, tc.maxTokens)
			clk.t = clk.t.Add(tc.age)
			if got := p.Tokens(c); got != tc.want {
				t.Fatalf("tokens in flight %v, want %v", got, tc.want)
			}
		})
	}
}

func TestOldPicksRankAheadOfFresh(t *testing.T) {
	for _, tc := range []struct {
		name   string
		genTPS float64
		tie    bool
	}{
		{"generation rate reported", 320, false},
		{"no generation rate: a tie", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, clk := newPolicy(t)
			c := fleet(2)
			for _, x := range c {
				x.Running, x.GenTPS = 8, tc.genTPS
			}
			pickOn(p, c[0], "old", 8, 0)
			clk.t = clk.t.Add(5 * time.Second) // 40 tok/s each: 200 of 256 done
			pickOn(p, c[1], "new", 8, 0)
			old, fresh := p.Tokens(c[0]), p.Tokens(c[1])
			if tc.tie != (old == fresh) || old > fresh {
				t.Fatalf("old picks weigh %v, fresh %v", old, fresh)
			}
			first := map[*policy.Instance]int{}
			for range 400 {
				first[p.Pick(&policy.Request{}, c).Ranked[0]]++
			}
			if tc.tie && (first[c[0]] < 100 || first[c[1]] < 100) {
				t.Fatalf("a tie was not broken both ways: old first %d, fresh first %d", first[c[0]], first[c[1]])
			}
			if !tc.tie && first[c[0]] != 400 {
				t.Fatalf("fresh picks ranked first %d of 400 times", first[c[1]])
			}
		})
	}
}

func TestOverduePickDoesNotHideOthers(t *testing.T) {
	p, clk := newPolicy(t)
	c := fleet(1)[0]
	c.Running, c.GenTPS = 5, 200 // 40 tok/s each
	pickOn(p, c, "long", 1, 0)
	clk.t = clk.t.Add(100 * time.Second) // 4,000 tokens generated of 256 expected
	pickOn(p, c, "fresh", 4, 0)
	if got, want := p.Tokens(c), float64(4*256+256/8); got != want {
		t.Fatalf("tokens in flight %v, want fresh picks whole plus the long one's floor (%v)", got, want)
	}
}

func TestYoungerOverduePickBehindOlderOne(t *testing.T) {
	// An older pick still counting down keeps a younger one past its
	// expectation in the linear sum: the estimate may understate, but never
	// below the floors, and is exact once the older one settles.
	p, clk := newPolicy(t)
	c := fleet(1)[0]
	c.Running, c.GenTPS = 2, 20 // 10 tok/s each
	pickOn(p, c, "big", 1, 0)
	clk.t = clk.t.Add(time.Second)
	pickOn(p, c, "small", 1, 16)
	clk.t = clk.t.Add(4 * time.Second)
	trueLeft := float64((256 - 50) + 2)
	if got := p.Tokens(c); got < 32+2 || got > trueLeft {
		t.Fatalf("tokens in flight %v, want between the floors (34) and the true %v", got, trueLeft)
	}
	clk.t = clk.t.Add(25 * time.Second)
	if got := p.Tokens(c); got != 32+2 {
		t.Fatalf("tokens in flight %v once both are overdue, want their floors 34", got)
	}
}

// checkAccounts recomputes every account from the ledger and compares the
// aggregates exactly.
func checkAccounts(t *testing.T, p *Policy, seen map[*account]bool) {
	t.Helper()
	want := map[*account]*account{}
	for el := p.order.Front(); el != nil; el = el.Next() {
		e := el.Value.(*entry)
		w := want[e.acct]
		if w == nil {
			w = &account{}
			want[e.acct] = w
		}
		w.n++
		if e.settled {
			w.settledFloor += e.floor
			continue
		}
		w.cn++
		w.out += e.out
		w.floor += e.floor
		w.atMs += e.atMs
	}
	for _, a := range p.byInst {
		seen[a] = true
	}
	for a := range seen {
		w := want[a]
		if w == nil {
			w = &account{}
		}
		got := [6]int64{a.n, a.cn, a.out, a.floor, a.atMs, a.settledFloor}
		exp := [6]int64{w.n, w.cn, w.out, w.floor, w.atMs, w.settledFloor}
		if got != exp {
			t.Fatalf("account n,cn,out,floor,at,settled = %v, ledger says %v", got, exp)
		}
		if (a.cn == 0) != (a.head == nil && a.tail == nil) {
			t.Fatalf("account counts %d picks but its list head=%v tail=%v", a.cn, a.head, a.tail)
		}
	}
}

func TestAggregatesHaveNoDrift(t *testing.T) {
	p, clk := newPolicy(t)
	c := fleet(3)
	for i, x := range c {
		x.Running, x.GenTPS = int64(4+i), float64(100*i) // instance 0 reports no rate
	}
	r := rand.New(rand.NewPCG(3, 3))
	seen := map[*account]bool{}
	var live []string
	for step := range 3000 {
		clk.t = clk.t.Add(time.Duration(r.IntN(200)) * time.Millisecond)
		id := fmt.Sprint("r", step)
		p.Picked(&policy.Request{ID: id, MaxTokens: int64(r.IntN(600))}, policy.Decision{Ranked: c[r.IntN(3):][:1]})
		live = append(live, id)
		if step%7 == 0 {
			p.Pick(&policy.Request{}, c) // settles overdue picks, expires lost ones
		}
		if k := r.IntN(len(live)); r.IntN(2) == 0 {
			p.Completed(live[k], "", 10, int64(r.IntN(500)))
			live = append(live[:k], live[k+1:]...)
		}
		if step == 1500 { // instance 2 leaves and returns; its old picks complete later
			p.Removed(c[2].ID)
		}
		checkAccounts(t, p, seen)
	}
	for _, id := range live[:len(live)/2] {
		p.Completed(id, "", 10, 100)
	}
	checkAccounts(t, p, seen)
	clk.t = clk.t.Add(11 * time.Minute) // the rest were lost: expire them
	p.Pick(&policy.Request{}, c)
	checkAccounts(t, p, seen)
	// Emptied accounts stay until their instance is removed; each must be
	// exactly zero (checkAccounts compared them with the empty ledger).
	if len(p.byReq) != 0 || p.order.Len() != 0 || len(p.byInst) > len(c) {
		t.Fatalf("left behind: %d accounts for %d instances, %d requests, %d ledger entries", len(p.byInst), len(c), len(p.byReq), p.order.Len())
	}
	for id, a := range p.byInst {
		if *a != (account{}) {
			t.Fatalf("%s's account is not empty: %+v", id, *a)
		}
	}
	if len(seen) < 4 {
		t.Fatalf("only %d accounts seen; the removal should have made a fourth", len(seen))
	}
	for _, x := range c {
		if got := p.Tokens(x); got != float64(x.Running)*p.avgOut/2 {
			t.Fatalf("instance %s weighs %v with nothing of ours in flight", x.ID, got)
		}
	}
}

func TestRemovedInstanceReturns(t *testing.T) {
	p, _ := newPolicy(t)
	c := fleet(1)[0]
	pickOn(p, c, "before", 1, 0)
	p.Removed(c.ID)
	pickOn(p, c, "after", 1, 100)
	p.Completed("before0", c.ID, 10, 256)
	if got := p.Tokens(c); got != 100 {
		t.Fatalf("returned instance weighs %v, want its one new pick (100)", got)
	}
}

// TestCachedAccountsFollowNewAndRemovedAccounts: Pick caches each
// candidate's account by position; an account made by Picked, or dropped by
// Removed, must show in the very next Pick.
func TestCachedAccountsFollowNewAndRemovedAccounts(t *testing.T) {
	for trial := range 20 {
		// A different tie-breaking seed each trial: a stale "no account"
		// would tie the two and lose half the trials.
		pp, err := policy.New(Name, policy.Deps{Config: config.Default(), Clock: &fakeClock{t: time.Unix(1000, 0)}, Rand: rand.New(rand.NewPCG(uint64(trial), 9))})
		if err != nil {
			t.Fatal(err)
		}
		p, c := pp.(*Policy), fleet(2)
		p.Pick(&policy.Request{}, c) // caches "no account" for both
		p.Picked(&policy.Request{ID: "r", MaxTokens: 500}, policy.Decision{Ranked: c[:1]})
		if d := p.Pick(&policy.Request{}, c); d.Ranked[0] != c[1] {
			t.Fatalf("trial %d: %s carries a pick's output yet ranked first", trial, c[0].ID)
		}
		p.Picked(&policy.Request{ID: "s", MaxTokens: 100}, policy.Decision{Ranked: c[1:]})
		if d := p.Pick(&policy.Request{}, c); d.Ranked[0] != c[1] {
			t.Fatalf("trial %d: %s carries more output yet ranked first", trial, c[0].ID)
		}
		p.Removed(c[0].ID) // forgets its picks: it is the emptier one now
		if d := p.Pick(&policy.Request{}, c); d.Ranked[0] != c[0] {
			t.Fatalf("trial %d: after Removed(%s), %s ranked first", trial, c[0].ID, d.Ranked[0].ID)
		}
	}
}
