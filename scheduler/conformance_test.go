package scheduler

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/all" // every plugin and policy, by name
)

// The conformance tests run every registered policy through the real
// scheduler and registry — constructed fleets, the same cases for each — so
// a new policy is held to them by being registered.

// conformancePolicies is every built-in profile (every registered policy
// among them) except test doubles.
func conformancePolicies(t *testing.T) []string {
	var out []string
	for _, n := range framework.BuiltinProfiles() {
		if n != "test-recorder" {
			out = append(out, n)
		}
	}
	if len(out) < 8 {
		t.Fatalf("only %v registered: the conformance tests would prove little", out)
	}
	return out
}

// newFleet starts a scheduler running pol over n instances 10.0.1.i:8000
// serving model "m", all idle, and returns their addresses. Session
// affinity is off: the cases are about the policy itself.
func newFleet(t *testing.T, pol string, n int, mutate func(*config.Config)) (*Scheduler, []string) {
	t.Helper()
	s, _, addrs := newFleetClock(t, pol, n, mutate)
	return s, addrs
}

// newFleetClock is newFleet with the scheduler's fake clock.
func newFleetClock(t *testing.T, pol string, n int, mutate func(*config.Config)) (*Scheduler, *fakeClock, []string) {
	t.Helper()
	s, clk := newTestScheduler(t, func(c *config.Config) {
		c.Scheduler.Policy = pol
		c.Scheduler.PrefillPolicy, c.Scheduler.DecodePolicy = "prefix-cache", "least-token"
		c.Scheduler.Affinity.Session = false
		c.Scheduler.MaxWaiting = 4
		if mutate != nil {
			mutate(c)
		}
	})
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("10.0.1.%d:8000", i+1)
		mustRegister(t, s, addrs[i])
		mustReport(t, s, addrs[i], load(0, 0))
	}
	return s, clk, addrs
}

// prompt is a request whose prompt is the chained blocks of conversation
// conv, turns long.
func prompt(id string, conv uint64, blocks int) *llmrouterv1.PickRequest {
	hs := make([]uint64, blocks)
	h := conv*0x9E3779B97F4A7C15 + 1
	for i := range hs {
		h = h*0x100000001B3 ^ uint64(i+1)
		hs[i] = h
	}
	return &llmrouterv1.PickRequest{RequestId: id, Model: "m", PromptTokens: int64(blocks * 16), MaxTokens: 50, PromptBlockHashes: hs}
}

// route picks req and requires it routed; it returns the destination.
func route(t *testing.T, s *Scheduler, req *llmrouterv1.PickRequest) string {
	t.Helper()
	resp, w := s.TryPick(req, nil)
	if w != nil || resp == nil || resp.Status != llmrouterv1.PickResponse_ROUTED || len(resp.Endpoints) == 0 {
		t.Fatalf("%s: not routed: %v", req.RequestId, resp)
	}
	return resp.Endpoints[0]
}

// done reports req complete, as a gateway would.
func done(t *testing.T, s *Scheduler, id string) {
	t.Helper()
	if err := s.Report(context.Background(), &llmrouterv1.OutcomeReport{RequestId: id, Model: "m", HttpStatus: 200, PromptTokens: 100, CompletionTokens: 50}); err != nil {
		t.Fatal(err)
	}
}

// awaitRouted waits for a queued request's final answer: routed, first to
// want, and never to gone ("" when any).
func awaitRouted(t *testing.T, final <-chan *llmrouterv1.PickResponse, want, gone string) {
	t.Helper()
	select {
	case r := <-final:
		if r.Status != llmrouterv1.PickResponse_ROUTED || r.Endpoints[0] != want || (gone != "" && slices.Contains(r.Endpoints, gone)) {
			t.Fatalf("queued request: %v, want routed to %s (and never to %q)", r, want, gone)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("queued request not routed when an instance freed up")
	}
}

// TestConformanceEmptyPools: no instance serving the model is 404 while
// others serve other models, 503 while none at all is registered — for every
// policy, never a pick.
func TestConformanceEmptyPools(t *testing.T) {
	for _, pol := range conformancePolicies(t) {
		t.Run(pol, func(t *testing.T) {
			s, _ := newFleet(t, pol, 0, nil)
			if resp, w := s.TryPick(prompt("a", 1, 4), nil); w != nil || resp.Status != llmrouterv1.PickResponse_REJECTED || resp.HttpStatus != 503 {
				t.Fatalf("no instance registered: %v", resp)
			}
			mustRegister(t, s, "10.0.2.1:8000", "other")
			if resp, w := s.TryPick(prompt("b", 1, 4), nil); w != nil || resp.Status != llmrouterv1.PickResponse_REJECTED || resp.HttpStatus != 404 {
				t.Fatalf("no instance serving the model: %v", resp)
			}
		})
	}
}

// TestConformanceTiesShareTheLoad: identical idle instances, requests with
// nothing in common, each completed before the next (so the fleet is
// identical again every time): ties are broken at random or in turn, never
// by order, so every instance gets a share.
func TestConformanceTiesShareTheLoad(t *testing.T) {
	for _, pol := range conformancePolicies(t) {
		t.Run(pol, func(t *testing.T) {
			s, addrs := newFleet(t, pol, 4, nil)
			got := map[string]int{}
			for i := range 200 {
				id := fmt.Sprint("r", i)
				got[route(t, s, prompt(id, uint64(1000+i), 4))]++
				done(t, s, id)
			}
			for _, a := range addrs {
				if got[a] < 20 {
					t.Fatalf("%s got %d of 200 tied picks: %v", a, got[a], got)
				}
			}
		})
	}
}

// TestConformanceSaturatedNeverPicked: an instance over max_waiting gets
// nothing while another is below; when every instance is saturated the
// request waits in the queue and is routed to the first that frees up.
func TestConformanceSaturatedNeverPicked(t *testing.T) {
	for _, pol := range conformancePolicies(t) {
		t.Run(pol, func(t *testing.T) {
			s, addrs := newFleet(t, pol, 3, nil)
			mustReport(t, s, addrs[0], load(8, 6)) // max_waiting 4
			for i := range 30 {
				id := fmt.Sprint("r", i)
				if to := route(t, s, prompt(id, uint64(i%3), 8)); to == addrs[0] {
					t.Fatalf("pick %d went to the saturated %s", i, to)
				}
				done(t, s, id)
			}
			for _, a := range addrs[1:] {
				mustReport(t, s, a, load(8, 6))
			}
			final := make(chan *llmrouterv1.PickResponse, 1)
			resp, w := s.TryPick(prompt("q", 7, 8), func(r *llmrouterv1.PickResponse) { final <- r })
			if w == nil || resp.Status != llmrouterv1.PickResponse_QUEUED {
				t.Fatalf("all saturated: %v, want QUEUED", resp)
			}
			mustReport(t, s, addrs[2], load(1, 0))
			awaitRouted(t, final, addrs[2], "")
		})
	}
}

// TestConformanceInstanceLeaves: an instance that leaves — between picks,
// or while a request waits for capacity — is never picked again, and a
// stateful policy (prefix index, ledgers, affinity) forgets it without
// failing; the request waiting goes to an instance still there.
func TestConformanceInstanceLeaves(t *testing.T) {
	for _, pol := range conformancePolicies(t) {
		t.Run(pol, func(t *testing.T) {
			s, addrs := newFleet(t, pol, 3, nil)
			// Teach stateful policies about every instance.
			for i := range 12 {
				id := fmt.Sprint("warm", i)
				route(t, s, prompt(id, uint64(i%4), 16))
				done(t, s, id)
			}
			if !s.Deregister(addrs[0], 0, "test: left") {
				t.Fatal("deregister refused")
			}
			for i := range 30 {
				id := fmt.Sprint("after", i)
				if to := route(t, s, prompt(id, uint64(i%4), 16)); to == addrs[0] {
					t.Fatalf("pick %d went to %s, which left", i, to)
				}
				done(t, s, id)
			}
			// A request waits while both remaining instances are saturated;
			// one of them leaves, the other frees up.
			mustReport(t, s, addrs[1], load(8, 6))
			mustReport(t, s, addrs[2], load(8, 6))
			final := make(chan *llmrouterv1.PickResponse, 1)
			resp, w := s.TryPick(prompt("q", 2, 16), func(r *llmrouterv1.PickResponse) { final <- r })
			if w == nil || resp.Status != llmrouterv1.PickResponse_QUEUED {
				t.Fatalf("all saturated: %v, want QUEUED", resp)
			}
			s.Deregister(addrs[1], 0, "test: left while a request waited")
			mustReport(t, s, addrs[2], load(1, 0))
			awaitRouted(t, final, addrs[2], addrs[1])
		})
	}
}

// TestConformancePrefixHomeSaturated: a conversation's instance (its
// prefix's home) becomes saturated: its next turn goes elsewhere, for every
// policy — the prefix-aware ones spill rather than wait for their home.
// (prefix-cache holds a turn for its home only when computing the prompt
// elsewhere would take longer than an agent's report interval: hold_test.go.)
func TestConformancePrefixHomeSaturated(t *testing.T) {
	for _, pol := range conformancePolicies(t) {
		t.Run(pol, func(t *testing.T) {
			s, _ := newFleet(t, pol, 3, nil)
			home := route(t, s, prompt("t1", 42, 64))
			done(t, s, "t1")
			mustReport(t, s, home, load(8, 6))
			for i := range 10 {
				id := fmt.Sprint("t", i+2)
				if to := route(t, s, prompt(id, 42, 64+4*i)); to == home {
					t.Fatalf("turn %d went to its saturated home %s", i+2, home)
				}
				done(t, s, id)
			}
		})
	}
}

// TestConformanceOverloadShed: while every instance stays saturated — one
// by max_waiting, one by the predicted wait of a long prompt queued there,
// far under max_waiting — a queued request is never routed; at
// wait_schedule_timeout it gets 429 with a Retry-After, for every policy.
func TestConformanceOverloadShed(t *testing.T) {
	for _, pol := range conformancePolicies(t) {
		t.Run(pol, func(t *testing.T) {
			// The long prompt's instance stays silent, so its pick stays
			// unreported (priced whole) through the wait.
			s, clk, addrs := newFleetClock(t, pol, 2, func(c *config.Config) { c.Scheduler.MissedReports = 1000 })
			long := prompt("long", 99, 8)
			long.PromptTokens = 200000
			var longTo string
			if longTo = route(t, s, long); longTo == "" {
				t.Fatal("no pick")
			}
			other := addrs[0]
			if other == longTo {
				other = addrs[1]
			}
			mustReport(t, s, other, load(8, 6)) // max_waiting 4
			final := make(chan *llmrouterv1.PickResponse, 1)
			if resp, w := s.TryPick(prompt("q", 7, 8), func(r *llmrouterv1.PickResponse) { final <- r }); w == nil {
				t.Fatalf("every instance saturated: %v, want QUEUED", resp)
			}
			for range 50 { // 10 s of reports and ticks; both stay saturated
				clk.Advance(200 * time.Millisecond)
				mustReport(t, s, other, load(8, 6))
				s.Tick()
			}
			select {
			case r := <-final:
				if r.Status != llmrouterv1.PickResponse_REJECTED || r.HttpStatus != 429 || r.RetryAfterSeconds < 1 || len(r.Endpoints) != 0 {
					t.Fatalf("at wait_schedule_timeout: %v, want 429 with Retry-After and no endpoint", r)
				}
			default:
				t.Fatal("no answer at wait_schedule_timeout")
			}
		})
	}
}
