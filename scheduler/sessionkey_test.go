package scheduler

import (
	"fmt"
	"strings"
	"testing"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/sessionkey"
	"github.com/llmrouter/llmrouter/scheduler/policy/affinity"
)

// TestHugeSessionKeysStayBounded: 1,000 distinct 1 MiB session keys sent
// straight to the scheduler (a client that skips the gateway's digest) are
// kept as fixed-size digests: the affinity map holds 1,000 entries of a few
// hundred bytes each, not a GiB of keys.
func TestHugeSessionKeysStayBounded(t *testing.T) {
	s, _ := newTestScheduler(t, nil)
	mustRegister(t, s, "10.0.0.1:8000", "llama")
	mustRegister(t, s, "10.0.0.2:8000", "llama")
	w, ok := s.pol.(*affinity.Wrapper)
	if !ok {
		t.Fatalf("policy %T is not wrapped with session affinity", s.pol)
	}
	const n, size = 1000, 1 << 20
	tail := strings.Repeat("k", size-16)
	var first string
	for i := range n {
		key := fmt.Sprintf("%016d", i) + tail
		req := pickReq(fmt.Sprint("r", i), "llama")
		req.SessionKey = key
		resp, _ := s.TryPick(req, nil)
		if len(resp.Endpoints) == 0 {
			t.Fatalf("pick %d not routed: %v", i, resp)
		}
		if i == 0 {
			first = resp.Endpoints[0]
		}
		if err := s.Report(t.Context(), &llmrouterv1.OutcomeReport{RequestId: req.RequestId}); err != nil {
			t.Fatal(err)
		}
	}
	if got := w.Sessions(); got != n {
		t.Fatalf("sessions = %d, want %d (one per distinct key)", got, n)
	}
	perEntry := int64(sessionkey.DigestLen + len("10.0.0.1:8000") + 160)
	if b := w.SessionBytes(); b > n*perEntry {
		t.Fatalf("session map accounts %d bytes for %d keys, want at most %d (digests, not raw keys)", b, n, n*perEntry)
	}
	// The digest still identifies the session: the first key goes home.
	req := pickReq("again", "llama")
	req.SessionKey = fmt.Sprintf("%016d", 0) + tail
	if resp, _ := s.TryPick(req, nil); resp.Endpoints[0] != first {
		t.Fatalf("session 0 went to %s, its home is %s", resp.Endpoints[0], first)
	}
}

// TestHugeRequestIDBounded: a picker client's 1 MiB request id keys its pick
// by a digest, and its report releases it.
func TestHugeRequestIDBounded(t *testing.T) {
	s, _ := newTestScheduler(t, nil)
	mustRegister(t, s, "10.0.0.1:8000", "llama")
	id := strings.Repeat("i", 1<<20)
	if resp, _ := s.TryPick(pickReq(id, "llama"), nil); len(resp.Endpoints) == 0 {
		t.Fatalf("not routed: %v", resp)
	}
	s.mu.Lock()
	for k := range s.inflight {
		if len(k) > sessionkey.MaxLen {
			t.Errorf("a pick is keyed by %d bytes of its request id", len(k))
		}
	}
	n := len(s.inflight)
	s.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d picks in flight, want 1", n)
	}
	if err := s.Report(t.Context(), &llmrouterv1.OutcomeReport{RequestId: id}); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.inflight) != 0 {
		t.Fatal("the report did not release the pick")
	}
}
