package affinity

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/leastrequest"
	"github.com/llmrouter/llmrouter/scheduler/policy/prefixcache"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time { return c.t }

func wrapped(t *testing.T, name string, mut func(*config.Affinity)) (*Wrapper, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Unix(0, 0)}
	c := config.Default()
	if mut != nil {
		mut(&c.Scheduler.Affinity)
	}
	p, err := New(name, policy.Deps{Config: c, Clock: clk, Rand: rand.New(rand.NewPCG(4, 4))})
	if err != nil {
		t.Fatal(err)
	}
	return p.(*Wrapper), clk
}

func fleet(n int) []*policy.Instance {
	out := make([]*policy.Instance, n)
	for i := range out {
		out[i] = &policy.Instance{ID: fmt.Sprint(i)}
	}
	return out
}

func pickAndCommit(w *Wrapper, r *policy.Request, c []*policy.Instance) *policy.Instance {
	d := w.Pick(r, c)
	w.Picked(r, d)
	return d.Ranked[0]
}

func TestSessionStaysWhileCandidate(t *testing.T) {
	w, _ := wrapped(t, "least-request", nil)
	c := fleet(4)
	r := &policy.Request{SessionKey: "alice"}
	home := pickAndCommit(w, r, c)
	home.Running = 5 // busier than the rest, but not saturated
	for range 30 {
		if got := pickAndCommit(w, r, c); got != home {
			t.Fatalf("session moved from %s to %s", home.ID, got.ID)
		}
	}
	// Saturated: the scheduler leaves it out, the session moves and stays.
	var rest []*policy.Instance
	for _, x := range c {
		if x != home {
			rest = append(rest, x)
		}
	}
	moved := pickAndCommit(w, r, rest)
	if got := pickAndCommit(w, r, c); got != moved {
		t.Fatalf("after moving to %s the session went to %s", moved.ID, got.ID)
	}
	// Without a key, least-request decides.
	if got := w.Pick(&policy.Request{}, c).Ranked[0]; got == home {
		t.Fatal("a request without a session went to the busy instance")
	}
}

func TestSessionExpiryBoundAndRemoval(t *testing.T) {
	w, clk := wrapped(t, "least-request", func(p *config.Affinity) {
		p.SessionTTL = time.Minute
		p.SessionMax = 3
	})
	c := fleet(3)
	for i := range 5 {
		pickAndCommit(w, &policy.Request{SessionKey: fmt.Sprint(i)}, c)
	}
	if w.Sessions() != 3 {
		t.Fatalf("%d sessions kept, bound is 3", w.Sessions())
	}
	if _, ok := w.sessions.get("0"); ok {
		t.Fatal("the oldest session survived the bound")
	}
	clk.t = clk.t.Add(2 * time.Minute)
	if _, ok := w.sessions.get("4"); ok {
		t.Fatal("a session outlived its ttl")
	}
	pickAndCommit(w, &policy.Request{SessionKey: "x"}, c[:1])
	w.Removed("0")
	if _, ok := w.sessions.get("x"); ok {
		t.Fatal("a session kept pointing at a removed instance")
	}
}

func TestLoRAPreferred(t *testing.T) {
	w, _ := wrapped(t, "least-request", nil)
	c := fleet(3)
	c[2].LoRAs = []string{"sql-adapter"}
	c[2].Running = 3
	for range 20 {
		d := w.Pick(&policy.Request{LoRA: "sql-adapter"}, c)
		if d.Ranked[0] != c[2] || len(d.Ranked) != 3 {
			t.Fatal("the instance with the adapter was not preferred")
		}
	}
	// Nobody has it: the inner order stands.
	if got := w.Pick(&policy.Request{LoRA: "other"}, c).Ranked[0]; got == c[2] {
		t.Fatal("an unknown adapter changed the ranking")
	}
	// A session on an instance without the adapter yields to one with it.
	r := &policy.Request{SessionKey: "s", LoRA: "sql-adapter"}
	w.Picked(r, policy.Decision{Ranked: []*policy.Instance{c[0]}})
	if got := w.Pick(r, c).Ranked[0]; got != c[2] {
		t.Fatal("session without the adapter beat the instance holding it")
	}
}

func TestForwardsToInnerObserver(t *testing.T) {
	w, _ := wrapped(t, prefixcache.Name, nil)
	inner := w.Inner().(*prefixcache.Policy)
	c := fleet(2)
	r := &policy.Request{ID: "r", BlockHashes: []uint64{1, 2, 3}, BlockChars: 64}
	home := pickAndCommit(w, r, c)
	if inner.Index().Held(home.ID) != 3 {
		t.Fatal("Picked did not reach the inner policy")
	}
	w.Removed(home.ID)
	if inner.Index().Held(home.ID) != 0 {
		t.Fatal("Removed did not reach the inner policy")
	}
	w.Completed("r", "1", 1, 1)
}

func TestOffReturnsInner(t *testing.T) {
	c := config.Default()
	c.Scheduler.Affinity.Session = false
	c.Scheduler.Affinity.LoRA = false
	p, err := New("least-request", policy.Deps{Config: c})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.(*Wrapper); ok {
		t.Fatal("wrapped although both affinities are off")
	}
	w, _ := wrapped(t, "least-request", nil)
	if d := w.Pick(&policy.Request{SessionKey: "a"}, nil); len(d.Ranked) != 0 {
		t.Fatal("ranked something out of nothing")
	}
}

// TestSessionMapBoundedInBytes: whatever keys a caller passes, the session
// map evicts least recently used entries past session_max_bytes, as it does
// past session_max entries.
func TestSessionMapBoundedInBytes(t *testing.T) {
	const maxBytes = 1 << 20
	w, _ := wrapped(t, "least-request", func(p *config.Affinity) { p.SessionMaxBytes = maxBytes; p.SessionMax = 1000 })
	c := fleet(2)
	key := func(i int) string { return fmt.Sprintf("%08d", i) + string(make([]byte, 64<<10)) }
	for i := range 100 {
		pickAndCommit(w, &policy.Request{SessionKey: key(i)}, c)
		if b := w.SessionBytes(); b > maxBytes {
			t.Fatalf("after %d sessions of 64 KiB: %d bytes, bound %d", i+1, b, maxBytes)
		}
	}
	if n := w.Sessions(); n == 0 || n >= 16 {
		t.Fatalf("sessions = %d, want the most recent few (1 MiB / 64 KiB)", n)
	}
	if _, ok := w.sessions.get(key(99)); !ok {
		t.Fatal("the most recent session was evicted")
	}
	if _, ok := w.sessions.get(key(0)); ok {
		t.Fatal("the oldest session survived past the byte bound")
	}
	// Short keys: the entry bound still applies, and the accounting returns
	// to what the remaining entries hold.
	for i := range 2000 {
		pickAndCommit(w, &policy.Request{SessionKey: fmt.Sprint("s", i)}, c)
	}
	if n := w.Sessions(); n != 1000 {
		t.Fatalf("sessions = %d, want session_max 1000", n)
	}
	if b := w.SessionBytes(); b > 1000*(6+1+sessionOverhead) {
		t.Fatalf("%d bytes for 1000 short sessions: evicted entries still accounted", b)
	}
}
