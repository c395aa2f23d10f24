package stack

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/integration/harness"
)

// Build compiles the stand-in data plane, and llmrouter unless LLMROUTER_BIN
// names one, in one `go build` into a new temporary directory named from
// prefix, and points LLMROUTER_BIN (read by harness.Binary) at the llmrouter
// built. It returns the directory, which the caller removes, and the
// stand-in's path.
func Build(prefix string) (dir, standin string, err error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", "", fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	if dir, err = os.MkdirTemp("", prefix); err != nil {
		return "", "", err
	}
	pkgs := []string{"./integration/standin/cmd/standin"}
	prebuilt := os.Getenv("LLMROUTER_BIN") != ""
	if !prebuilt {
		pkgs = append(pkgs, "./cmd/llmrouter")
	}
	cmd := exec.Command("go", append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return "", "", fmt.Errorf("go build %v: %v\n%s", pkgs, err, b)
	}
	if !prebuilt {
		// Before the harness's first Binary call, which reads it once.
		os.Setenv("LLMROUTER_BIN", filepath.Join(dir, "llmrouter"))
	}
	return dir, filepath.Join(dir, "standin"), nil
}

// Options shape one deployment.
type Options struct {
	// Model is the name every enginesim serves.
	Model string
	// Split runs `llmrouter scheduler` and `llmrouter gateway` as separate
	// processes (so a test can kill one); otherwise `llmrouter all-in-one`.
	Split bool
	// Engines is the number of enginesims, each with an agent (default 3).
	Engines int
	// EngineArgs are the timing flags of every enginesim.
	EngineArgs []string
	// StartEngines, when set, starts the fleet instead (a disaggregated one,
	// say): it appends to s.Engines once the scheduler is up.
	StartEngines func(t *testing.T, s *Stack)
	// FixedEnginePorts starts each enginesim on a port picked free below
	// the ephemeral range, so a restarted one comes back on the same address.
	FixedEnginePorts bool
	// Policy is --policy; empty: the configured default.
	Policy string
	// Env is configuration (LLMROUTER_*) of the scheduler and gateway;
	// GatewayEnv the separate gateway's only.
	Env, GatewayEnv []string
	// GatewayListen is the separate gateway's ext_proc address (default: a
	// port a restarted gateway comes back on).
	GatewayListen string
	// Token is the shared secret (LLMROUTER_TOKEN) of scheduler, gateway,
	// agents and the bootstrap; admin calls and scrapes present it.
	Token string
	// WaitScheduleTimeout, when set, is llm_gateway.wait_schedule_timeout:
	// given to the bootstrap (max_message_timeout) as well as to the gateway.
	WaitScheduleTimeout time.Duration
	// Standin is the stand-in's binary (from Build); Envoy, when set, is a
	// real Envoy run instead.
	Standin, Envoy string
	// StartTimeout bounds one process coming up; Settle a change crossing
	// processes (agent reports every 200 ms, xDS pushes, metric scrapes).
	StartTimeout, Settle time.Duration
	// Client is the suite's HTTP client, kept on the Stack for its requests
	// (default: a new http.Client); its idle connections close at cleanup.
	Client *http.Client
}

// Engine is one enginesim and its agent.
type Engine struct {
	Proc, Agent *harness.Proc
	// Addr is the address the fleet knows the engine by.
	Addr string
	// Seed is the enginesim's --seed (it decides the text it answers).
	Seed int
	// With a pd proxy (Addr is then the proxy's): the enginesim's own
	// address and the agent's HTTP address.
	Sim, AgentHTTP string
}

// Dead reports whether the enginesim has exited.
func (e *Engine) Dead() bool {
	select {
	case <-e.Proc.Exited():
		return true
	default:
		return false
	}
}

// Stack is one whole llmrouter deployment on loopback.
type Stack struct {
	Opts Options

	Scheduler *harness.Proc // scheduler, or all-in-one
	Gateway   *harness.Proc // the separate gateway; nil with all-in-one
	// SchedulerSpec and GatewaySpec restart a process on the ports it bound.
	SchedulerSpec, GatewaySpec harness.Spec

	API, XDS, SchedulerHTTP string // scheduler gRPC API, ADS, HTTP
	ExtProc, GatewayHTTP    string // gateway ext_proc and HTTP (SchedulerHTTP with all-in-one)

	Engines []*Engine

	DataPlane     *harness.Proc // the stand-in or Envoy
	Listen, Admin string        // the data plane's listener and admin
	BootstrapPath string
	Client        *http.Client
}

// Start runs every process of a deployment and returns once the fleet is
// healthy on the scheduler and in the data plane, and a separate gateway is
// connected to the scheduler.
func Start(t *testing.T, o Options) *Stack {
	t.Helper()
	if o.Engines == 0 {
		o.Engines = 3
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	env := append([]string{}, o.Env...)
	if o.Token != "" {
		env = append(env, "LLMROUTER_TOKEN="+o.Token)
	}
	if o.WaitScheduleTimeout > 0 {
		env = append(env, "LLMROUTER_LLM_GATEWAY_WAIT_SCHEDULE_TIMEOUT="+o.WaitScheduleTimeout.String())
	}
	var policy []string
	if o.Policy != "" {
		policy = []string{"--policy", o.Policy}
	}
	s := &Stack{Opts: o, Client: o.Client}
	t.Cleanup(s.Client.CloseIdleConnections)

	if o.Split {
		// Ports below the ephemeral range: a killed process comes back on
		// the same ones (see startOnFreePorts).
		var l harness.Line
		s.Scheduler, l, s.SchedulerSpec = startOnFreePorts(t, o.StartTimeout, 3, "scheduler started", func(a []string) harness.Spec {
			return harness.Spec{Name: "scheduler", Env: env, Args: append([]string{"scheduler",
				"--listen", a[0], "--xds-listen", a[1], "--http-listen", a[2]}, policy...)}
		})
		s.API, s.XDS, s.SchedulerHTTP = l.Str("api"), l.Str("xds"), l.Str("http")
		s.Gateway, l, s.GatewaySpec = startOnFreePorts(t, o.StartTimeout, 2, "gateway started", func(a []string) harness.Spec {
			extproc := a[0]
			if o.GatewayListen != "" {
				extproc = o.GatewayListen // not restarted: may be :0
			}
			return harness.Spec{Name: "gateway", Env: append(append([]string{}, env...), o.GatewayEnv...), Args: []string{"gateway",
				"--listen", extproc, "--scheduler", s.API, "--http-listen", a[1]}}
		})
		s.ExtProc, s.GatewayHTTP = l.Str("ext_proc"), l.Str("http")
		if o.GatewayListen != "" {
			s.GatewaySpec.Args[2] = s.ExtProc
		}
	} else {
		env = append(env,
			"LLMROUTER_LLM_SCHEDULER_LISTEN=127.0.0.1:0", "LLMROUTER_LLM_SCHEDULER_XDS_LISTEN=127.0.0.1:0",
			"LLMROUTER_LLM_SCHEDULER_HTTP_LISTEN=127.0.0.1:0", "LLMROUTER_LLM_GATEWAY_LISTEN=127.0.0.1:0",
			"LLMROUTER_LLM_GATEWAY_HTTP_LISTEN=127.0.0.1:0")
		s.Scheduler = harness.Start(t, harness.Spec{Name: "all-in-one", Env: env, Args: append([]string{"all-in-one"}, policy...)})
		l := s.Scheduler.WaitLog(t, o.StartTimeout, "all-in-one started", nil)
		s.API, s.XDS, s.ExtProc, s.SchedulerHTTP = l.Str("api"), l.Str("xds"), l.Str("ext_proc"), l.Str("http")
		s.GatewayHTTP = s.SchedulerHTTP
	}

	if o.StartEngines != nil {
		o.StartEngines(t, s)
	} else {
		for i := 1; i <= o.Engines; i++ {
			if o.FixedEnginePorts {
				s.Engines = append(s.Engines, s.startEngineOnFreePort(t, i))
			} else {
				s.Engines = append(s.Engines, s.StartEngine(t, i, "127.0.0.1:0"))
			}
		}
	}
	s.WaitFleet(t, o.Settle)

	s.BootstrapPath = filepath.Join(t.TempDir(), "envoy.yaml")
	s.startDataPlane(t)
	if s.Gateway != nil {
		s.WaitGauge(t, o.Settle, s.GatewayHTTP, "llmrouter_gateway_degraded", 0)
	}
	return s
}

// StartEngine runs enginesim number i (its --seed) on addr and its agent.
func (s *Stack) StartEngine(t *testing.T, i int, addr string) *Engine {
	t.Helper()
	e := &Engine{Seed: i, Proc: harness.Start(t, s.engineSpec(i, addr))}
	e.Addr = e.Proc.WaitLog(t, s.Opts.StartTimeout, "enginesim serving", nil).Str("addr")
	e.Agent = s.StartAgent(t, fmt.Sprintf("agent-%d", i), e.Addr, e.Addr)
	return e
}

// startEngineOnFreePort is StartEngine on a port a restarted enginesim
// (Proc.Restart) comes back on.
func (s *Stack) startEngineOnFreePort(t *testing.T, i int) *Engine {
	t.Helper()
	p, l, _ := startOnFreePorts(t, s.Opts.StartTimeout, 1, "enginesim serving", func(a []string) harness.Spec {
		return s.engineSpec(i, a[0])
	})
	e := &Engine{Seed: i, Proc: p, Addr: l.Str("addr")}
	e.Agent = s.StartAgent(t, fmt.Sprintf("agent-%d", i), e.Addr, e.Addr)
	return e
}

func (s *Stack) engineSpec(i int, addr string) harness.Spec {
	args := append([]string{"enginesim", "--listen", addr, "--model", s.Opts.Model, "--seed", fmt.Sprint(i)}, s.Opts.EngineArgs...)
	return harness.Spec{Name: fmt.Sprintf("enginesim-%d", i), Args: args}
}

// startOnFreePorts starts the process spec makes of n addresses picked free
// below the kernel's ephemeral range (harness.FreeAddr) and waits for its
// line started; it returns the process, that line and the spec, which
// restarts it on the same ports. Not 127.0.0.1:0: an ephemeral port freed by
// a killed process can be handed to any other :0 listener or outgoing
// connection before the restart binds it again, and the clients redialling
// it (agents, gateway, data plane) can connect to themselves and hold it (CI:
// a restarted scheduler's 'bind: address already in use'). Should another
// process take a port before the first start binds it, it tries again on
// new ones.
func startOnFreePorts(t *testing.T, timeout time.Duration, n int, started string, spec func(addrs []string) harness.Spec) (*harness.Proc, harness.Line, harness.Spec) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		addrs := make([]string, n)
		for i := range addrs {
			addrs[i] = harness.FreeAddr(t)
		}
		sp := spec(addrs)
		p := harness.Start(t, sp)
		l, err := p.AwaitLog(timeout, started, nil)
		if err == nil {
			return p, l, sp
		}
		select {
		case <-p.Exited():
			if attempt < 3 && strings.Contains(p.Output(), "address already in use") {
				t.Logf("%s lost a port race (attempt %d); again on new ports", p.Name, attempt)
				continue
			}
		default:
		}
		t.Fatalf("%s: %v", p.Name, err)
	}
}

// StartAgent runs an agent probing engineAddr and advertising advertise,
// with extra flags.
func (s *Stack) StartAgent(t *testing.T, name, engineAddr, advertise string, extra ...string) *harness.Proc {
	t.Helper()
	env := []string{"LLMROUTER_AGENT_HTTP_LISTEN=127.0.0.1:0"}
	if s.Opts.Token != "" {
		env = append(env, "LLMROUTER_TOKEN="+s.Opts.Token)
	}
	return harness.Start(t, harness.Spec{Name: name, Env: env,
		Args: append([]string{"agent", "--engine-url", "http://" + engineAddr, "--advertise", advertise, "--scheduler", s.API}, extra...)})
}

// EngineAddrs lists the fleet's addresses.
func (s *Stack) EngineAddrs() []string {
	var out []string
	for _, e := range s.Engines {
		out = append(out, e.Addr)
	}
	return out
}

// RestartScheduler starts the separate scheduler again on its ports and
// returns when it logged it started.
func (s *Stack) RestartScheduler(t *testing.T) time.Time {
	t.Helper()
	s.Scheduler = harness.Start(t, s.SchedulerSpec)
	return s.Scheduler.WaitLog(t, s.Opts.StartTimeout, "scheduler started", nil).At
}

// RestartGateway starts the separate gateway again on its ports.
func (s *Stack) RestartGateway(t *testing.T) time.Time {
	t.Helper()
	s.Gateway = harness.Start(t, s.GatewaySpec)
	return s.Gateway.WaitLog(t, s.Opts.StartTimeout, "gateway started", nil).At
}

// Instance is what the tests read of /admin/instances.
type Instance struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Healthy bool   `json:"healthy"` // what its agent reports
	State   string `json:"state"`   // the scheduler's view: only "healthy" is picked
}

// Instances is the scheduler's /admin/instances.
func (s *Stack) Instances() ([]Instance, error) {
	var list []Instance
	err := harness.GetJSON("http://"+s.SchedulerHTTP+"/admin/instances", s.Opts.Token, &list)
	return list, err
}

// WaitFleet waits until the scheduler holds every engine healthy.
func (s *Stack) WaitFleet(t *testing.T, timeout time.Duration) {
	t.Helper()
	harness.Eventually(t, timeout, "every engine healthy on the scheduler", func() error {
		list, err := s.Instances()
		if err != nil {
			return err
		}
		healthy := map[string]bool{}
		for _, in := range list {
			if in.State == "healthy" {
				healthy[in.Address] = true
			}
		}
		for _, e := range s.Engines {
			if !healthy[e.Addr] {
				return fmt.Errorf("%s not healthy; fleet: %+v", e.Addr, list)
			}
		}
		return nil
	})
}

// startDataPlane runs Envoy or the stand-in on the rendered bootstrap. The
// bootstrap names its listener and admin ports, picked free a moment before:
// when another process took one meanwhile, it tries again on new ones.
func (s *Stack) startDataPlane(t *testing.T) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		s.Listen, s.Admin = harness.FreeAddr(t), harness.FreeAddr(t)
		s.renderBootstrap(t)
		if s.Opts.Envoy != "" {
			s.DataPlane = harness.Start(t, harness.Spec{Name: "envoy", Binary: s.Opts.Envoy, Args: []string{"-c", s.BootstrapPath,
				"--disable-hot-restart", "--log-level", "warn", "--concurrency", "2"}})
		} else {
			s.DataPlane = harness.Start(t, harness.Spec{Name: "standin", Binary: s.Opts.Standin, Args: []string{"-c", s.BootstrapPath}})
		}
		err := s.waitDataPlane()
		if err == nil {
			return
		}
		select {
		case <-s.DataPlane.Exited():
			if attempt < 3 && strings.Contains(strings.ToLower(s.DataPlane.Output()), "address already in use") {
				t.Logf("%s lost a port race (attempt %d); again on new ports", s.DataPlane.Name, attempt)
				continue
			}
		default:
		}
		t.Fatalf("%s: %v", s.DataPlane.Name, err)
	}
}

// renderBootstrap writes `llmrouter bootstrap` for this deployment's ports.
func (s *Stack) renderBootstrap(t *testing.T) {
	t.Helper()
	args := []string{"bootstrap", "--listen", s.Listen, "--admin", s.Admin, "--xds", s.XDS, "--extproc", s.ExtProc}
	if s.Opts.WaitScheduleTimeout > 0 {
		args = append(args, "--wait-schedule-timeout", s.Opts.WaitScheduleTimeout.String())
	}
	cmd := exec.Command(harness.Binary(t), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LLMROUTER_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// The token goes into the bootstrap as Envoy carries it.
	if s.Opts.Token != "" {
		cmd.Env = append(cmd.Env, "LLMROUTER_TOKEN="+s.Opts.Token)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("llmrouter %v: %v\n%s", args, err, stderr.String())
	}
	if err := os.WriteFile(s.BootstrapPath, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitDataPlane waits for the admin's /ready and for every engine in
// llm_backends.
func (s *Stack) waitDataPlane() error {
	deadline := time.Now().Add(s.Opts.StartTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.DataPlane.Exited():
			return fmt.Errorf("exited: %v", s.DataPlane.ExitErr())
		default:
		}
		var have map[string]bool
		if have, last = s.Endpoints(); last == nil {
			for _, e := range s.Engines {
				if !have[e.Addr] {
					last = fmt.Errorf("llm_backends lacks %s: %v", e.Addr, have)
				}
			}
			if last == nil {
				return nil
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("not ready with every engine within %s: %v", s.Opts.StartTimeout, last)
}

// Endpoints is the data plane's llm_backends membership once its admin says
// /ready (Envoy's /clusters?format=json shape; the stand-in serves the same).
func (s *Stack) Endpoints() (map[string]bool, error) {
	b, err := harness.Get("http://"+s.Admin+"/ready", "")
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
	if err := harness.GetJSON("http://"+s.Admin+"/clusters?format=json", "", &cs); err != nil {
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
