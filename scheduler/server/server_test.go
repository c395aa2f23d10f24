package server

import (
	"context"
	"fmt"
	"github.com/llmrouter/llmrouter/scheduler/registry"
	"go.uber.org/zap/zaptest/observer"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/grpcx"
	"github.com/llmrouter/llmrouter/internal/reglimits"
	"github.com/llmrouter/llmrouter/internal/servetest"
	"github.com/llmrouter/llmrouter/scheduler"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/leastrequest"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	cfg   config.Config
	sch   *scheduler.Scheduler
	clock *fakeClock
	addr  string
}

// start runs a scheduler API on 127.0.0.1:0 until the test ends.
func start(t *testing.T, mutate func(*config.Config)) *env {
	t.Helper()
	return startLogged(t, mutate, nil)
}

// startLogged is start with the server logging to log.
func startLogged(t *testing.T, mutate func(*config.Config), log *zap.Logger) *env {
	t.Helper()
	return startWith(t, mutate, scheduler.Deps{}, log)
}

// startWith is startLogged with the scheduler's deps (their clock is the
// env's fake one).
func startWith(t *testing.T, mutate func(*config.Config), deps scheduler.Deps, log *zap.Logger) *env {
	t.Helper()
	cfg := config.Default()
	cfg.Scheduler.Policy = "least-request"
	if mutate != nil {
		mutate(&cfg)
	}
	clk := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	deps.Clock = clk
	sch, err := scheduler.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, sch, log)
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := servetest.Loopback(t, srv)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return &env{cfg: cfg, sch: sch, clock: clk, addr: addr}
}

func (e *env) dial(t *testing.T, token string) *grpc.ClientConn {
	t.Helper()
	cfg := e.cfg
	cfg.Token = token
	opts, err := grpcx.DialOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(e.addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func registerMsg(addr string) *llmrouterv1.AgentMessage {
	return &llmrouterv1.AgentMessage{Msg: &llmrouterv1.AgentMessage_Register{Register: &llmrouterv1.Register{
		Address: addr, Engine: "vllm", Models: []string{"m"}, ReportInterval: durationpb.New(200 * time.Millisecond),
		Initial: &llmrouterv1.Report{Healthy: true},
	}}}
}

func reportMsg(r *llmrouterv1.Report) *llmrouterv1.AgentMessage {
	return &llmrouterv1.AgentMessage{Msg: &llmrouterv1.AgentMessage_Report{Report: r}}
}

func routable(e *env) int { return len(e.sch.Registry().Published()) }

func TestTokenRequired(t *testing.T) {
	e := start(t, func(c *config.Config) { c.Token = "s3cret" })
	if _, err := e.sch.Register(registerMsg("10.0.0.1:8000").GetRegister()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		token string
		want  codes.Code
	}{{"", codes.Unauthenticated}, {"wrong", codes.Unauthenticated}, {"s3cret", codes.OK}} {
		cc := e.dial(t, tc.token)
		pc := llmrouterv1.NewPickerServiceClient(cc)
		st, err := pc.Pick(ctx(t), &llmrouterv1.PickRequest{RequestId: "r-" + tc.token, Model: "m"})
		var resp *llmrouterv1.PickResponse
		if err == nil {
			resp, err = st.Recv()
		}
		if status.Code(err) != tc.want {
			t.Fatalf("token %q: Pick err = %v, want %v", tc.token, err, tc.want)
		}
		if tc.want == codes.OK && (resp.Status != llmrouterv1.PickResponse_ROUTED || resp.Endpoints[0] != "10.0.0.1:8000") {
			t.Fatalf("token %q: %v", tc.token, resp)
		}
		_, err = pc.Report(ctx(t), &llmrouterv1.OutcomeReport{RequestId: "r-" + tc.token})
		if status.Code(err) != tc.want {
			t.Fatalf("token %q: Report err = %v, want %v", tc.token, err, tc.want)
		}
		as, err := llmrouterv1.NewAgentServiceClient(cc).Connect(ctx(t))
		if err == nil {
			_ = as.Send(registerMsg("10.0.0.2:8000"))
			_, err = as.Recv()
		}
		if status.Code(err) != tc.want {
			t.Fatalf("token %q: Connect err = %v, want %v", tc.token, err, tc.want)
		}
		// Probes carry no secret: health answers regardless.
		hr, err := healthpb.NewHealthClient(cc).Check(ctx(t), &healthpb.HealthCheckRequest{})
		if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("token %q: health %v %v", tc.token, hr, err)
		}
	}
}

func TestAgentStreamLifecycle(t *testing.T) {
	e := start(t, nil)
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	st, err := llmrouterv1.NewAgentServiceClient(e.dial(t, "")).Connect(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(registerMsg("10.0.0.7:8000")); err != nil {
		t.Fatal(err)
	}
	ack, err := st.Recv()
	if err != nil || ack.GetRegistered().GetInstanceId() != "10.0.0.7:8000" || ack.GetRegistered().GetReportInterval().AsDuration() != 200*time.Millisecond {
		t.Fatalf("ack = %v, %v", ack, err)
	}
	if routable(e) != 1 {
		t.Fatal("not routable after registration")
	}
	if err := st.Send(reportMsg(&llmrouterv1.Report{Healthy: false, UnhealthyReason: "health 503"})); err != nil {
		t.Fatal(err)
	}
	eventually(t, "unhealthy instance to leave the routable set", func() bool { return routable(e) == 0 })
	if err := st.Send(reportMsg(&llmrouterv1.Report{Healthy: true, Running: 3})); err != nil {
		t.Fatal(err)
	}
	eventually(t, "healthy report to bring it back", func() bool { return routable(e) == 1 })
	inst, _ := e.sch.Registry().Get("10.0.0.7:8000")
	if inst.Running != 3 {
		t.Fatalf("report not applied: %+v", inst)
	}

	// Commands reach the agent.
	if err := e.sch.Drain("10.0.0.7:8000", "maintenance"); err != nil {
		t.Fatal(err)
	}
	m, err := st.Recv()
	if err != nil || m.GetCommand().GetKind() != llmrouterv1.Command_KIND_DRAIN || m.GetCommand().GetReason() != "maintenance" {
		t.Fatalf("command = %v, %v", m, err)
	}
	if routable(e) != 0 {
		t.Fatal("draining instance still routable")
	}

	// Closing the stream says nothing about the engine: the instance is
	// orphaned — silent, not removed — and a new agent may take the address.
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the instance orphaned on stream close", func() bool { return silent(e, "10.0.0.7:8000") })
	st2, err := llmrouterv1.NewAgentServiceClient(e.dial(t, "")).Connect(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := st2.Send(registerMsg("10.0.0.7:8000")); err != nil {
		t.Fatal(err)
	}
	if m, err := st2.Recv(); err != nil || m.GetRegistered().GetInstanceId() != "10.0.0.7:8000" {
		t.Fatalf("registration over an orphaned instance: %v, %v", m, err)
	}
	if silent(e, "10.0.0.7:8000") {
		t.Fatal("the new registration is silent")
	}
}

// An agent killed (its stream cut) leaves its engine published: only a
// confirmed dead engine leaves the endpoint set.
func TestAgentGoneKeepsEnginePublished(t *testing.T) {
	e := start(t, nil)
	for _, a := range []string{"10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"} {
		if _, err := e.sch.Register(registerMsg(a).GetRegister()); err != nil {
			t.Fatal(err)
		}
	}
	sctx, cancel := context.WithCancel(ctx(t))
	st, err := llmrouterv1.NewAgentServiceClient(e.dial(t, "")).Connect(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(registerMsg("10.0.0.9:8000")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel() // the agent dies mid-stream
	eventually(t, "the instance orphaned", func() bool { return silent(e, "10.0.0.9:8000") })
	if routable(e) != 4 {
		t.Fatalf("published = %v, want all 4 (the orphan included)", e.sch.Registry().Published())
	}
	resp, err := e.sch.Pick(context.Background(), &llmrouterv1.PickRequest{RequestId: "r", Model: "m"}, nil)
	if err != nil || resp.Status != llmrouterv1.PickResponse_ROUTED || slices.Contains(resp.Endpoints, "10.0.0.9:8000") {
		t.Fatalf("pick = %v, %v: the orphan must not be picked", resp, err)
	}
}

// silent reports whether addr is registered and silent.
func silent(e *env, addr string) bool {
	in, ok := e.sch.Registry().Get(addr)
	return ok && in.Silent
}

func TestAgentStreamRefusals(t *testing.T) {
	e := start(t, func(c *config.Config) { c.Scheduler.AllowedCIDRs = []string{"10.0.0.0/8"} })
	client := llmrouterv1.NewAgentServiceClient(e.dial(t, ""))
	manyAdapters := registerMsg("10.0.0.9:8000")
	for i := range reglimits.MaxNames {
		manyAdapters.GetRegister().LoraAdapters = append(manyAdapters.GetRegister().LoraAdapters, fmt.Sprint("adapter-", i))
	}
	for _, tc := range []struct {
		name string
		msg  *llmrouterv1.AgentMessage
		want codes.Code
		says string
	}{
		{"report first", reportMsg(&llmrouterv1.Report{Healthy: true}), codes.InvalidArgument, "must be Register"},
		{"host name", registerMsg("engine-0:8000"), codes.InvalidArgument, "want ip:port"},
		{"outside CIDR", registerMsg("192.168.0.4:8000"), codes.PermissionDenied, "allowed_cidrs"},
		{"too many names", manyAdapters, codes.InvalidArgument, "1025 names (1 models, 1024 lora_adapters): accepted: at most 1024"},
	} {
		st, err := client.Connect(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(tc.msg); err != nil {
			t.Fatal(err)
		}
		_, err = st.Recv()
		if status.Code(err) != tc.want {
			t.Fatalf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
		if !strings.Contains(status.Convert(err).Message(), tc.says) {
			t.Fatalf("%s: message %q does not say %q", tc.name, status.Convert(err).Message(), tc.says)
		}
	}
	if e.sch.Registry().Len() != 0 {
		t.Fatal("refused registration was kept")
	}
}

// Silence is not death: a stream whose reports stop keeps its registration
// (published, not picked) until silent_grace; then the registration ends
// and the stream with it, so a live agent re-registers.
func TestSilenceKeepsThenGraceEndsStream(t *testing.T) {
	// Alone, its silence would be a panic episode (100 % of the fleet),
	// which removes nobody; panic_threshold 1 turns that off.
	e := start(t, func(c *config.Config) { c.Scheduler.SilentGrace, c.Scheduler.PanicThreshold = 5*time.Second, 1 })
	st, err := llmrouterv1.NewAgentServiceClient(e.dial(t, "")).Connect(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(registerMsg("10.0.0.8:8000")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(600 * time.Millisecond) // three report intervals of silence
	e.sch.Tick()
	if ri, ok := e.sch.Registry().Get("10.0.0.8:8000"); !ok || ri.State() != registry.StateSilent || routable(e) != 1 {
		t.Fatalf("after 3 missed reports: %+v (published %d), want silent and still published", ri, routable(e))
	}
	e.clock.Advance(5 * time.Second)
	e.sch.Tick()
	if e.sch.Registry().Len() != 0 {
		t.Fatal("instance not removed after silent_grace")
	}
	_, err = st.Recv()
	if status.Code(err) != codes.Aborted {
		t.Fatalf("stream after expiry: %v, want Aborted", err)
	}
}

// An agent reusing a live instance's address is refused with AlreadyExists
// and a WARN naming the address; the holder keeps its registration. Once
// the holder is silent (its agent gone), a new registration replaces it.
func TestDuplicateRegistrationRefused(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	e := startLogged(t, nil, zap.New(core))
	client := llmrouterv1.NewAgentServiceClient(e.dial(t, ""))
	connect := func() (llmrouterv1.AgentService_ConnectClient, error) {
		st, err := client.Connect(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(registerMsg("10.0.0.9:8000")); err != nil {
			t.Fatal(err)
		}
		_, err = st.Recv()
		return st, err
	}
	old, err := connect()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := connect(); status.Code(err) != codes.AlreadyExists || !strings.Contains(status.Convert(err).Message(), "10.0.0.9:8000") {
		t.Fatalf("second registration: %v, want AlreadyExists naming the address", err)
	}
	found := false
	for _, l := range logs.FilterMessage("registration refused").All() {
		if l.ContextMap()["address"] == "10.0.0.9:8000" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no WARN naming the address; logs: %v", logs.All())
	}
	if err := old.Send(reportMsg(&llmrouterv1.Report{Healthy: true, Sequence: 7})); err != nil {
		t.Fatalf("holder's stream ended by the refused takeover: %v", err)
	}
	eventually(t, "the holder's report applied", func() bool {
		in, _ := e.sch.Registry().Get("10.0.0.9:8000")
		return in.Sequence == 7 && routable(e) == 1
	})

	e.clock.Advance(time.Second) // the holder falls silent
	e.sch.Tick()
	if _, err := connect(); err != nil {
		t.Fatalf("registration over a silent holder: %v", err)
	}
	if _, err := old.Recv(); status.Code(err) != codes.Aborted {
		t.Fatalf("old stream: %v, want Aborted", err)
	}
	// The old stream's end must not remove the new registration.
	time.Sleep(50 * time.Millisecond)
	if routable(e) != 1 {
		t.Fatal("new registration lost when the old stream ended")
	}
}

func TestPickStreamsQueuedThenRouted(t *testing.T) {
	e := start(t, func(c *config.Config) { c.Scheduler.MaxWaiting = 1 })
	if _, err := e.sch.Register(registerMsg("10.0.0.1:8000").GetRegister()); err != nil {
		t.Fatal(err)
	}
	if err := e.sch.InstanceReport("10.0.0.1:8000", 0, &llmrouterv1.Report{Healthy: true, Waiting: 2}); err != nil {
		t.Fatal(err)
	}
	st, err := llmrouterv1.NewPickerServiceClient(e.dial(t, "")).Pick(ctx(t), &llmrouterv1.PickRequest{RequestId: "q", Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.Recv()
	if err != nil || first.Status != llmrouterv1.PickResponse_QUEUED || first.MaxWait.AsDuration() != 10*time.Second {
		t.Fatalf("first = %v, %v", first, err)
	}
	if err := e.sch.InstanceReport("10.0.0.1:8000", 0, &llmrouterv1.Report{Healthy: true}); err != nil {
		t.Fatal(err)
	}
	final, err := st.Recv()
	if err != nil || final.Status != llmrouterv1.PickResponse_ROUTED || final.Endpoints[0] != "10.0.0.1:8000" || final.Policy != "least-request" {
		t.Fatalf("final = %v, %v", final, err)
	}
	if e.sch.Stats().Inflight != 1 {
		t.Fatalf("stats = %+v", e.sch.Stats())
	}

	// Unknown model: 404 over the wire.
	st, err = llmrouterv1.NewPickerServiceClient(e.dial(t, "")).Pick(ctx(t), &llmrouterv1.PickRequest{RequestId: "u", Model: "nope"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := st.Recv(); err != nil || r.Status != llmrouterv1.PickResponse_REJECTED || r.HttpStatus != 404 {
		t.Fatalf("unknown model = %v, %v", r, err)
	}
}

func TestPickCancelLeavesQueue(t *testing.T) {
	e := start(t, func(c *config.Config) { c.Scheduler.MaxWaiting = 1 })
	if _, err := e.sch.Register(registerMsg("10.0.0.1:8000").GetRegister()); err != nil {
		t.Fatal(err)
	}
	if err := e.sch.InstanceReport("10.0.0.1:8000", 0, &llmrouterv1.Report{Healthy: true, Waiting: 2}); err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithCancel(ctx(t))
	st, err := llmrouterv1.NewPickerServiceClient(e.dial(t, "")).Pick(c, &llmrouterv1.PickRequest{RequestId: "q", Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := st.Recv(); err != nil || r.Status != llmrouterv1.PickResponse_QUEUED {
		t.Fatalf("%v %v", r, err)
	}
	cancel()
	eventually(t, "the cancelled request to leave the queue", func() bool { return e.sch.Stats().Queued == 0 })
}

func TestAdminDrain(t *testing.T) {
	e := start(t, nil)
	if _, err := e.sch.Register(registerMsg("10.0.0.1:8000").GetRegister()); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(AdminHandler(e.sch, "tok"))
	defer hs.Close()
	do := func(method, path, token string) int {
		req, _ := http.NewRequest(method, hs.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := do("POST", "/admin/drain?instance=10.0.0.1:8000", ""); c != 401 {
		t.Fatalf("no token: %d", c)
	}
	if c := do("POST", "/admin/drain?instance=10.0.0.1:8000", "bad"); c != 401 {
		t.Fatalf("bad token: %d", c)
	}
	if routable(e) != 1 {
		t.Fatal("drained without a valid token")
	}
	if c := do("POST", "/admin/drain?instance=10.0.0.1:8000", "tok"); c != 200 || routable(e) != 0 {
		t.Fatalf("drain: %d, routable %d", c, routable(e))
	}
	if c := do("POST", "/admin/drain?instance=10.0.0.9:8000", "tok"); c != 404 {
		t.Fatalf("unknown instance: %d", c)
	}
	if c := do("POST", "/admin/resume?instance=10.0.0.1:8000", "tok"); c != 200 || routable(e) != 1 {
		t.Fatalf("resume: %d, routable %d", c, routable(e))
	}
	if c := do("GET", "/admin/instances", "tok"); c != 200 {
		t.Fatalf("instances: %d", c)
	}

	// During a token rotation the previous token is accepted too.
	rot := httptest.NewServer(AdminHandler(e.sch, "new", "tok"))
	defer rot.Close()
	for tok, want := range map[string]int{"new": 200, "tok": 200, "bad": 401} {
		req, _ := http.NewRequest("GET", rot.URL+"/admin/instances", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("rotating admin with token %q: %d, want %d", tok, resp.StatusCode, want)
		}
	}
}

func TestShutdownEndsAgentStreams(t *testing.T) {
	cfg := config.Default()
	cfg.Scheduler.Policy = "least-request"
	sch, err := scheduler.New(cfg, scheduler.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, sch, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(c, ln) }()
	e := &env{cfg: cfg, sch: sch, addr: ln.Addr().String()}
	st, err := llmrouterv1.NewAgentServiceClient(e.dial(t, "")).Connect(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(registerMsg("10.0.0.1:8000")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cancel()
	if _, err := st.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("agent stream at shutdown: %v, want Unavailable", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Well inside the grace period: the agent stream did not hold shutdown.
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
}

// A pd proxy's agent learns the routable prefill-capable instances (with
// their bootstrap ports) after its ack and again whenever the set changes;
// decode instances and unhealthy ones are never named.
func TestPrefillFleetFollowsRegistry(t *testing.T) {
	e := start(t, nil)
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	client := llmrouterv1.NewAgentServiceClient(e.dial(t, ""))
	connect := func(addr string, role llmrouterv1.Role, port int32, proxy bool) llmrouterv1.AgentService_ConnectClient {
		t.Helper()
		st, err := client.Connect(c)
		if err != nil {
			t.Fatal(err)
		}
		m := registerMsg(addr)
		m.GetRegister().Role, m.GetRegister().BootstrapPort, m.GetRegister().PdProxy = role, port, proxy
		if err := st.Send(m); err != nil {
			t.Fatal(err)
		}
		if ack, err := st.Recv(); err != nil || ack.GetRegistered() == nil {
			t.Fatalf("ack = %v, %v", ack, err)
		}
		return st
	}
	pre := connect("10.0.0.1:8000", llmrouterv1.Role_ROLE_PREFILL, 8998, false)
	dec := connect("10.0.0.2:9000", llmrouterv1.Role_ROLE_DECODE, 0, true)
	fleet := func(st llmrouterv1.AgentService_ConnectClient) string {
		t.Helper()
		m, err := st.Recv()
		if err != nil || m.GetPrefillFleet() == nil {
			t.Fatalf("want a PrefillFleet, got %v, %v", m, err)
		}
		var s []string
		for _, p := range m.GetPrefillFleet().GetPeers() {
			s = append(s, fmt.Sprintf("%s/%d", p.GetAddress(), p.GetBootstrapPort()))
		}
		return strings.Join(s, " ")
	}
	if got := fleet(dec); got != "10.0.0.1:8000/8998" {
		t.Fatalf("first fleet = %q, want the prefill instance with its bootstrap port", got)
	}
	both := connect("10.0.0.3:8000", llmrouterv1.Role_ROLE_BOTH, 0, false)
	if got := fleet(dec); got != "10.0.0.1:8000/8998 10.0.0.3:8000/0" {
		t.Fatalf("fleet after a both-role instance joined = %q", got)
	}
	if err := pre.Send(reportMsg(&llmrouterv1.Report{Healthy: false, UnhealthyReason: "down"})); err != nil {
		t.Fatal(err)
	}
	if got := fleet(dec); got != "10.0.0.3:8000/0" {
		t.Fatalf("fleet after the prefill instance went unhealthy = %q", got)
	}
	// Agents without a pd proxy are not told: the next message the
	// both-role agent sees is a command.
	if err := e.sch.Drain("10.0.0.3:8000", "test"); err != nil {
		t.Fatal(err)
	}
	if m, err := both.Recv(); err != nil || m.GetCommand().GetKind() != llmrouterv1.Command_KIND_DRAIN {
		t.Fatalf("both-role agent got %v, %v; want only the drain", m, err)
	}
	if got := fleet(dec); got != "" {
		t.Fatalf("fleet after the both-role instance drained = %q, want none", got)
	}
}
