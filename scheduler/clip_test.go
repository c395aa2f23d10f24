package scheduler

import (
	"strings"
	"testing"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/clip"
	"github.com/llmrouter/llmrouter/internal/config"
)

// TestRejectionsEchoAShortPrefix: every rejection built from a client's model
// name quotes at most clip.MaxInput bytes of it (a 1 MiB name once came back
// whole in the 404 body).
func TestRejectionsEchoAShortPrefix(t *testing.T) {
	huge := "m" + strings.Repeat("x", 1<<20)
	// Bound: the longest message template plus the clipped name, far below
	// the name itself.
	const bound = 512
	check := func(what string, resp *llmrouterv1.PickResponse) {
		t.Helper()
		if resp.Status != llmrouterv1.PickResponse_REJECTED {
			t.Fatalf("%s: %v", what, resp.Status)
		}
		if len(resp.Reason) > bound || !strings.Contains(resp.Reason, clip.Input(huge)) {
			t.Fatalf("%s: reason is %d bytes (want <= %d, quoting the clipped name): %.120q", what, len(resp.Reason), bound, resp.Reason)
		}
	}
	s, _ := newTestScheduler(t, nil)
	resp, _ := s.TryPick(pickReq("r0", huge), nil)
	check("empty fleet 503", resp)
	mustRegister(t, s, "10.0.0.1:8000", "llama")
	resp, _ = s.TryPick(pickReq("r1", huge), nil)
	if resp.HttpStatus != 404 {
		t.Fatalf("unknown model: %v", resp)
	}
	check("unknown model 404", resp)

	d, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.DefaultPool = "absent" })
	mustRegister(t, d, "10.0.0.1:8000", "llama")
	resp, _ = d.TryPick(pickReq("r2", huge), nil)
	check("default pool 503", resp)
}
