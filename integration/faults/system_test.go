//go:build faults

package faults

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/integration/harness"
	"github.com/llmrouter/llmrouter/integration/stack"
)

const (
	model = "faults-model"
	// startTimeout bounds one process coming up on a busy 2-core machine.
	startTimeout = 30 * time.Second
	// settle bounds a change crossing processes (agent reports every
	// 200 ms, xDS pushes, metric scrapes).
	settle = 15 * time.Second
)

// fastEngine is the timing of engines in scenarios that are not about
// capacity: short streams, so the load is light on CPU.
var fastEngine = []string{"--ttft", "20ms", "--itl", "20ms"}

// options shape one deployment.
type options struct {
	// split runs `llmrouter scheduler` and `llmrouter gateway` as separate
	// processes; otherwise `llmrouter all-in-one`.
	split bool
	// engines is the number of enginesims (default 3), each with an agent.
	engines    int
	engineArgs []string // timing flags of every enginesim (default fastEngine)
	policy     string   // --policy; empty: the configured default
	env        []string // configuration (LLMROUTER_*) of scheduler and gateway
	gwEnv      []string // the separate gateway's only
	gwListen   string   // the separate gateway's ext_proc address (default 127.0.0.1:0)
	// fixedEnginePorts starts each enginesim on a port picked free
	// beforehand, so a restarted one comes back on the same address.
	fixedEnginePorts bool
	// token is the shared secret (LLMROUTER_TOKEN) of scheduler, gateway,
	// agents and the bootstrap; the tests present it on admin calls.
	token string
	// defaultConfig leaves llm_gateway.wait_schedule_timeout and the
	// bootstrap's timeouts at their defaults.
	waitScheduleTimeout time.Duration
}

// system is one deployment on loopback.
type system struct {
	*stack.Stack
	t    *testing.T
	opts options
}

// startSystem runs every process of a deployment and returns once a
// completion through the data plane has been answered.
func startSystem(t *testing.T, o options) *system {
	t.Helper()
	began := time.Now()
	if o.engineArgs == nil {
		o.engineArgs = fastEngine
	}
	s := &system{t: t, opts: o, Stack: stack.Start(t, stack.Options{
		Model: model, Split: o.split, Engines: o.engines, EngineArgs: o.engineArgs,
		FixedEnginePorts: o.fixedEnginePorts, Policy: o.policy,
		Env: o.env, GatewayEnv: o.gwEnv, GatewayListen: o.gwListen,
		Token: o.token, WaitScheduleTimeout: o.waitScheduleTimeout,
		Standin: standinBin, StartTimeout: startTimeout, Settle: settle,
		Client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}},
	})}
	harness.Eventually(t, settle, "a completion through the data plane", func() error {
		return s.chat(context.Background(), chatReq{MaxTokens: 1}).Failure()
	})
	t.Logf("system up in %s: %s, engines %v, data plane on %s", time.Since(began).Round(time.Millisecond),
		map[bool]string{true: "scheduler + gateway", false: "all-in-one"}[o.split], s.EngineAddrs(), s.Listen)
	return s
}

// procs is every process of the deployment as it stands.
func (s *system) procs() []*harness.Proc {
	out := []*harness.Proc{s.Scheduler, s.DataPlane}
	if s.Gateway != nil {
		out = append(out, s.Gateway)
	}
	for _, e := range s.Engines {
		out = append(out, e.Proc, e.Agent)
	}
	return out
}

// alive fails the test for every process of the deployment that exited (a
// crash: the processes a scenario kills on purpose have been restarted, or
// replaced in s, by then).
func (s *system) alive(t *testing.T) {
	t.Helper()
	for _, p := range s.procs() {
		select {
		case <-p.Exited():
			t.Errorf("%s (pid %d) exited: %v", p.Name, p.Pid(), p.ExitErr())
		default:
		}
	}
}

// ---------------------------------------------------------------- observing

// logSignals logs what an operator would have seen on the gateway's and
// scheduler's /metrics (for docs/operating.md's fault table).
func (s *system) logSignals(t *testing.T) {
	t.Helper()
	if m, err := harness.Scrape(s.GatewayHTTP, s.opts.token); err == nil {
		t.Logf("gateway: %s", nonZero(m, "llmrouter_gateway_requests_total"))
		t.Logf("gateway: %s", nonZero(m, "llmrouter_gateway_passthrough_total"))
	}
	if s.Gateway != nil {
		if m, err := harness.Scrape(s.SchedulerHTTP, s.opts.token); err == nil {
			t.Logf("scheduler: %s", nonZero(m, "llmrouter_scheduler_decisions_total"))
		}
	}
}

// logStuck logs where requests still are: each engine's running and
// waiting requests, the scheduler's queue and the gateway's pending picks.
func (s *system) logStuck(t *testing.T) {
	t.Helper()
	for _, e := range s.Engines {
		if m, err := harness.Scrape(e.Addr, ""); err == nil {
			t.Logf("%s: %s %s", e.Proc.Name, nonZero(m, "vllm:num_requests_running"), nonZero(m, "vllm:num_requests_waiting"))
		}
	}
	if m, err := harness.Scrape(s.SchedulerHTTP, s.opts.token); err == nil {
		t.Logf("scheduler: %s", nonZero(m, "llmrouter_scheduler_queue_length"))
	}
	if m, err := harness.Scrape(s.GatewayHTTP, s.opts.token); err == nil {
		t.Logf("gateway: %s", nonZero(m, "llmrouter_gateway_pending_requests"))
	}
}

// nonZero is m.Series(name) without the series at 0.
func nonZero(m harness.Metrics, name string) string {
	fields := strings.Fields(m.Series(name))[1:] // "{labels} value" pairs
	var kept []string
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i+1] != "0" {
			kept = append(kept, fields[i]+" "+fields[i+1])
		}
	}
	return name + " " + strings.Join(kept, " ")
}

// rssBytes is a process's resident set (VmRSS in /proc/PID/status).
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
				return 0, fmt.Errorf("VmRSS %q: %v", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
}

// signal sends sig to one of the deployment's processes.
func signal(t *testing.T, p *harness.Proc, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(p.Pid(), sig); err != nil {
		t.Fatalf("%s: %v: %v", p.Name, sig, err)
	}
}
