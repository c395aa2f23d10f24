package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/integration/harness"
)

const (
	model = "e2e-model"
	// startTimeout bounds one process coming up on a loaded 2-core machine.
	startTimeout = 20 * time.Second
	// settle bounds a change crossing processes (agent reports every 200 ms,
	// xDS pushes, metric scrapes).
	settle = 10 * time.Second
)

// options shape one system.
type options struct {
	policy string
	// split runs `llmrouter scheduler` and `llmrouter gateway` as separate
	// processes (a test kills one of them); otherwise `llmrouter all-in-one`.
	split bool
	// env adds configuration (LLMROUTER_*) to the scheduler and gateway.
	env []string
	// engineArgs are the timing flags of every enginesim.
	engineArgs []string
	// waitScheduleTimeout, when set, is llm_gateway.wait_schedule_timeout:
	// given to the bootstrap (max_message_timeout) as well as env.
	waitScheduleTimeout time.Duration
	// pd, vllm or sglang, runs a disaggregated fleet instead (pd_test.go):
	// one prefill engine and two decode engines behind pd proxies.
	pd string
}

// engine is one enginesim and its agent.
type engine struct {
	proc, agent *harness.Proc
	addr        string
	// With a pd proxy (addr is then the proxy's): the enginesim's own
	// address and the agent's HTTP address.
	sim, agentHTTP string
}

// system is one whole llmrouter deployment on loopback.
type system struct {
	t    *testing.T
	opts options

	sched *harness.Proc // scheduler, or all-in-one
	gw    *harness.Proc // the separate gateway; nil with all-in-one
	// schedSpec and gwSpec restart a killed process on the ports it bound.
	schedSpec, gwSpec harness.Spec

	api, xds, schedHTTP string // scheduler gRPC API, ADS, HTTP
	extproc, gwHTTP     string // gateway ext_proc and HTTP (schedHTTP with all-in-one)

	engines []*engine

	dp            *harness.Proc // Envoy or the stand-in
	listen, admin string        // the data plane's listener and admin
	client        *http.Client
	bootstrapPath string
}

// envoyBinary is real Envoy when available: ENVOY_BIN, else `envoy` on PATH.
func envoyBinary() string {
	if b := os.Getenv("ENVOY_BIN"); b != "" {
		return b
	}
	if b, err := exec.LookPath("envoy"); err == nil {
		return b
	}
	return ""
}

// startSystem runs every process of a deployment and returns once a chat
// completion through the data plane has been routed by a pick.
func startSystem(t *testing.T, o options) *system {
	t.Helper()
	began := time.Now()
	standin := binaries(t)
	if o.policy == "" {
		o.policy = "least-request"
	}
	if o.engineArgs == nil {
		o.engineArgs = []string{"--ttft", "20ms", "--itl", "40ms"}
	}
	env := append([]string{}, o.env...)
	if o.waitScheduleTimeout > 0 {
		env = append(env, "LLMROUTER_LLM_GATEWAY_WAIT_SCHEDULE_TIMEOUT="+o.waitScheduleTimeout.String())
	}
	s := &system{t: t, opts: o, client: &http.Client{
		Timeout:   60 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
	}}
	t.Cleanup(s.client.CloseIdleConnections)

	if o.split {
		// Ports the OS picked; a killed process comes back on the same ones.
		schedSpec := func(api, xds, http string) harness.Spec {
			return harness.Spec{Name: "scheduler", Env: env, Args: []string{"scheduler",
				"--listen", api, "--xds-listen", xds, "--http-listen", http, "--policy", o.policy}}
		}
		s.sched = harness.Start(t, schedSpec("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"))
		l := s.sched.WaitLog(t, startTimeout, "scheduler started", nil)
		s.api, s.xds, s.schedHTTP = l.Str("api"), l.Str("xds"), l.Str("http")
		s.schedSpec = schedSpec(s.api, s.xds, s.schedHTTP)
		gwSpec := func(extproc, http string) harness.Spec {
			return harness.Spec{Name: "gateway", Env: env, Args: []string{"gateway",
				"--listen", extproc, "--scheduler", s.api, "--http-listen", http}}
		}
		s.gw = harness.Start(t, gwSpec("127.0.0.1:0", "127.0.0.1:0"))
		l = s.gw.WaitLog(t, startTimeout, "gateway started", nil)
		s.extproc, s.gwHTTP = l.Str("ext_proc"), l.Str("http")
		s.gwSpec = gwSpec(s.extproc, s.gwHTTP)
	} else {
		env = append(env,
			"LLMROUTER_LLM_SCHEDULER_LISTEN=127.0.0.1:0", "LLMROUTER_LLM_SCHEDULER_XDS_LISTEN=127.0.0.1:0",
			"LLMROUTER_LLM_SCHEDULER_HTTP_LISTEN=127.0.0.1:0", "LLMROUTER_LLM_GATEWAY_LISTEN=127.0.0.1:0",
			"LLMROUTER_LLM_GATEWAY_HTTP_LISTEN=127.0.0.1:0")
		s.sched = harness.Start(t, harness.Spec{Name: "all-in-one", Env: env, Args: []string{"all-in-one", "--policy", o.policy}})
		l := s.sched.WaitLog(t, startTimeout, "all-in-one started", nil)
		s.api, s.xds, s.extproc, s.schedHTTP = l.Str("api"), l.Str("xds"), l.Str("ext_proc"), l.Str("http")
		s.gwHTTP = s.schedHTTP
	}

	for i := 1; i <= 3 && o.pd == ""; i++ {
		args := append([]string{"enginesim", "--listen", "127.0.0.1:0", "--model", model, "--seed", fmt.Sprint(i)}, o.engineArgs...)
		e := &engine{proc: harness.Start(t, harness.Spec{Name: fmt.Sprintf("enginesim-%d", i), Args: args})}
		e.addr = e.proc.WaitLog(t, startTimeout, "enginesim serving", nil).Str("addr")
		e.agent = harness.Start(t, harness.Spec{Name: fmt.Sprintf("agent-%d", i),
			Env:  []string{"LLMROUTER_AGENT_HTTP_LISTEN=127.0.0.1:0"},
			Args: []string{"agent", "--engine-url", "http://" + e.addr, "--advertise", e.addr, "--scheduler", s.api}})
		s.engines = append(s.engines, e)
	}
	if o.pd != "" {
		s.startPDEngines(t)
	}
	s.waitFleet(t, settle)

	s.bootstrapPath = filepath.Join(t.TempDir(), "envoy.yaml")
	s.startDataPlane(t, standin)

	if s.gw != nil {
		s.waitGauge(t, settle, s.gwHTTP, "llmrouter_gateway_degraded", 0)
	}
	// Routed end to end: a completion through the data plane, counted as
	// picked by the gateway.
	harness.Eventually(t, settle, "a routed completion through the data plane", func() error {
		r := s.chat(context.Background(), chatReq{maxTokens: 1})
		if err := r.failure(); err != nil {
			return err
		}
		if v := s.gwCounter(t, "llmrouter_gateway_requests_total", "outcome", "routed"); v < 1 {
			return fmt.Errorf("gateway routed %g requests", v)
		}
		return nil
	})
	t.Logf("system up in %s: %s policy %s, data plane %s on %s, engines %v", time.Since(began).Round(time.Millisecond),
		map[bool]string{true: "scheduler + gateway", false: "all-in-one"}[o.split], o.policy, s.dp.Name, s.listen, s.engineAddrs())
	return s
}

func (s *system) engineAddrs() []string {
	var out []string
	for _, e := range s.engines {
		out = append(out, e.addr)
	}
	return out
}

// startDataPlane runs Envoy or the stand-in on the rendered bootstrap. The
// bootstrap names its listener and admin ports, picked free a moment before:
// when another process took one meanwhile, it tries again on new ones.
func (s *system) startDataPlane(t *testing.T, standin string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		s.listen, s.admin = harness.FreeAddr(t), harness.FreeAddr(t)
		s.renderBootstrap(t)
		if bin := envoyBinary(); bin != "" {
			s.dp = harness.Start(t, harness.Spec{Name: "envoy", Binary: bin, Args: []string{"-c", s.bootstrapPath,
				"--disable-hot-restart", "--log-level", "warn", "--concurrency", "2"}})
		} else {
			s.dp = harness.Start(t, harness.Spec{Name: "standin", Binary: standin, Args: []string{"-c", s.bootstrapPath}})
		}
		err := s.waitDataPlane()
		if err == nil {
			return
		}
		select {
		case <-s.dp.Exited():
			if attempt < 3 && strings.Contains(strings.ToLower(s.dp.Output()), "address already in use") {
				t.Logf("%s lost a port race (attempt %d); again on new ports", s.dp.Name, attempt)
				continue
			}
		default:
		}
		t.Fatalf("%s: %v", s.dp.Name, err)
	}
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

// renderBootstrap writes `llmrouter bootstrap` for this system's ports.
func (s *system) renderBootstrap(t *testing.T) {
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
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("llmrouter %v: %v\n%s", args, err, stderr.String())
	}
	if err := os.WriteFile(s.bootstrapPath, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// instanceView is what the tests read of /admin/instances.
type instanceView struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Healthy bool   `json:"healthy"`
}

// waitFleet waits until the scheduler holds the three engines healthy.
func (s *system) waitFleet(t *testing.T, timeout time.Duration) {
	t.Helper()
	harness.Eventually(t, timeout, "three healthy instances on the scheduler", func() error {
		var list []instanceView
		if err := harness.GetJSON("http://"+s.schedHTTP+"/admin/instances", "", &list); err != nil {
			return err
		}
		healthy := map[string]bool{}
		for _, in := range list {
			if in.Healthy {
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

// waitDataPlane waits for the admin's /ready and for the three engines in
// llm_backends (Envoy's /clusters?format=json shape; the stand-in serves
// the same).
func (s *system) waitDataPlane() error {
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.dp.Exited():
			return fmt.Errorf("exited: %v", s.dp.ExitErr())
		default:
		}
		if last = s.dataPlaneReady(); last == nil {
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("not ready with the three engines within %s: %v", startTimeout, last)
}

func (s *system) dataPlaneReady() error {
	b, err := harness.Get("http://"+s.admin+"/ready", "")
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(b)) != "LIVE" {
		return fmt.Errorf("/ready: %s", b)
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
		return err
	}
	for _, c := range cs.ClusterStatuses {
		if c.Name != "llm_backends" {
			continue
		}
		have := map[string]bool{}
		for _, h := range c.HostStatuses {
			have[fmt.Sprintf("%s:%d", h.Address.SocketAddress.Address, h.Address.SocketAddress.PortValue)] = true
		}
		for _, e := range s.engines {
			if !have[e.addr] {
				return fmt.Errorf("llm_backends lacks %s: %v", e.addr, have)
			}
		}
		return nil
	}
	return fmt.Errorf("no llm_backends cluster yet")
}

// ---------------------------------------------------------------- metrics

// sum adds every series of name whose labels include the pairs given.
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
	m, err := harness.Scrape(addr, "")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return sum(m, name, labels...)
}

// gwCounter sums a gateway series (the all-in-one serves the gateway's
// metrics on its one HTTP port).
func (s *system) gwCounter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	return s.counter(t, s.gwHTTP, name, labels...)
}

func (s *system) schedCounter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	return s.counter(t, s.schedHTTP, name, labels...)
}

// waitGauge polls name on addr until it equals want.
func (s *system) waitGauge(t *testing.T, timeout time.Duration, addr, name string, want float64) {
	t.Helper()
	harness.Eventually(t, timeout, fmt.Sprintf("%s = %g on %s", name, want, addr), func() error {
		m, err := harness.Scrape(addr, "")
		if err != nil {
			return err
		}
		if v, ok := m.Value(name); !ok || v != want {
			return fmt.Errorf("%s", m.Series(name))
		}
		return nil
	})
}

// served returns each engine's completed requests (vllm:request_success_total
// over every finish reason), by address.
func (s *system) served(t *testing.T) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, e := range s.engines {
		out[e.addr] = s.counter(t, e.addr, "vllm:request_success_total")
	}
	return out
}

func delta(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		out[k] = v - before[k]
	}
	return out
}

// ---------------------------------------------------------------- clients

// chatReq is one chat completion through the data plane.
type chatReq struct {
	maxTokens int
	noStream  bool
	prompt    string
	header    http.Header
}

// usage is OpenAI's token usage.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

// sseEvent is one `data:` line and when the client read it.
type sseEvent struct {
	at   time.Time
	data string
}

// reply is what the client saw.
type reply struct {
	status     int
	header     http.Header
	body       []byte // a non-streaming or error body
	events     []sseEvent
	done       bool // ended with data: [DONE] (streaming) or a JSON body (not)
	usage      *usage
	start, end time.Time
	err        error
}

// failure says why r is not a complete 200 answer (nil when it is).
func (r reply) failure() error {
	switch {
	case r.err != nil:
		return r.err
	case r.status != http.StatusOK:
		return fmt.Errorf("status %d: %s", r.status, bytes.TrimSpace(r.body))
	case !r.done:
		return fmt.Errorf("incomplete answer after %d events", len(r.events))
	}
	return nil
}

// chat sends one chat completion to the data plane's listener and reads the
// answer to its end, timing every SSE event.
func (s *system) chat(ctx context.Context, q chatReq) reply {
	if q.maxTokens == 0 {
		q.maxTokens = 8
	}
	if q.prompt == "" {
		q.prompt = "Tell me about routing requests to inference engines."
	}
	body, _ := json.Marshal(map[string]any{
		"model":          model,
		"messages":       []map[string]string{{"role": "user", "content": q.prompt}},
		"max_tokens":     q.maxTokens,
		"stream":         !q.noStream,
		"stream_options": map[string]any{"include_usage": true},
	})
	if q.noStream {
		body, _ = json.Marshal(map[string]any{
			"model":      model,
			"messages":   []map[string]string{{"role": "user", "content": q.prompt}},
			"max_tokens": q.maxTokens,
		})
	}
	r := reply{start: time.Now()}
	defer func() { r.end = time.Now() }()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.listen+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("Content-Type", "application/json")
	for k, vs := range q.header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		r.err = err
		r.end = time.Now()
		return r
	}
	defer resp.Body.Close()
	r.status, r.header = resp.StatusCode, resp.Header
	if resp.StatusCode != http.StatusOK || q.noStream {
		r.body, r.err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if r.err == nil && resp.StatusCode == http.StatusOK {
			var full struct{ Usage *usage }
			if err := json.Unmarshal(r.body, &full); err != nil {
				r.err = fmt.Errorf("answer is not JSON: %v: %s", err, r.body)
			} else {
				r.usage, r.done = full.Usage, true
			}
		}
		r.end = time.Now()
		return r
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if data, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "data: "); ok {
			r.events = append(r.events, sseEvent{at: time.Now(), data: data})
			if data == "[DONE]" {
				r.done = true
			} else if r.done {
				r.done = false // something after [DONE]
			} else {
				var c struct{ Usage *usage }
				if json.Unmarshal([]byte(data), &c) == nil && c.Usage != nil {
					r.usage = c.Usage
				}
			}
		}
		if err != nil {
			if err != io.EOF {
				r.err = fmt.Errorf("reading the stream after %d events: %w", len(r.events), err)
			}
			break
		}
	}
	r.end = time.Now()
	return r
}

// load runs workers goroutines sending requests back to back until stopped,
// keeping every reply.
type load struct {
	stopc chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	out   []reply
}

func (s *system) startLoad(workers int, q chatReq) *load {
	l := &load{stopc: make(chan struct{})}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stopc:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				r := s.chat(ctx, q)
				cancel()
				l.mu.Lock()
				l.out = append(l.out, r)
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// replies so far (a copy).
func (l *load) replies() []reply {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]reply(nil), l.out...)
}

// stop ends the load and returns every reply.
func (l *load) stop() []reply {
	close(l.stopc)
	l.wg.Wait()
	return l.replies()
}

// failed lists the failed replies, with when they started relative to t0.
func failed(rs []reply, t0 time.Time) []string {
	var out []string
	for _, r := range rs {
		if err := r.failure(); err != nil {
			out = append(out, fmt.Sprintf("at %+.3fs: %v", r.start.Sub(t0).Seconds(), err))
		}
	}
	return out
}

// slowest is the longest reply that started within [from, to).
func slowest(rs []reply, from, to time.Time) time.Duration {
	var d time.Duration
	for _, r := range rs {
		if !r.start.Before(from) && r.start.Before(to) {
			d = max(d, r.end.Sub(r.start))
		}
	}
	return d
}

// waitFor polls cond every 10 ms until it holds and returns how long that
// took from since; it fails the test after timeout.
func waitFor(t *testing.T, since time.Time, timeout time.Duration, what string, cond func() (bool, error)) time.Duration {
	t.Helper()
	var last error
	for time.Since(since) < timeout {
		ok, err := cond()
		if ok {
			return time.Since(since)
		}
		last = err
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s of the start (%v)", what, timeout, last)
	return 0
}
