package scheduler

import (
	"strings"
	"testing"
	"time"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
)

// longTurn is a turn of conversation 7 whose hashed prompt is 1,024 blocks
// (16k tokens): computing it elsewhere takes about 0.28 s of prefill, more
// than an agent's report interval, so prefix-cache holds it for its
// saturated home.
func longTurn(id string, extra int) *llmrouterv1.PickRequest {
	return prompt(id, 7, 1024+extra)
}

// TestLongPromptWaitsForItsSaturatedHome: with prefix-cache, the next turn
// of a conversation whose home holds a long prompt and is saturated waits
// in the queue for the home instead of computing the prompt elsewhere, and
// goes home as soon as the home has room.
func TestLongPromptWaitsForItsSaturatedHome(t *testing.T) {
	s, _ := newFleet(t, "prefix-cache", 3, nil)
	home := route(t, s, longTurn("t1", 0))
	done(t, s, "t1")
	mustReport(t, s, home, load(8, 6)) // max_waiting 4: saturated
	final := make(chan *llmrouterv1.PickResponse, 1)
	resp, w := s.TryPick(longTurn("t2", 4), func(r *llmrouterv1.PickResponse) { final <- r })
	if w == nil || resp.Status != llmrouterv1.PickResponse_QUEUED || !strings.Contains(resp.Reason, "holding most of the prompt") {
		t.Fatalf("next turn with its home saturated: %v, want QUEUED for the home", resp)
	}
	mustReport(t, s, home, load(1, 0))
	awaitRouted(t, final, home, "")
}

// TestHoldIsBoundedByThePrefillItSaves: a held turn waits no longer than
// computing the prompt elsewhere would take; after that the next change of
// capacity sends it to the best other instance, never to a refusal.
func TestHoldIsBoundedByThePrefillItSaves(t *testing.T) {
	s, clk, addrs := newFleetClock(t, "prefix-cache", 3, nil)
	home := route(t, s, longTurn("t1", 0))
	done(t, s, "t1")
	mustReport(t, s, home, load(8, 6))
	final := make(chan *llmrouterv1.PickResponse, 1)
	if _, w := s.TryPick(longTurn("t2", 4), func(r *llmrouterv1.PickResponse) { final <- r }); w == nil {
		t.Fatal("next turn routed at once, want held for its home")
	}
	other := addrs[0]
	if other == home {
		other = addrs[1]
	}
	clk.Advance(100 * time.Millisecond) // less than the 0.28 s it saves: still held
	mustReport(t, s, other, load(0, 0))
	select {
	case r := <-final:
		t.Fatalf("released after 100 ms: %v", r)
	default:
	}
	clk.Advance(300 * time.Millisecond) // past it
	mustReport(t, s, other, load(0, 0))
	select {
	case r := <-final:
		if r.Status != llmrouterv1.PickResponse_ROUTED || r.Endpoints[0] == home {
			t.Fatalf("after the prefill it saves: %v, want routed elsewhere", r)
		}
	default:
		t.Fatal("still held after waiting longer than the prefill it saves")
	}
}

// TestHoldNeverRefuses: with the admission queue full a turn that would be
// held is routed elsewhere at once, not shed.
func TestHoldNeverRefuses(t *testing.T) {
	s, _ := newFleet(t, "prefix-cache", 3, func(c *config.Config) { c.Gateway.MaxQueueSize = 0 })
	home := route(t, s, longTurn("t1", 0))
	done(t, s, "t1")
	mustReport(t, s, home, load(8, 6))
	if to := route(t, s, longTurn("t2", 4)); to == home {
		t.Fatalf("routed to its saturated home %s", home)
	}
}

// TestHoldDoesNotBlockTheQueue: a held turn at the head of the queue does
// not keep the requests behind it from an instance that frees up (a hold
// says nothing of the pool's room).
func TestHoldDoesNotBlockTheQueue(t *testing.T) {
	s, addrs := newFleet(t, "prefix-cache", 3, nil)
	home := route(t, s, longTurn("t1", 0))
	done(t, s, "t1")
	mustReport(t, s, home, load(8, 6))
	if _, w := s.TryPick(longTurn("t2", 4), func(*llmrouterv1.PickResponse) {}); w == nil {
		t.Fatal("next turn routed at once, want held for its home")
	}
	var others []string
	for _, a := range addrs {
		if a != home {
			others = append(others, a)
			mustReport(t, s, a, load(8, 6))
		}
	}
	final := make(chan *llmrouterv1.PickResponse, 1)
	if resp, w := s.TryPick(prompt("q", 9, 8), func(r *llmrouterv1.PickResponse) { final <- r }); w == nil {
		t.Fatalf("every instance saturated: %v, want QUEUED", resp)
	}
	mustReport(t, s, others[0], load(0, 0))
	awaitRouted(t, final, others[0], "")
}
