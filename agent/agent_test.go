package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/servetest"
)

// ---------------------------------------------------------------- fake vLLM

// fakeVLLM speaks the part of vLLM the agent uses: /health, /metrics (V1
// names, engine label), /v1/models (with a LoRA adapter) and /version. It
// can stop and start again on the same address, like a restarted engine.
type fakeVLLM struct {
	addr string

	mu        sync.Mutex
	running   int
	waiting   int
	genTokens float64
	numBlocks int
	body      string // served at /metrics instead of the V1 dump, when set
	srv       *http.Server
	done      chan struct{}
	// adapters are the LoRA adapters /v1/models lists (parent m), which
	// answers 500 while modelsDown.
	adapters   []string
	modelsDown bool
	version    string // /version's, when set
}

func newFakeVLLM(t *testing.T) *fakeVLLM {
	t.Helper()
	e := &fakeVLLM{addr: servetest.FreeAddr(t), numBlocks: 1000, adapters: []string{"sql-lora"}} // start binds it, again after a restart
	t.Cleanup(e.stop)
	return e
}

func (e *fakeVLLM) set(f func(e *fakeVLLM)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f(e)
}

func (e *fakeVLLM) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {})
	mux.HandleFunc("/version", func(w http.ResponseWriter, _ *http.Request) {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.version != "" {
			fmt.Fprintf(w, `{"version":%q}`, e.version)
			return
		}
		fmt.Fprint(w, `{"version":"0.10.0"}`)
	})
	mux.HandleFunc("/v1/models", func(w http.ResponseWriter, _ *http.Request) {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.modelsDown {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, `{"object":"list","data":[{"id":"m","object":"model","owned_by":"vllm","root":"m","parent":null}`)
		for _, a := range e.adapters {
			fmt.Fprintf(w, `,{"id":%q,"object":"model","owned_by":"vllm","root":"/adapters/%s","parent":"m"}`, a, a)
		}
		fmt.Fprint(w, `]}`)
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.genTokens += 10 // generation progresses between scrapes
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if e.body != "" {
			fmt.Fprint(w, e.body)
			return
		}
		fmt.Fprintf(w, `# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} %d
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} %d
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 100
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="m"} %g
# TYPE vllm:generation_tokens_created gauge
vllm:generation_tokens_created{engine="0",model_name="m"} 1.75e9
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="%d"} 1
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="2",running_lora_adapters="sql-lora",waiting_lora_adapters="chat-lora"} 1.75e9
`, e.running, e.waiting, e.genTokens, e.numBlocks)
	})
	return mux
}

func (e *fakeVLLM) start(t *testing.T) {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port may linger a moment after a stop
		if ln, err = net.Listen("tcp", e.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: e.handler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	e.mu.Lock()
	e.srv, e.done = srv, done
	e.mu.Unlock()
}

func (e *fakeVLLM) stop() {
	e.mu.Lock()
	srv, done := e.srv, e.done
	e.srv = nil
	e.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
		<-done
	}
}

// ---------------------------------------------------------------- fake scheduler

// fakeScheduler is a real gRPC AgentService: it acknowledges every Register,
// records every message, and can send commands down the open stream.
type fakeScheduler struct {
	pb.UnimplementedAgentServiceServer
	addr string
	msgs chan *pb.AgentMessage

	mu     sync.Mutex
	srv    *grpc.Server
	done   chan struct{}
	stream pb.AgentService_ConnectServer
	sendMu sync.Mutex
	// refuse, when set, ends every stream at once with it.
	refuse error
}

func newFakeScheduler(t *testing.T) *fakeScheduler {
	t.Helper()
	s := &fakeScheduler{msgs: make(chan *pb.AgentMessage, 10000)}
	// Not :0: tests restart it on this address after the agent redialled
	// it (servetest.FreeAddr says why an ephemeral port would not do).
	s.start(t, servetest.FreeAddr(t))
	t.Cleanup(s.stop)
	return s
}

func (s *fakeScheduler) start(t *testing.T, addr string) {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterAgentServiceServer(srv, s)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	s.mu.Lock()
	s.addr, s.srv, s.done = ln.Addr().String(), srv, done
	s.mu.Unlock()
}

func (s *fakeScheduler) stop() {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Stop()
		<-done
	}
}

func (s *fakeScheduler) send(m *pb.SchedulerMessage) error {
	s.mu.Lock()
	st := s.stream
	s.mu.Unlock()
	if st == nil {
		return errors.New("no stream")
	}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return st.Send(m)
}

func (s *fakeScheduler) Connect(stream pb.AgentService_ConnectServer) error {
	s.mu.Lock()
	s.stream = stream
	refuse := s.refuse
	s.mu.Unlock()
	if refuse != nil {
		return refuse
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			return err
		}
		if r := msg.GetRegister(); r != nil {
			s.sendMu.Lock()
			err := stream.Send(&pb.SchedulerMessage{Msg: &pb.SchedulerMessage_Registered{Registered: &pb.RegisterAck{
				InstanceId: r.GetAddress(), ReportInterval: r.GetReportInterval()}}})
			s.sendMu.Unlock()
			if err != nil {
				return err
			}
		}
		s.msgs <- msg
	}
}

// next waits for a message accepted by pred, discarding others.
func (s *fakeScheduler) next(t *testing.T, what string, timeout time.Duration, pred func(*pb.AgentMessage) bool) *pb.AgentMessage {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m := <-s.msgs:
			if pred(m) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %s within %s", what, timeout)
			return nil
		}
	}
}

func (s *fakeScheduler) drain() {
	for {
		select {
		case <-s.msgs:
		default:
			return
		}
	}
}

func isRegister(m *pb.AgentMessage) bool { return m.GetRegister() != nil }

// reportOf returns the report a message carries (a Register's initial one).
func reportOf(m *pb.AgentMessage) *pb.Report {
	if r := m.GetRegister(); r != nil {
		return r.GetInitial()
	}
	return m.GetReport()
}

// ---------------------------------------------------------------- harness

func startAgent(t *testing.T, opts Options, log *zap.Logger) (*Agent, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	a, err := New(opts, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("agent did not stop within 10s of its context ending")
		}
	})
	return a, reg
}

func testOptions(engine *fakeVLLM, sched *fakeScheduler) Options {
	return Options{
		EngineURL: "http://" + engine.addr, Advertise: "10.1.2.3:8000", SchedulerAddress: sched.addr,
		Role: "both", ReportInterval: 200 * time.Millisecond, ScrapeTimeout: time.Second,
		DialOptions:  []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		AgentVersion: "test", BackoffBase: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
		ProgressEvery: 200 * time.Millisecond,
	}
}

func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---------------------------------------------------------------- tests

func TestAgentLifecycle(t *testing.T) {
	engine := newFakeVLLM(t)
	sched := newFakeScheduler(t)
	core, logs := observer.New(zap.InfoLevel)
	a, reg := startAgent(t, testOptions(engine, sched), zap.New(core))

	// The engine is not up yet: the agent waits, says what is missing, and
	// registers nothing.
	eventually(t, "a progress log naming the missing health check", 5*time.Second, func() bool {
		for _, e := range logs.FilterMessage("waiting for engine").All() {
			if strings.Contains(e.ContextMap()["missing"].(string), "connection refused") {
				return true
			}
		}
		return false
	})
	if err := a.Ready(); err == nil || !strings.Contains(err.Error(), "engine not ready") {
		t.Fatalf("Ready before the engine = %v", err)
	}
	select {
	case m := <-sched.msgs:
		t.Fatalf("sent %v before the engine was ready", m)
	default:
	}

	engine.set(func(e *fakeVLLM) { e.running, e.waiting = 2, 1 })
	engine.start(t)

	// Registration carries what the engine told us.
	reg1 := sched.next(t, "registration", 10*time.Second, isRegister).GetRegister()
	if reg1.GetAddress() != "10.1.2.3:8000" || reg1.GetEngine() != "vllm" || reg1.GetEngineVersion() != "0.10.0" ||
		!slices.Equal(reg1.GetModels(), []string{"m"}) || !slices.Equal(reg1.GetLoraAdapters(), []string{"sql-lora"}) ||
		reg1.GetNumGpuBlocks() != 1000 || reg1.GetBlockSize() != 16 || reg1.GetRole() != pb.Role_ROLE_BOTH ||
		reg1.GetReportInterval().AsDuration() != 200*time.Millisecond {
		t.Fatalf("register = %v", reg1)
	}
	if in := reg1.GetInitial(); !in.GetHealthy() || in.GetRunning() != 2 || in.GetWaiting() != 1 || in.GetKvCacheUsage() != 0.25 {
		t.Fatalf("initial report = %v", in)
	}
	// lora_requests_info's three labels reach the report.
	if in := reg1.GetInitial(); !slices.Equal(in.GetLoraAdapters(), []string{"sql-lora"}) ||
		!slices.Equal(in.GetWaitingLoraAdapters(), []string{"chat-lora"}) || in.GetMaxLora() != 2 {
		t.Fatalf("initial report's LoRA adapters = %q, waiting %q, max_lora %d; want [sql-lora], [chat-lora], 2",
			in.GetLoraAdapters(), in.GetWaitingLoraAdapters(), in.GetMaxLora())
	}
	if !reg1.GetInitial().GetLoraStateKnown() {
		t.Error("initial report from an engine exporting lora_requests_info: lora_state_known false, want true")
	}
	eventually(t, "readiness", 5*time.Second, func() bool { return a.Ready() == nil })
	if v := value(t, a.met.connected); v != 1 {
		t.Errorf("llmrouter_agent_scheduler_connected = %v, want 1", v)
	}

	// Reports follow the engine's running count, and the generation rate is
	// derived from the counter's growth (10 tokens per scrape here).
	engine.set(func(e *fakeVLLM) { e.running = 5 })
	rep := reportOf(sched.next(t, "a report with running=5", 5*time.Second, func(m *pb.AgentMessage) bool {
		return m.GetReport().GetRunning() == 5
	}))
	if rep.GetGenerationTokensPerSecond() <= 0 || rep.GetPromptTokensTotal() != 100 || rep.GetSequence() == 0 {
		t.Errorf("report = %v, want a positive generation rate, the prompt total and a sequence", rep)
	}
	engine.set(func(e *fakeVLLM) { e.running = 0 })
	sched.next(t, "a report with running=0", 5*time.Second, func(m *pb.AgentMessage) bool {
		return m.GetReport() != nil && m.GetReport().GetRunning() == 0
	})

	// Engine stops: the next report says unhealthy, within a second.
	sched.drain()
	stopped := time.Now()
	engine.stop()
	down := sched.next(t, "an unhealthy report", 5*time.Second, func(m *pb.AgentMessage) bool {
		return m.GetReport() != nil && !m.GetReport().GetHealthy()
	})
	took := time.Since(stopped)
	t.Logf("unhealthy reported %s after the engine stopped", took)
	if took > time.Second {
		t.Errorf("unhealthy reported %s after the engine stopped, want under 1s", took)
	}
	if r := down.GetReport().GetUnhealthyReason(); !strings.Contains(r, "connection refused") {
		t.Errorf("unhealthy_reason = %q, want it to say connection refused", r)
	}
	if err := a.Ready(); err == nil || !strings.Contains(err.Error(), "engine unhealthy") {
		t.Errorf("Ready with the engine down = %v", err)
	}

	// Engine restarts with a larger cache: the agent re-registers with it.
	engine.set(func(e *fakeVLLM) { e.numBlocks, e.running = 2000, 3 })
	engine.start(t)
	reg2 := sched.next(t, "re-registration", 10*time.Second, isRegister).GetRegister()
	if reg2.GetNumGpuBlocks() != 2000 || !reg2.GetInitial().GetHealthy() || reg2.GetInitial().GetRunning() != 3 || reg2.GetEngineUnchanged() {
		t.Errorf("re-register = %v", reg2)
	}
	sched.next(t, "a healthy report", 5*time.Second, func(m *pb.AgentMessage) bool {
		return m.GetReport() != nil && m.GetReport().GetHealthy()
	})

	// Scheduler commands: re-register on request, record a drain.
	if err := sched.send(&pb.SchedulerMessage{Msg: &pb.SchedulerMessage_Command{Command: &pb.Command{Kind: pb.Command_KIND_REREGISTER, Reason: "state lost"}}}); err != nil {
		t.Fatal(err)
	}
	sched.next(t, "registration on request", 5*time.Second, isRegister)
	if err := sched.send(&pb.SchedulerMessage{Msg: &pb.SchedulerMessage_Command{Command: &pb.Command{Kind: pb.Command_KIND_DRAIN}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "drain recorded", 5*time.Second, a.Draining)
	if err := sched.send(&pb.SchedulerMessage{Msg: &pb.SchedulerMessage_Command{Command: &pb.Command{Kind: pb.Command_KIND_RESUME}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "resume recorded", 5*time.Second, func() bool { return !a.Draining() })

	// Scheduler goes away: the agent keeps running, says so, and registers
	// again when a scheduler listens on the address once more.
	addr := sched.addr
	sched.stop()
	eventually(t, "readiness reflecting the lost scheduler", 5*time.Second, func() bool {
		err := a.Ready()
		return err != nil && strings.Contains(err.Error(), "scheduler not connected")
	})
	time.Sleep(time.Second) // several failed reconnects
	sched.drain()
	sched.start(t, addr)
	reg3 := sched.next(t, "registration with the returned scheduler", 10*time.Second, isRegister).GetRegister()
	if reg3.GetNumGpuBlocks() != 2000 || !reg3.GetInitial().GetHealthy() {
		t.Errorf("register after reconnect = %v", reg3)
	}
	eventually(t, "readiness after reconnect", 5*time.Second, func() bool { return a.Ready() == nil })
	if n := value(t, a.met.reconnects); n < 1 {
		t.Errorf("reconnects = %v", n)
	}

	// The agent's own series are on the registry it was given.
	names := map[string]bool{}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		names[f.GetName()] = true
	}
	for _, n := range []string{"llmrouter_agent_scrape_errors_total", "llmrouter_agent_scrape_duration_seconds", "llmrouter_agent_scheduler_connected"} {
		if !names[n] {
			t.Errorf("metric %s not registered", n)
		}
	}
	if v := value(t, a.met.scrapeErrors.WithLabelValues("health")); v == 0 {
		t.Error("health probe failures were not counted")
	}
}

func TestAgentStatedBackendWinsAndMismatchLoggedOnce(t *testing.T) {
	engine := newFakeVLLM(t)
	engine.start(t)
	sched := newFakeScheduler(t)
	core, logs := observer.New(zap.InfoLevel)
	opts := testOptions(engine, sched)
	opts.Engine = "sglang"
	opts.Role = "decode"
	startAgent(t, opts, zap.New(core))

	r := sched.next(t, "registration", 10*time.Second, isRegister).GetRegister()
	if r.GetEngine() != "sglang" || r.GetRole() != pb.Role_ROLE_DECODE {
		t.Fatalf("register = %v, want the stated engine and role", r)
	}
	// A restart makes the agent detect again; the mismatch is not repeated.
	engine.stop()
	sched.next(t, "unhealthy", 5*time.Second, func(m *pb.AgentMessage) bool { return m.GetReport() != nil && !m.GetReport().GetHealthy() })
	engine.start(t)
	sched.next(t, "re-registration", 10*time.Second, isRegister)
	if n := logs.FilterMessageSnippet("infer_backend").Len(); n != 1 {
		t.Errorf("mismatch logged %d times, want once", n)
	}
}

func TestAgentMetricsFailureMarksUnhealthy(t *testing.T) {
	// Health passes but /metrics turns into HTML: after a few failures the
	// engine is reported unhealthy with the parse error as the reason.
	var broken sync.Map
	engine := newFakeVLLM(t)
	base := engine.handler()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := broken.Load("yes"); ok && r.URL.Path == "/metrics" {
			fmt.Fprint(w, "<html>maintenance</html>")
			return
		}
		base.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	sched := newFakeScheduler(t)
	opts := testOptions(engine, sched)
	opts.EngineURL = "http://" + ln.Addr().String()
	startAgent(t, opts, zap.NewNop())
	sched.next(t, "registration", 10*time.Second, isRegister)
	broken.Store("yes", true)
	m := sched.next(t, "unhealthy", 10*time.Second, func(m *pb.AgentMessage) bool { return m.GetReport() != nil && !m.GetReport().GetHealthy() })
	if r := m.GetReport().GetUnhealthyReason(); !strings.Contains(r, "not Prometheus text") {
		t.Errorf("reason = %q", r)
	}
	broken.Delete("yes")
	sched.next(t, "re-registration after metrics recover", 10*time.Second, isRegister)
}

func TestNewRejectsBadOptions(t *testing.T) {
	good := Options{EngineURL: "http://127.0.0.1:8000", Advertise: "10.0.0.1:8000", SchedulerAddress: "127.0.0.1:18001"}
	cases := map[string]func(o *Options){
		"agent.advertise":           func(o *Options) { o.Advertise = "" },
		"want ip:port":              func(o *Options) { o.Advertise = "engine.local:8000" },
		"unspecified IP":            func(o *Options) { o.Advertise = "0.0.0.0:8000" },
		"agent.engine_url":          func(o *Options) { o.EngineURL = "127.0.0.1:8000" },
		"agent.scheduler_address":   func(o *Options) { o.SchedulerAddress = "" },
		"llm_gateway.infer_backend": func(o *Options) { o.Engine = "ollama" },
		"agent.role":                func(o *Options) { o.Role = "router" },
		"agent.metric_map.running":  func(o *Options) { o.MetricMap = map[string]string{"running": "a b"} },
	}
	for want, mutate := range cases {
		o := good
		mutate(&o)
		_, err := New(o, zap.NewNop(), prometheus.NewRegistry())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v", want, err)
		}
	}
	if _, err := New(good, zap.NewNop(), prometheus.NewRegistry()); err != nil {
		t.Errorf("good options: %v", err)
	}
}

// value reads a single-series counter or gauge.
func value(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var m dto.Metric
	if err := (<-ch).Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// TestAgentReportsLoRAStateWhenTheEngineSaysIt: an engine exporting
// lora_requests_info (the real V0 dump: one series, no adapter running or
// waiting) has its adapter state reported as known, and none running,
// although /v1/models lists an adapter it serves; registration still names
// that adapter. The same dump without lora_requests_info says nothing of
// the engine's adapters: not known, and the reports name the served one as
// before.
func TestAgentReportsLoRAStateWhenTheEngineSaysIt(t *testing.T) {
	dump := string(readFixture(t, "vllm-v0-aibrix-docs.txt"))
	var stripped []string
	for _, l := range strings.Split(dump, "\n") {
		if !strings.Contains(l, "vllm:lora_requests_info") {
			stripped = append(stripped, l)
		}
	}
	without := strings.Join(stripped, "\n")
	if without == dump || !strings.Contains(dump, `running_lora_adapters=""`) {
		t.Fatal("the fixture no longer has the one idle lora_requests_info series this test is about")
	}
	for _, tc := range []struct {
		name  string
		body  string
		known bool
		loras []string
	}{
		{"lora_requests_info present", dump, true, nil},
		{"lora_requests_info absent", without, false, []string{"sql-lora"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			engine := newFakeVLLM(t)
			engine.set(func(e *fakeVLLM) { e.body = tc.body })
			engine.start(t)
			sched := newFakeScheduler(t)
			startAgent(t, testOptions(engine, sched), zap.NewNop())
			reg := sched.next(t, "registration", 10*time.Second, isRegister).GetRegister()
			if !slices.Equal(reg.GetLoraAdapters(), []string{"sql-lora"}) {
				t.Errorf("register's lora_adapters = %q, want [sql-lora] (what /v1/models serves)", reg.GetLoraAdapters())
			}
			for _, r := range []*pb.Report{reg.GetInitial(), reportOf(sched.next(t, "a report", 5*time.Second, func(m *pb.AgentMessage) bool { return m.GetReport() != nil }))} {
				if r.GetLoraStateKnown() != tc.known || !slices.Equal(r.GetLoraAdapters(), tc.loras) || len(r.GetWaitingLoraAdapters()) != 0 {
					t.Errorf("report: lora_state_known %v, lora_adapters %q, waiting %q; want %v, %q, none",
						r.GetLoraStateKnown(), r.GetLoraAdapters(), r.GetWaitingLoraAdapters(), tc.known, tc.loras)
				}
			}
		})
	}
}

func TestAgentReRegistersAfterQuickRestart(t *testing.T) {
	// The engine restarts between two polls: health never fails, but its
	// counters start again from zero, so the agent learns it anew.
	engine := newFakeVLLM(t)
	engine.set(func(e *fakeVLLM) { e.genTokens = 1e6 })
	engine.start(t)
	sched := newFakeScheduler(t)
	startAgent(t, testOptions(engine, sched), zap.NewNop())
	if r := sched.next(t, "registration", 10*time.Second, isRegister).GetRegister(); r.GetNumGpuBlocks() != 1000 {
		t.Fatalf("register = %v", r)
	}
	engine.set(func(e *fakeVLLM) { e.genTokens, e.numBlocks = 0, 3000 })
	r := sched.next(t, "re-registration after the counter reset", 10*time.Second, isRegister).GetRegister()
	if r.GetNumGpuBlocks() != 3000 || !r.GetInitial().GetHealthy() {
		t.Errorf("re-register = %v", r)
	}
	// The rate across the reset is not negative.
	if g := r.GetInitial().GetGenerationTokensPerSecond(); g < 0 {
		t.Errorf("generation rate across a reset = %v", g)
	}
}

func TestAgentNewStreamClearsDrain(t *testing.T) {
	// A drain belongs to one registration on one scheduler: after the
	// scheduler restarts (it registers the instance anew, undrained) the
	// agent must not keep saying it is drained.
	engine := newFakeVLLM(t)
	engine.start(t)
	sched := newFakeScheduler(t)
	a, _ := startAgent(t, testOptions(engine, sched), zap.NewNop())
	sched.next(t, "registration", 10*time.Second, isRegister)
	if err := sched.send(&pb.SchedulerMessage{Msg: &pb.SchedulerMessage_Command{Command: &pb.Command{Kind: pb.Command_KIND_DRAIN}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "drain recorded", 5*time.Second, a.Draining)
	// A re-registration on the same stream keeps it (the scheduler says
	// DRAIN again if it still holds).
	if err := sched.send(&pb.SchedulerMessage{Msg: &pb.SchedulerMessage_Command{Command: &pb.Command{Kind: pb.Command_KIND_REREGISTER}}}); err != nil {
		t.Fatal(err)
	}
	sched.next(t, "registration on request", 5*time.Second, isRegister)
	time.Sleep(100 * time.Millisecond) // the second ack arrives
	if !a.Draining() {
		t.Fatal("drain cleared by a re-registration on the same stream")
	}
	addr := sched.addr
	sched.stop()
	sched.drain()
	sched.start(t, addr)
	sched.next(t, "registration with the restarted scheduler", 10*time.Second, isRegister)
	eventually(t, "drain cleared by the new registration", 5*time.Second, func() bool { return !a.Draining() })
}

func TestAgentLogsRefusal(t *testing.T) {
	// A scheduler that turns the agent away (wrong token) is an error the
	// operator must fix, said once (then every half minute), not a quiet
	// reconnect loop.
	engine := newFakeVLLM(t)
	engine.start(t)
	sched := newFakeScheduler(t)
	sched.mu.Lock()
	sched.refuse = status.Error(codes.Unauthenticated, "invalid token: LLMROUTER_TOKEN does not match the scheduler's shared token")
	sched.mu.Unlock()
	core, logs := observer.New(zap.InfoLevel)
	a, _ := startAgent(t, testOptions(engine, sched), zap.New(core))
	eventually(t, "the refusal logged", 10*time.Second, func() bool {
		return logs.FilterMessageSnippet("scheduler refused the agent").Len() > 0
	})
	time.Sleep(500 * time.Millisecond) // several more attempts (backoff 50..500ms)
	got := logs.FilterMessageSnippet("scheduler refused the agent").All()
	if len(got) != 1 || got[0].Level != zap.ErrorLevel || !strings.Contains(got[0].ContextMap()["hint"].(string), "LLMROUTER_TOKEN") {
		t.Fatalf("refusal lines = %v", got)
	}
	if err := a.Ready(); err == nil || !strings.Contains(err.Error(), "invalid token") {
		t.Fatalf("Ready while refused = %v, want it to name the refusal", err)
	}
}

// An agent fronted by a pd proxy says so in its registration (with the
// bootstrap port, for SGLang prefill engines) and hands each prefill fleet
// the scheduler sends to the proxy; it knows the engine kind once ready.
func TestAgentPDProxyRegistrationAndFleet(t *testing.T) {
	engine := newFakeVLLM(t)
	engine.start(t)
	sched := newFakeScheduler(t)
	opts := testOptions(engine, sched)
	fleets := make(chan map[string]int32, 4)
	opts.PDProxy, opts.BootstrapPort = true, 8998
	opts.OnPrefillFleet = func(m map[string]int32) { fleets <- m }
	a, _ := startAgent(t, opts, zap.NewNop())
	reg := sched.next(t, "registration", 10*time.Second, isRegister).GetRegister()
	if !reg.GetPdProxy() || reg.GetBootstrapPort() != 8998 {
		t.Fatalf("registration pd_proxy=%v bootstrap_port=%d", reg.GetPdProxy(), reg.GetBootstrapPort())
	}
	if a.EngineKind() != "vllm" {
		t.Fatalf("engine kind %q, want vllm", a.EngineKind())
	}
	if err := sched.send(&pb.SchedulerMessage{Msg: &pb.SchedulerMessage_PrefillFleet{PrefillFleet: &pb.PrefillFleet{
		Peers: []*pb.PrefillPeer{{Address: "10.0.0.1:8000", BootstrapPort: 8998}, {Address: "10.0.0.2:8000"}}}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-fleets:
		if len(f) != 2 || f["10.0.0.1:8000"] != 8998 || f["10.0.0.2:8000"] != 0 {
			t.Fatalf("fleet handed over = %v", f)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the prefill fleet never reached the proxy")
	}
}
