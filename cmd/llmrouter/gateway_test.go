package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/extproc"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/envoytest"
	"github.com/llmrouter/llmrouter/internal/grpcx"
	"github.com/llmrouter/llmrouter/internal/servetest"
)

// registerAgent registers one instance serving model m at addr; the stream
// lives until ctx ends.
func registerAgent(t *testing.T, ctx context.Context, cfg config.Config, api, addr string) {
	t.Helper()
	opts, err := grpcx.DialOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(api, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	agent, err := llmrouterv1.NewAgentServiceClient(cc).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Send(&llmrouterv1.AgentMessage{Msg: &llmrouterv1.AgentMessage_Register{Register: &llmrouterv1.Register{
		Address: addr, Models: []string{"m"}, ReportInterval: durationpb.New(time.Minute),
		Initial: &llmrouterv1.Report{Healthy: true},
	}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Recv(); err != nil {
		t.Fatal(err)
	}
}

func extProcFilter(t *testing.T, addr string) *envoytest.Filter {
	t.Helper()
	client, cc, err := envoytest.Dial(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return &envoytest.Filter{Client: client, MessageTimeout: 5 * time.Second, MaxMessageTimeout: 12 * time.Second,
		FailureModeAllow: true, ReceivingNamespaces: []string{extproc.MetadataNamespace}, DisallowIsError: true}
}

var chatReq = envoytest.Request{
	Headers: []envoytest.Header{{Key: ":method", Value: "POST"}, {Key: ":path", Value: "/v1/chat/completions"}, {Key: "x-request-id", Value: "r1"}},
	Body:    []byte(`{"model":"m","messages":[{"role":"user","content":"hello there, how are you doing today?"}]}`),
}

func dest(r *envoytest.Result) string {
	v, _ := envoytest.Get(r.Headers, extproc.HeaderDestination)
	return v
}

func readyz(t *testing.T, addr string) (int, string) {
	t.Helper()
	res, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAllInOneRoutesInProcess(t *testing.T) {
	cfg := inProcessConfig()
	cfg.Scheduler.Policy = "least-request"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, done := startControlPlane(t, ctx, cfg, true)
	agentCtx, agentCancel := context.WithCancel(ctx)
	defer agentCancel()
	registerAgent(t, agentCtx, cfg, a.API, "127.0.0.1:8001")

	f := extProcFilter(t, a.ExtProc)
	res := f.Do(ctx, chatReq)
	if res.Err != nil || dest(res) != "127.0.0.1:8001" {
		t.Fatalf("err=%v destination=%q", res.Err, dest(res))
	}
	if code, body := readyz(t, a.HTTP); code != 200 || strings.Contains(body, "degraded") {
		t.Fatalf("/readyz %d %q", code, body)
	}
	agentCancel()
	cancel()
	stopped(t, "all-in-one", done, 30*time.Second)
}

func TestGatewayDegradedThenRecovers(t *testing.T) {
	// A free port for the scheduler that is not running yet.
	schedAddr := servetest.FreeAddr(t)

	cfg := config.Default()
	cfg.Scheduler.Policy = "least-request"
	cfg.Scheduler.VerifyEngines = false // the agents here are fakes with no engine behind their address
	cfg.Scheduler.Listen, cfg.Scheduler.XDSListen, cfg.Scheduler.HTTPListen = schedAddr, "127.0.0.1:0", "127.0.0.1:0"
	cfg.Gateway.Listen, cfg.Gateway.HTTPListen, cfg.Gateway.SchedulerAddress = "127.0.0.1:0", "127.0.0.1:0", schedAddr
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gwAddrs := make(chan gatewayAddrs, 1)
	gwDone := make(chan error, 1)
	go func() { gwDone <- runGateway(ctx, cfg, zap.NewNop(), func(a gatewayAddrs) { gwAddrs <- a }) }()
	var g gatewayAddrs
	select {
	case g = <-gwAddrs:
	case err := <-gwDone:
		t.Fatalf("gateway exited: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("gateway did not start")
	}
	f := extProcFilter(t, g.ExtProc)

	// No scheduler: answered without a pick; ready, and saying degraded.
	res := f.Do(ctx, chatReq)
	if res.Err != nil || dest(res) != "" || !res.Continued {
		t.Fatalf("degraded: err=%v destination=%q", res.Err, dest(res))
	}
	if code, body := readyz(t, g.HTTP); code != 200 || !strings.Contains(body, "degraded") {
		t.Fatalf("/readyz %d %q", code, body)
	}

	// The scheduler starts: the gateway notices by itself and picks.
	schedCtx, schedCancel := context.WithCancel(ctx)
	defer schedCancel()
	_, schedDone := startControlPlane(t, schedCtx, cfg, false)
	registerAgent(t, schedCtx, cfg, schedAddr, "127.0.0.1:8002")
	waitFor(t, "picks to resume", func() bool { return dest(f.Do(ctx, chatReq)) == "127.0.0.1:8002" })
	if code, body := readyz(t, g.HTTP); code != 200 || strings.Contains(body, "degraded") {
		t.Fatalf("/readyz after recovery %d %q", code, body)
	}

	// Gone again: passes through at once.
	schedCancel()
	<-schedDone
	waitFor(t, "degraded mode", func() bool {
		r := f.Do(ctx, chatReq)
		return r.Err == nil && dest(r) == ""
	})
	cancel()
	select {
	case err := <-gwDone:
		if err != nil {
			t.Fatalf("gateway shutdown: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("gateway did not shut down")
	}
}

// TestAllInOneRunsEndpointPickerProfile: the all-in-one scheduler runs a
// profile of llm-d's EndpointPickerConfig and routes through it, and runs
// the peers' built-in profiles (configuration, not bench-only code) as any
// other policy.
func TestAllInOneRunsEndpointPickerProfile(t *testing.T) {
	for _, tc := range []struct{ file, profile string }{
		{"llm-d-default.yaml", "default"}, {"custom-weights.yaml", "prefix-heavy"},
		{"", "peer-scorer"}, {"", "peer-cache-aware"},
	} {
		t.Run(tc.profile, func(t *testing.T) {
			file := tc.file
			if file != "" {
				file = "../../docs/examples/endpoint-picker/" + file
			}
			allInOneProfile(t, file, tc.profile)
		})
	}
}

func allInOneProfile(t *testing.T, file, profile string) {
	cfg := inProcessConfig()
	cfg.Scheduler.EndpointPickerConfig = file
	cfg.Scheduler.Policy = profile
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, done := startControlPlane(t, ctx, cfg, true)
	agentCtx, agentCancel := context.WithCancel(ctx)
	defer agentCancel()
	registerAgent(t, agentCtx, cfg, a.API, "127.0.0.1:8001")
	registerAgent(t, agentCtx, cfg, a.API, "127.0.0.1:8002")

	f := extProcFilter(t, a.ExtProc)
	long := chatReq
	long.Body = []byte(`{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("a long shared prompt. ", 40) + `"}]}`)
	first := ""
	for i := range 6 { // the same prompt follows its prefix to one instance
		res := f.Do(ctx, long)
		primary, _, _ := strings.Cut(dest(res), ",")
		if res.Err != nil || (primary != "127.0.0.1:8001" && primary != "127.0.0.1:8002") {
			t.Fatalf("err=%v destination=%q", res.Err, dest(res))
		}
		if i == 0 {
			first = primary
		} else if primary != first {
			t.Fatalf("request %d went to %s, the prompt's prefix is on %s", i, primary, first)
		}
	}
	res, err := http.Get("http://" + a.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(b), `policy="`+profile+`"`) {
		t.Errorf("/metrics shows no decision of policy %q", profile)
	}
	agentCancel()
	cancel()
	stopped(t, "all-in-one", done, 30*time.Second)
}
