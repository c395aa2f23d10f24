//go:build faults

package faults

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/integration/harness"
)

// steadyRate is the open-loop load of the stall and restart scenarios:
// requests per second of 6 tokens each (about 0.2 s on fastEngine).
const steadyRate = 20

// TestAgentsStalled: every agent stops for 3 s (SIGSTOP) and resumes. The
// silent instances stay in the data plane's endpoints and no request fails.
func TestAgentsStalled(t *testing.T) {
	row := scenario(t)
	s := startSystem(t, options{split: true})
	l := s.openLoop(steadyRate, 9*time.Second, chatReq{}, nil)
	time.Sleep(2 * time.Second)
	episodes := s.Counter(t, s.SchedulerHTTP, "llmrouter_scheduler_membership_panic_episodes_total")
	passed := s.Counter(t, s.GatewayHTTP, "llmrouter_gateway_passthrough_total", "reason", "scheduler_passthrough")
	degraded := s.Counter(t, s.GatewayHTTP, "llmrouter_gateway_passthrough_total", "reason", "degraded")
	for _, e := range s.Engines {
		signal(t, e.Agent, syscall.SIGSTOP)
	}
	stopped := true
	defer func() {
		if stopped {
			for _, e := range s.Engines {
				_ = syscall.Kill(e.Agent.Pid(), syscall.SIGCONT)
			}
		}
	}()
	// The endpoints the data plane holds while the agents are silent.
	fewest, seen := len(s.Engines), 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if have, err := s.Endpoints(); err == nil {
			seen++
			n := 0
			for _, e := range s.Engines {
				if have[e.Addr] {
					n++
				}
			}
			fewest = min(fewest, n)
		}
	}
	// Every agent silent: the whole fleet at once is a panic, and with
	// every candidate silent the gateway lets the data plane balance.
	if d := s.Counter(t, s.SchedulerHTTP, "llmrouter_scheduler_membership_panic_episodes_total") - episodes; d < 1 {
		t.Errorf("the whole fleet went silent and the scheduler counted no membership panic")
	}
	if d := s.Counter(t, s.GatewayHTTP, "llmrouter_gateway_passthrough_total", "reason", "scheduler_passthrough") - passed; d < 1 {
		t.Errorf("no request passed through while every candidate was silent")
	}
	// The scheduler answered all along: its answer is not a failure.
	if d := s.Counter(t, s.GatewayHTTP, "llmrouter_gateway_passthrough_total", "reason", "degraded") - degraded; d > 0 {
		t.Errorf("the gateway went degraded (%g requests) while the scheduler was up and answering", d)
	}
	for _, e := range s.Engines {
		signal(t, e.Agent, syscall.SIGCONT)
	}
	stopped = false
	judge(t, row, l.wait(), l.began, false)
	if seen == 0 {
		t.Errorf("could not read the data plane's endpoints during the stall")
	} else if fewest < len(s.Engines) {
		t.Errorf("the data plane held only %d of %d engines while the agents were silent: silence removed healthy engines", fewest, len(s.Engines))
	}
	s.WaitFleet(t, settle)
	s.logSignals(t)
	s.alive(t)
}

// TestSchedulerStopped: the scheduler stops for 5 s (SIGSTOP) and resumes;
// the gateway's picks time out and it answers without one, the data plane
// keeps its endpoints: no request fails.
func TestSchedulerStopped(t *testing.T) {
	row := scenario(t)
	s := startSystem(t, options{split: true})
	l := s.openLoop(steadyRate, 10*time.Second, chatReq{}, nil)
	time.Sleep(2 * time.Second)
	signal(t, s.Scheduler, syscall.SIGSTOP)
	stopped := true
	defer func() {
		if stopped {
			_ = syscall.Kill(s.Scheduler.Pid(), syscall.SIGCONT)
		}
	}()
	time.Sleep(5 * time.Second)
	signal(t, s.Scheduler, syscall.SIGCONT)
	stopped = false
	judge(t, row, l.wait(), l.began, false)
	s.WaitFleet(t, settle)
	picksResume(t, s)
	s.logSignals(t)
	s.alive(t)
}

// TestSchedulerKilled: the scheduler is SIGKILLed and restarted on the same
// ports 2 s later: no request fails; the fleet re-registers and picks
// resume.
func TestSchedulerKilled(t *testing.T) {
	schedulerRestart(t, func(s *system) { s.Scheduler.Kill(t) })
}

// TestSchedulerTerminated: the scheduler gets SIGTERM, exits cleanly, and is
// restarted 2 s later: no request fails.
func TestSchedulerTerminated(t *testing.T) {
	schedulerRestart(t, func(s *system) { s.Scheduler.Stop(t) })
}

func schedulerRestart(t *testing.T, end func(*system)) {
	row := scenario(t)
	s := startSystem(t, options{split: true})
	l := s.openLoop(steadyRate, 10*time.Second, chatReq{}, nil)
	time.Sleep(2 * time.Second)
	end(s)
	time.Sleep(2 * time.Second)
	restarted := s.RestartScheduler(t)
	s.WaitFleet(t, settle)
	t.Logf("fleet re-registered %s after the restart", time.Since(restarted).Round(time.Millisecond))
	judge(t, row, l.wait(), l.began, false)
	picksResume(t, s)
	s.logSignals(t)
	s.alive(t)
}

// picksResume wants a request through the data plane routed by a pick of
// the (restarted) scheduler.
func picksResume(t *testing.T, s *system) {
	t.Helper()
	routedBy(t, s, "the scheduler", s.SchedulerHTTP, "llmrouter_scheduler_decisions_total")
}

// routedBy wants a request through the data plane counted as routed in
// name (outcome="routed") on addr's /metrics.
func routedBy(t *testing.T, s *system, who, addr, name string) {
	t.Helper()
	harness.Eventually(t, settle, "a pick routed by "+who, func() error {
		before := s.Counter(t, addr, name, "outcome", "routed")
		if err := s.chat(t.Context(), chatReq{MaxTokens: 1}).Failure(); err != nil {
			return err
		}
		if d := s.Counter(t, addr, name, "outcome", "routed") - before; d < 1 {
			return fmt.Errorf("the request was not routed by %s", who)
		}
		return nil
	})
}

// TestGatewayKilled: the gateway is SIGKILLed and restarted on the same
// ports 2 s later; failure_mode_allow carries requests on meanwhile: no
// request fails.
func TestGatewayKilled(t *testing.T) {
	gatewayRestart(t, func(s *system) { s.Gateway.Kill(t) })
}

// TestGatewayTerminated: the gateway gets SIGTERM, drains and exits cleanly,
// and is restarted 2 s later: no request fails.
func TestGatewayTerminated(t *testing.T) {
	gatewayRestart(t, func(s *system) { s.Gateway.Stop(t) })
}

func gatewayRestart(t *testing.T, end func(*system)) {
	row := scenario(t)
	s := startSystem(t, options{split: true})
	l := s.openLoop(steadyRate, 10*time.Second, chatReq{}, nil)
	time.Sleep(2 * time.Second)
	end(s)
	time.Sleep(2 * time.Second)
	s.RestartGateway(t)
	judge(t, row, l.wait(), l.began, false)
	routedBy(t, s, "the restarted gateway", s.GatewayHTTP, "llmrouter_gateway_requests_total")
	s.logSignals(t)
	s.alive(t)
}
