//go:build faults

package faults

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/integration/harness"
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

// engine is one enginesim and its agent.
type engine struct {
	proc, agent *harness.Proc
	addr        string
	seed        int
}

// system is one deployment on loopback.
type system struct {
	t    *testing.T
	opts options

	sched *harness.Proc // scheduler, or all-in-one
	gw    *harness.Proc // the separate gateway; nil with all-in-one
	// schedSpec and gwSpec restart a process on the ports it bound.
	schedSpec, gwSpec harness.Spec

	api, xds, schedHTTP string
	extproc, gwHTTP     string

	engines []*engine

	dp            *harness.Proc // the stand-in data plane
	listen, admin string
	client        *http.Client
}

// startSystem runs every process of a deployment and returns once a
// completion through the data plane has been answered.
func startSystem(t *testing.T, o options) *system {
	t.Helper()
	began := time.Now()
	if o.engines == 0 {
		o.engines = 3
	}
	if o.engineArgs == nil {
		o.engineArgs = fastEngine
	}
	if o.gwListen == "" {
		o.gwListen = "127.0.0.1:0"
	}
	env := append([]string{}, o.env...)
	if o.token != "" {
		env = append(env, "LLMROUTER_TOKEN="+o.token)
	}
	if o.waitScheduleTimeout > 0 {
		env = append(env, "LLMROUTER_LLM_GATEWAY_WAIT_SCHEDULE_TIMEOUT="+o.waitScheduleTimeout.String())
	}
	var policy []string
	if o.policy != "" {
		policy = []string{"--policy", o.policy}
	}
	s := &system{t: t, opts: o, client: &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true},
	}}
	t.Cleanup(s.client.CloseIdleConnections)

	if o.split {
		schedSpec := func(api, xds, http string) harness.Spec {
			return harness.Spec{Name: "scheduler", Env: env, Args: append([]string{"scheduler",
				"--listen", api, "--xds-listen", xds, "--http-listen", http}, policy...)}
		}
		s.sched = harness.Start(t, schedSpec("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"))
		l := s.sched.WaitLog(t, startTimeout, "scheduler started", nil)
		s.api, s.xds, s.schedHTTP = l.Str("api"), l.Str("xds"), l.Str("http")
		s.schedSpec = schedSpec(s.api, s.xds, s.schedHTTP)
		gwSpec := func(extproc, http string) harness.Spec {
			return harness.Spec{Name: "gateway", Env: append(append([]string{}, env...), o.gwEnv...), Args: []string{"gateway",
				"--listen", extproc, "--scheduler", s.api, "--http-listen", http}}
		}
		s.gw = harness.Start(t, gwSpec(o.gwListen, "127.0.0.1:0"))
		l = s.gw.WaitLog(t, startTimeout, "gateway started", nil)
		s.extproc, s.gwHTTP = l.Str("ext_proc"), l.Str("http")
		s.gwSpec = gwSpec(s.extproc, s.gwHTTP)
	} else {
		env = append(env,
			"LLMROUTER_LLM_SCHEDULER_LISTEN=127.0.0.1:0", "LLMROUTER_LLM_SCHEDULER_XDS_LISTEN=127.0.0.1:0",
			"LLMROUTER_LLM_SCHEDULER_HTTP_LISTEN=127.0.0.1:0", "LLMROUTER_LLM_GATEWAY_LISTEN=127.0.0.1:0",
			"LLMROUTER_LLM_GATEWAY_HTTP_LISTEN=127.0.0.1:0")
		s.sched = harness.Start(t, harness.Spec{Name: "all-in-one", Env: env, Args: append([]string{"all-in-one"}, policy...)})
		l := s.sched.WaitLog(t, startTimeout, "all-in-one started", nil)
		s.api, s.xds, s.extproc, s.schedHTTP = l.Str("api"), l.Str("xds"), l.Str("ext_proc"), l.Str("http")
		s.gwHTTP = s.schedHTTP
	}

	for i := 1; i <= o.engines; i++ {
		addr := "127.0.0.1:0"
		if o.fixedEnginePorts {
			addr = harness.FreeAddr(t)
		}
		s.engines = append(s.engines, s.startEngine(t, i, addr))
	}
	s.waitFleet(t, settle)
	s.startDataPlane(t)
	if s.gw != nil {
		s.waitGauge(t, settle, s.gwHTTP, "llmrouter_gateway_degraded", 0)
	}
	harness.Eventually(t, settle, "a completion through the data plane", func() error {
		return s.chat(context.Background(), chatReq{maxTokens: 1}).failure()
	})
	t.Logf("system up in %s: %s, engines %v, data plane on %s", time.Since(began).Round(time.Millisecond),
		map[bool]string{true: "scheduler + gateway", false: "all-in-one"}[o.split], s.engineAddrs(), s.listen)
	return s
}

// startEngine runs enginesim number i on addr and its agent.
func (s *system) startEngine(t *testing.T, i int, addr string) *engine {
	t.Helper()
	args := append([]string{"enginesim", "--listen", addr, "--model", model, "--seed", fmt.Sprint(i)}, s.opts.engineArgs...)
	e := &engine{seed: i, proc: harness.Start(t, harness.Spec{Name: fmt.Sprintf("enginesim-%d", i), Args: args})}
	e.addr = e.proc.WaitLog(t, startTimeout, "enginesim serving", nil).Str("addr")
	e.agent = s.startAgent(t, fmt.Sprintf("agent-%d", i), e.addr, e.addr)
	return e
}

// startAgent runs an agent probing engineAddr and advertising advertise.
func (s *system) startAgent(t *testing.T, name, engineAddr, advertise string) *harness.Proc {
	t.Helper()
	return harness.Start(t, harness.Spec{Name: name,
		Env:  s.agentEnv(),
		Args: []string{"agent", "--engine-url", "http://" + engineAddr, "--advertise", advertise, "--scheduler", s.api}})
}

func (s *system) agentEnv() []string {
	env := []string{"LLMROUTER_AGENT_HTTP_LISTEN=127.0.0.1:0"}
	if s.opts.token != "" {
		env = append(env, "LLMROUTER_TOKEN="+s.opts.token)
	}
	return env
}

func (s *system) engineAddrs() []string {
	var out []string
	for _, e := range s.engines {
		out = append(out, e.addr)
	}
	return out
}

// procs is every process of the deployment as it stands.
func (s *system) procs() []*harness.Proc {
	out := []*harness.Proc{s.sched, s.dp}
	if s.gw != nil {
		out = append(out, s.gw)
	}
	for _, e := range s.engines {
		out = append(out, e.proc, e.agent)
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

// instance is what the tests read of /admin/instances.
type instance struct {
	ID      string
	Address string
	Healthy bool   // what its agent reports
	State   string // the scheduler's view: only "healthy" is picked
}

func (s *system) instances() ([]instance, error) {
	var list []instance
	err := harness.GetJSON("http://"+s.schedHTTP+"/admin/instances", s.opts.token, &list)
	return list, err
}

// waitFleet waits until the scheduler holds every engine healthy.
func (s *system) waitFleet(t *testing.T, timeout time.Duration) {
	t.Helper()
	harness.Eventually(t, timeout, "every engine healthy on the scheduler", func() error {
		list, err := s.instances()
		if err != nil {
			return err
		}
		healthy := map[string]bool{}
		for _, in := range list {
			if in.State == "healthy" {
				healthy[in.Address] = true
			}
		}
		for _, e := range s.engines {
			if !healthy[e.addr] {
				return fmt.Errorf("%s not healthy; fleet: %+v", e.addr, list)
			}
		}
		return nil
	})
}

// startDataPlane renders the bootstrap for this deployment and runs the
// stand-in on it; the listener and admin ports are picked free a moment
// before, so a lost port race is tried again on new ones.
func (s *system) startDataPlane(t *testing.T) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	for attempt := 1; ; attempt++ {
		s.listen, s.admin = harness.FreeAddr(t), harness.FreeAddr(t)
		s.renderBootstrap(t, path)
		s.dp = harness.Start(t, harness.Spec{Name: "standin", Binary: standinBin, Args: []string{"-c", path}})
		err := s.waitDataPlane()
		if err == nil {
			return
		}
		select {
		case <-s.dp.Exited():
			if attempt < 3 && strings.Contains(strings.ToLower(s.dp.Output()), "address already in use") {
				continue
			}
		default:
		}
		t.Fatalf("standin: %v", err)
	}
}

func (s *system) renderBootstrap(t *testing.T, path string) {
	t.Helper()
	args := []string{"bootstrap", "--listen", s.listen, "--admin", s.admin, "--xds", s.xds, "--extproc", s.extproc}
	if s.opts.waitScheduleTimeout > 0 {
		args = append(args, "--wait-schedule-timeout", s.opts.waitScheduleTimeout.String())
	}
	cmd := exec.Command(harness.Binary(t), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LLMROUTER_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// The token goes into the bootstrap as Envoy carries it.
	if s.opts.token != "" {
		cmd.Env = append(cmd.Env, "LLMROUTER_TOKEN="+s.opts.token)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("llmrouter %v: %v\n%s", args, err, stderr.String())
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (s *system) waitDataPlane() error {
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.dp.Exited():
			return fmt.Errorf("exited: %v", s.dp.ExitErr())
		default:
		}
		var have map[string]bool
		if have, last = s.endpoints(); last == nil {
			for _, e := range s.engines {
				if !have[e.addr] {
					last = fmt.Errorf("llm_backends lacks %s: %v", e.addr, have)
				}
			}
			if last == nil {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready with every engine within %s: %v", startTimeout, last)
}

// endpoints is the data plane's llm_backends membership (Envoy's
// /clusters?format=json shape; the stand-in serves the same).
func (s *system) endpoints() (map[string]bool, error) {
	b, err := harness.Get("http://"+s.admin+"/ready", "")
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(string(b)) != "LIVE" {
		return nil, fmt.Errorf("/ready: %s", b)
	}
	var cs struct {
		ClusterStatuses []struct {
			Name         string `json:"name"`
			HostStatuses []struct {
				Address struct {
					SocketAddress struct {
						Address   string `json:"address"`
						PortValue int    `json:"port_value"`
					} `json:"socket_address"`
				} `json:"address"`
			} `json:"host_statuses"`
		} `json:"cluster_statuses"`
	}
	if err := harness.GetJSON("http://"+s.admin+"/clusters?format=json", "", &cs); err != nil {
		return nil, err
	}
	for _, c := range cs.ClusterStatuses {
		if c.Name != "llm_backends" {
			continue
		}
		have := map[string]bool{}
		for _, h := range c.HostStatuses {
			have[fmt.Sprintf("%s:%d", h.Address.SocketAddress.Address, h.Address.SocketAddress.PortValue)] = true
		}
		return have, nil
	}
	return nil, fmt.Errorf("no llm_backends cluster yet")
}

// restartScheduler starts the separate scheduler again on its ports.
func (s *system) restartScheduler(t *testing.T) time.Time {
	t.Helper()
	s.sched = harness.Start(t, s.schedSpec)
	return s.sched.WaitLog(t, startTimeout, "scheduler started", nil).At
}

// restartGateway starts the separate gateway again on its ports.
func (s *system) restartGateway(t *testing.T) time.Time {
	t.Helper()
	s.gw = harness.Start(t, s.gwSpec)
	return s.gw.WaitLog(t, startTimeout, "gateway started", nil).At
}

// ---------------------------------------------------------------- observing

// sum adds every series of name whose labels include the pairs given
// (histograms count their samples).
func sum(m harness.Metrics, name string, labels ...string) float64 {
	f := m[name]
	if f == nil {
		return 0
	}
	total := 0.0
next:
	for _, s := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range s.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case s.Counter != nil:
			total += s.Counter.GetValue()
		case s.Gauge != nil:
			total += s.Gauge.GetValue()
		case s.Histogram != nil:
			total += float64(s.Histogram.GetSampleCount())
		case s.Untyped != nil:
			total += s.Untyped.GetValue()
		}
	}
	return total
}

func (s *system) counter(t *testing.T, addr, name string, labels ...string) float64 {
	t.Helper()
	m, err := harness.Scrape(addr, s.opts.token)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return sum(m, name, labels...)
}

// waitGauge polls name on addr until it equals want.
func (s *system) waitGauge(t *testing.T, timeout time.Duration, addr, name string, want float64) {
	t.Helper()
	harness.Eventually(t, timeout, fmt.Sprintf("%s = %g on %s", name, want, addr), func() error {
		m, err := harness.Scrape(addr, s.opts.token)
		if err != nil {
			return err
		}
		if v, ok := m.Value(name); !ok || v != want {
			return fmt.Errorf("%s", m.Series(name))
		}
		return nil
	})
}

// logSignals logs what an operator would have seen on the gateway's and
// scheduler's /metrics (for docs/operating.md's fault table).
func (s *system) logSignals(t *testing.T) {
	t.Helper()
	if m, err := harness.Scrape(s.gwHTTP, s.opts.token); err == nil {
		t.Logf("gateway: %s", nonZero(m, "llmrouter_gateway_requests_total"))
		t.Logf("gateway: %s", nonZero(m, "llmrouter_gateway_passthrough_total"))
	}
	if s.gw != nil {
		if m, err := harness.Scrape(s.schedHTTP, s.opts.token); err == nil {
			t.Logf("scheduler: %s", nonZero(m, "llmrouter_scheduler_decisions_total"))
		}
	}
}

// logStuck logs where requests still are: each engine's running and
// waiting requests, the scheduler's queue and the gateway's pending picks.
func (s *system) logStuck(t *testing.T) {
	t.Helper()
	for _, e := range s.engines {
		if m, err := harness.Scrape(e.addr, ""); err == nil {
			t.Logf("%s: %s %s", e.proc.Name, nonZero(m, "vllm:num_requests_running"), nonZero(m, "vllm:num_requests_waiting"))
		}
	}
	if m, err := harness.Scrape(s.schedHTTP, s.opts.token); err == nil {
		t.Logf("scheduler: %s", nonZero(m, "llmrouter_scheduler_queue_length"))
	}
	if m, err := harness.Scrape(s.gwHTTP, s.opts.token); err == nil {
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
