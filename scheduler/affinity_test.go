package scheduler

import (
	"context"
	"testing"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// Session affinity wraps every policy: a conversation stays on its instance
// while that instance is a candidate, even when least-request alone would
// move it; turning the knob off restores plain least-request.
func TestSessionAffinityWrapsThePolicy(t *testing.T) {
	for _, on := range []bool{true, false} {
		s, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.Affinity.Session = on })
		mustRegister(t, s, "10.0.0.1:8000")
		mustRegister(t, s, "10.0.0.2:8000")
		pick := func(id string) string {
			req := pickReq(id, "m")
			req.SessionKey = "conversation-1"
			resp, err := s.Pick(context.Background(), req, nil)
			if err != nil || resp.GetStatus() != llmrouterv1.PickResponse_ROUTED {
				t.Fatalf("pick: %v %v", resp, err)
			}
			return resp.GetEndpoints()[0]
		}
		home := pick("r1")
		other := "10.0.0.1:8000"
		if home == other {
			other = "10.0.0.2:8000"
		}
		// Make home the busier instance (not saturated).
		mustReport(t, s, home, &llmrouterv1.Report{Healthy: true, Running: 5})
		mustReport(t, s, other, &llmrouterv1.Report{Healthy: true, Running: 0})
		got := pick("r2")
		if on && got != home {
			t.Fatalf("session affinity on: second turn went to %s, want its home %s", got, home)
		}
		if !on && got != other {
			t.Fatalf("session affinity off: least-request should pick the idle %s, got %s", other, got)
		}
	}
}

// An engine that registers again (it restarted: its cache is empty) is
// forgotten by the policy: a session no longer sticks to it.
func TestReRegistrationForgetsPolicyState(t *testing.T) {
	s, _ := newTestScheduler(t, nil)
	leases := map[string]*registry.Lease{
		"10.0.0.1:8000": mustRegister(t, s, "10.0.0.1:8000"),
		"10.0.0.2:8000": mustRegister(t, s, "10.0.0.2:8000"),
	}
	req := pickReq("r1", "m")
	req.SessionKey = "c"
	resp, err := s.Pick(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	home := resp.GetEndpoints()[0]
	other := "10.0.0.1:8000"
	if home == other {
		other = "10.0.0.2:8000"
	}
	mustReport(t, s, home, &llmrouterv1.Report{Healthy: true, Running: 5})
	mustReport(t, s, other, &llmrouterv1.Report{Healthy: true})
	if _, err := s.RegisterAs(regMsg(home), leases[home]); err != nil { // the engine came back
		t.Fatal(err)
	}
	mustReport(t, s, home, &llmrouterv1.Report{Healthy: true, Running: 5})
	req = pickReq("r2", "m")
	req.SessionKey = "c"
	resp, err = s.Pick(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetEndpoints()[0]; got != other {
		t.Fatalf("after its home re-registered the session still went to %s; want the idle %s", got, other)
	}
}
