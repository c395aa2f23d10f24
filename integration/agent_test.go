package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/integration/harness"
)

// instance is the part of the scheduler's /admin/instances entries the tests
// read (scheduler/server.Instance as JSON).
type instance struct {
	ID              string   `json:"id"`
	Address         string   `json:"address"`
	Engine          string   `json:"engine"`
	EngineVersion   string   `json:"engine_version"`
	Models          []string `json:"models"`
	NumGPUBlocks    int64    `json:"num_gpu_blocks"`
	BlockSize       int64    `json:"block_size"`
	Healthy         bool     `json:"healthy"`
	UnhealthyReason string   `json:"unhealthy_reason"`
	Draining        bool     `json:"draining"`
	Running         int64    `json:"running"`
	Sequence        uint64   `json:"sequence"`
}

// fleet is a scheduler process and how to reach it.
type fleet struct {
	proc  *harness.Proc
	api   string // gRPC, fixed so a restarted scheduler comes back on it
	http  string
	token string
}

const (
	// startTimeout bounds a process coming up on a loaded 2-core machine.
	startTimeout = 15 * time.Second
	// settle bounds a state change travelling engine → agent → scheduler
	// (one 200 ms report interval plus scheduling slack).
	settle = 10 * time.Second
	model  = "it-model"
)

// startScheduler runs `llmrouter scheduler` on loopback ports. token, when
// set, is LLMROUTER_TOKEN.
func startScheduler(t *testing.T, token string) *fleet {
	t.Helper()
	f := &fleet{api: harness.FreeAddr(t), http: harness.FreeAddr(t), token: token}
	var env []string
	if token != "" {
		env = append(env, "LLMROUTER_TOKEN="+token)
	}
	f.proc = harness.Start(t, harness.Spec{Name: "scheduler", Args: []string{"scheduler",
		"--listen", f.api, "--xds-listen", "127.0.0.1:0", "--http-listen", f.http, "--policy", "least-request"}, Env: env})
	f.waitStarted(t)
	return f
}

func (f *fleet) waitStarted(t *testing.T) {
	t.Helper()
	l := f.proc.WaitLog(t, startTimeout, "scheduler started", nil)
	if l.Str("api") != f.api || l.Str("http") != f.http {
		t.Fatalf("scheduler bound %s / %s, want %s / %s", l.Str("api"), l.Str("http"), f.api, f.http)
	}
	harness.WaitReady(t, f.http, startTimeout)
}

func (f *fleet) restart(t *testing.T) {
	t.Helper()
	f.proc = f.proc.Restart(t)
	f.waitStarted(t)
}

func (f *fleet) instances() ([]instance, error) {
	var out []instance
	err := harness.GetJSON("http://"+f.http+"/admin/instances", f.token, &out)
	return out, err
}

// instance returns the registered instance id, or an error saying what the
// scheduler holds instead.
func (f *fleet) instance(id string) (instance, error) {
	list, err := f.instances()
	if err != nil {
		return instance{}, err
	}
	for _, in := range list {
		if in.ID == id {
			return in, nil
		}
	}
	return instance{}, fmt.Errorf("%s not registered; fleet: %+v", id, list)
}

// waitInstance polls /admin/instances until id satisfies cond.
func (f *fleet) waitInstance(t *testing.T, timeout time.Duration, id, what string, cond func(instance) bool) instance {
	t.Helper()
	var got instance
	harness.Eventually(t, timeout, what, func() error {
		in, err := f.instance(id)
		if err != nil {
			return err
		}
		if !cond(in) {
			return fmt.Errorf("instance: %+v", in)
		}
		got = in
		return nil
	})
	return got
}

// metric reads one scheduler series.
func (f *fleet) metric(name string, labels ...string) (float64, error) {
	m, err := harness.Scrape(f.http, "")
	if err != nil {
		return 0, err
	}
	v, ok := m.Value(name, labels...)
	if !ok {
		return 0, fmt.Errorf("no series %s%v; have: %s", name, labels, m.Series(name))
	}
	return v, nil
}

func (f *fleet) waitMetric(t *testing.T, timeout time.Duration, want float64, name string, labels ...string) {
	t.Helper()
	harness.Eventually(t, timeout, fmt.Sprintf("%s%v = %g", name, labels, want), func() error {
		v, err := f.metric(name, labels...)
		if err != nil {
			return err
		}
		if v != want {
			return fmt.Errorf("is %g", v)
		}
		return nil
	})
}

// startEngine runs `llmrouter enginesim` in demo timing: every decode step
// takes itl, so a request's length is predictable.
func startEngine(t *testing.T, addr string) *harness.Proc {
	t.Helper()
	p := harness.Start(t, harness.Spec{Name: "enginesim", Args: []string{"enginesim", "--listen", addr, "--model", model,
		"--ttft", "20ms", "--itl", "40ms"}})
	p.WaitLog(t, startTimeout, "enginesim serving", nil)
	return p
}

// startAgent runs `llmrouter agent` for the engine at engineAddr, advertising
// advertise; it returns the process and its HTTP address.
func startAgent(t *testing.T, name, engineAddr, advertise, scheduler, token string) (*harness.Proc, string) {
	t.Helper()
	env := []string{"LLMROUTER_AGENT_HTTP_LISTEN=127.0.0.1:0"}
	if token != "" {
		env = append(env, "LLMROUTER_TOKEN="+token)
	}
	p := harness.Start(t, harness.Spec{Name: name, Args: []string{"agent", "--engine-url", "http://" + engineAddr,
		"--advertise", advertise, "--scheduler", scheduler}, Env: env})
	return p, p.WaitLog(t, startTimeout, "http listening", nil).Str("addr")
}

// stream sends one streaming chat completion and reads it to the end.
func stream(ctx context.Context, engineAddr string, maxTokens int) error {
	body := fmt.Sprintf(`{"model":%q,"stream":true,"max_tokens":%d,"messages":[{"role":"user","content":"count slowly"}]}`, model, maxTokens)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+engineAddr+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("status %s: %s", resp.Status, b)
	}
	sc := bufio.NewScanner(resp.Body)
	done := false
	for sc.Scan() {
		if sc.Text() == "data: [DONE]" {
			done = true
		}
	}
	if !done {
		return fmt.Errorf("stream ended without [DONE]: %v", sc.Err())
	}
	return nil
}

// TestAgentWithScheduler runs enginesim, scheduler and agent as processes on
// loopback without a token and follows one instance through its life:
// registration, load, engine death and restart, scheduler restart.
func TestAgentWithScheduler(t *testing.T) {
	began := time.Now()
	engineAddr := harness.FreeAddr(t)
	engine := startEngine(t, engineAddr)
	sched := startScheduler(t, "")
	agent, agentHTTP := startAgent(t, "agent", engineAddr, engineAddr, sched.api, "")

	// Registration: the agent advertises 127.0.0.1:PORT and the scheduler
	// accepts it with what the agent learnt of the engine.
	agent.WaitLog(t, settle, "registered with scheduler", nil)
	in := sched.waitInstance(t, settle, engineAddr, "registered and healthy", func(in instance) bool { return in.Healthy })
	if in.Engine != "vllm" || !slices.Equal(in.Models, []string{model}) || in.NumGPUBlocks <= 0 || in.BlockSize <= 0 || in.EngineVersion == "" {
		t.Fatalf("registration = %+v, want engine vllm, model %s, KV capacity and a version", in, model)
	}
	sched.waitMetric(t, settle, 1, "llmrouter_scheduler_instances", "state", "healthy")
	harness.WaitReady(t, agentHTTP, settle)
	t.Logf("registered %s after %s", engineAddr, time.Since(began).Round(time.Millisecond))

	// Reports follow load: three slow streams (~50 × 40 ms each) show as
	// running on the scheduler, then go back to zero.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const streams = 3
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for range streams {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- stream(ctx, engineAddr, 50) }()
	}
	sched.waitMetric(t, settle, streams, "llmrouter_instance_running_requests", "engine", engineAddr)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
	}
	sched.waitMetric(t, settle, 0, "llmrouter_instance_running_requests", "engine", engineAddr)

	// The engine dies (SIGKILL): the scheduler holds it unhealthy within a
	// second, still registered (the agent keeps reporting).
	engine.Kill(t)
	killed := time.Now()
	var took time.Duration
	down := sched.waitInstance(t, settle, engineAddr, "unhealthy after the engine was killed", func(in instance) bool {
		if !in.Healthy && took == 0 {
			took = time.Since(killed)
		}
		return !in.Healthy
	})
	t.Logf("unhealthy on the scheduler %s after SIGKILL", took.Round(time.Millisecond))
	if took > time.Second {
		t.Errorf("unhealthy %s after the engine was killed, want within 1s", took)
	}
	if !strings.Contains(down.UnhealthyReason, "connection refused") {
		t.Errorf("unhealthy reason = %q, want it to say connection refused", down.UnhealthyReason)
	}
	sched.waitMetric(t, settle, 1, "llmrouter_scheduler_instances", "state", "unhealthy")
	sched.waitMetric(t, settle, 0, "llmrouter_scheduler_instances", "state", "healthy")

	// The engine comes back on the same port: the agent re-registers over
	// its open stream and the instance is healthy again.
	engine = engine.Restart(t)
	engine.WaitLog(t, startTimeout, "enginesim serving", nil)
	restarted := time.Now()
	sched.waitInstance(t, settle, engineAddr, "healthy after the engine restarted", func(in instance) bool { return in.Healthy })
	t.Logf("healthy again %s after the engine restarted", time.Since(restarted).Round(time.Millisecond))
	agent.WaitLog(t, settle, "engine recovered", nil)
	sched.proc.WaitLog(t, settle, "instance re-registered", func(l harness.Line) bool { return l.Str("instance") == engineAddr })
	sched.waitMetric(t, settle, 1, "llmrouter_scheduler_instances", "state", "healthy")
	// Over the same stream: nothing refused on either side. (A stream may
	// still end on a loaded machine for missed reports; that is not this.)
	if l := agent.Logs("", func(l harness.Line) bool { return strings.Contains(l.Str("error"), "InvalidArgument") }); len(l) != 0 {
		t.Errorf("the scheduler refused the agent's re-registration: %s", l[0].Raw)
	}
	if l := sched.proc.Logs("", func(l harness.Line) bool {
		return strings.Contains(l.Raw, "twice") || l.Msg() == "registration refused"
	}); len(l) != 0 {
		t.Errorf("the scheduler refused the re-registration: %s", l[0].Raw)
	}

	// An operator drains the instance: the scheduler holds it draining and
	// the agent hears it. The drain survives the engine restarting (a
	// re-registration over the stream), and a resume undoes it.
	agentMetric := func(want float64, name string) func() error {
		return func() error {
			m, err := harness.Scrape(agentHTTP, "")
			if err != nil {
				return err
			}
			if v, ok := m.Value(name); !ok || v != want {
				return fmt.Errorf("%s", m.Series(name))
			}
			return nil
		}
	}
	admin := func(op string) {
		t.Helper()
		if _, err := harness.Post("http://"+sched.http+"/admin/"+op+"?instance="+engineAddr, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	admin("drain")
	sched.waitMetric(t, settle, 1, "llmrouter_scheduler_instances", "state", "draining")
	harness.Eventually(t, settle, "the agent drained", agentMetric(1, "llmrouter_agent_draining"))
	agentMark, schedMark := agent.Mark(), sched.proc.Mark()
	engine.Kill(t)
	agent.WaitLogSince(t, agentMark, settle, "engine unhealthy", nil)
	engine = engine.Restart(t)
	engine.WaitLog(t, startTimeout, "enginesim serving", nil)
	sched.proc.WaitLogSince(t, schedMark, settle, "instance re-registered", nil)
	sched.waitInstance(t, settle, engineAddr, "healthy and still draining after the engine restarted", func(in instance) bool {
		return in.Healthy && in.Draining
	})
	harness.Eventually(t, settle, "the agent still drained", agentMetric(1, "llmrouter_agent_draining"))
	admin("resume")
	sched.waitMetric(t, settle, 1, "llmrouter_scheduler_instances", "state", "healthy")
	harness.Eventually(t, settle, "the agent resumed", agentMetric(0, "llmrouter_agent_draining"))

	// The scheduler restarts: the agent notices, keeps running, and
	// registers with the new process.
	sched.proc.Stop(t)
	stopped := time.Now()
	agent.WaitLog(t, settle, "scheduler stream ended; reconnecting", nil)
	sched.restart(t)
	sched.waitInstance(t, 20*time.Second, engineAddr, "registered with the restarted scheduler", func(in instance) bool { return in.Healthy })
	t.Logf("registered again %s after the scheduler went down", time.Since(stopped).Round(time.Millisecond))
	sched.waitMetric(t, settle, 1, "llmrouter_scheduler_instances", "state", "healthy")
	harness.WaitReady(t, agentHTTP, settle)

	// Reports still flow to the new scheduler.
	before, err := sched.instance(engineAddr)
	if err != nil {
		t.Fatal(err)
	}
	sched.waitInstance(t, settle, engineAddr, "reports to the restarted scheduler", func(in instance) bool { return in.Sequence > before.Sequence })
	agent.Stop(t)
	sched.waitMetric(t, settle, 0, "llmrouter_scheduler_instances", "state", "healthy")
	t.Logf("whole life cycle in %s", time.Since(began).Round(time.Millisecond))
}

// TestAgentWithSchedulerToken runs the same processes with LLMROUTER_TOKEN on
// both sides, plus a rogue agent holding the wrong token: it is refused,
// both sides log it, and it never joins the fleet.
func TestAgentWithSchedulerToken(t *testing.T) {
	const token, wrong = "it-shared-token-3f9a", "it-wrong-token-77c1"
	engineAddr := harness.FreeAddr(t)
	startEngine(t, engineAddr)
	sched := startScheduler(t, token)
	agent, agentHTTP := startAgent(t, "agent", engineAddr, engineAddr, sched.api, token)
	agent.WaitLog(t, settle, "registered with scheduler", nil)
	sched.waitInstance(t, settle, engineAddr, "registered with the token", func(in instance) bool { return in.Healthy })
	harness.WaitReady(t, agentHTTP, settle)

	// The admin surface wants the token too.
	if _, err := harness.Get("http://"+sched.http+"/admin/instances", ""); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("/admin/instances without the token: %v, want 401", err)
	}

	rogueAddr := "127.0.0.2:" + strings.Split(engineAddr, ":")[1]
	rogue, rogueHTTP := startAgent(t, "rogue-agent", engineAddr, rogueAddr, sched.api, wrong)
	refused := rogue.WaitLog(t, settle, "scheduler refused the agent; retrying, but the configuration must change", nil)
	if !strings.Contains(refused.Str("error"), "Unauthenticated") || !strings.Contains(refused.Str("hint"), "LLMROUTER_TOKEN") {
		t.Errorf("rogue agent's refusal line = %s", refused.Raw)
	}
	logged := sched.proc.WaitLog(t, settle, "call refused: missing or invalid token", nil)
	if logged.Str("method") != "/llmrouter.v1.AgentService/Connect" || !strings.HasPrefix(logged.Str("peer"), "127.0.0.1:") {
		t.Errorf("scheduler's refusal line = %s", logged.Raw)
	}
	if _, err := harness.Get("http://"+rogueHTTP+"/readyz", ""); err == nil || !strings.Contains(err.Error(), "invalid token") {
		t.Errorf("rogue agent /readyz: %v, want not ready naming the invalid token", err)
	}
	// Let the rogue retry a few times: it stays out, the logs stay quiet.
	time.Sleep(time.Second)
	list, err := sched.instances()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != engineAddr {
		t.Fatalf("fleet = %+v, want only %s", list, engineAddr)
	}
	if n := len(sched.proc.Logs("call refused: missing or invalid token", nil)); n != 1 {
		t.Errorf("scheduler logged %d refusals within a second of retries, want 1 (rate-limited)", n)
	}
	for _, p := range []*harness.Proc{sched.proc, agent, rogue} {
		if out := p.Output(); strings.Contains(out, token) || strings.Contains(out, wrong) {
			t.Errorf("%s logged a token", p.Name)
		}
	}
}
