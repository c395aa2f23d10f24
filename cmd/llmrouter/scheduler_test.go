package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/grpcx"
)

func TestSchedulerRefusesExposureWithoutToken(t *testing.T) {
	r := run(t, []string{"LLMROUTER_TOKEN="}, "scheduler", "--listen", "0.0.0.0:0", "--policy", "least-request",
		"--xds-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0")
	if r.code == 0 || !strings.Contains(r.stderr, "without a token") || !strings.Contains(r.stderr, "--insecure") {
		t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
	}
}

func TestSchedulerServes(t *testing.T) {
	cfg := inProcessConfig()
	cfg.Token = "tok"
	cfg.Scheduler.Policy = "least-request"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, done := startControlPlane(t, ctx, cfg, false)

	opts, err := grpcx.DialOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(a.API, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
	defer rcancel()
	agent, err := llmrouterv1.NewAgentServiceClient(cc).Connect(rctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Send(&llmrouterv1.AgentMessage{Msg: &llmrouterv1.AgentMessage_Register{Register: &llmrouterv1.Register{
		Address: "127.0.0.1:8000", Models: []string{"m"}, ReportInterval: durationpb.New(time.Minute),
		Initial: &llmrouterv1.Report{Healthy: true, KvCacheUsage: 0.25},
	}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Recv(); err != nil {
		t.Fatal(err)
	}
	ps, err := llmrouterv1.NewPickerServiceClient(cc).Pick(rctx, &llmrouterv1.PickRequest{RequestId: "r1", Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ps.Recv()
	if err != nil || resp.Status != llmrouterv1.PickResponse_ROUTED || resp.Endpoints[0] != "127.0.0.1:8000" {
		t.Fatalf("pick = %v, %v", resp, err)
	}

	get := func(method, path, token string) (int, string) {
		req, _ := http.NewRequest(method, "http://"+a.HTTP+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, _ := get("GET", "/readyz", ""); code != 200 {
		t.Fatalf("/readyz %d", code)
	}
	code, body := get("GET", "/metrics", "")
	for _, want := range []string{
		`llmrouter_scheduler_decisions_total{outcome="routed",policy="least-request"} 1`,
		`llmrouter_instance_kv_cache_usage_ratio{engine="127.0.0.1:8000"} 0.25`,
		`llmrouter_scheduler_instances{state="healthy"} 1`,
		`llmrouter_scheduler_inflight_requests 1`,
		"llmrouter_scheduler_pick_duration_seconds_bucket",
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %q:\n%s", want, body)
		}
	}
	if code, _ := get("POST", "/admin/drain?instance=127.0.0.1:8000", ""); code != 401 {
		t.Fatalf("admin without token: %d", code)
	}
	if code, _ := get("POST", "/admin/drain?instance=127.0.0.1:8000", "tok"); code != 200 {
		t.Fatalf("admin drain: %d", code)
	}
	if m, err := agent.Recv(); err != nil || m.GetCommand().GetKind() != llmrouterv1.Command_KIND_DRAIN {
		t.Fatalf("agent command = %v, %v", m, err)
	}
	if c, err := net.DialTimeout("tcp", a.XDS, 5*time.Second); err != nil {
		t.Fatalf("xds port: %v", err)
	} else {
		c.Close()
	}

	cancel()
	stopped(t, "scheduler", done, 20*time.Second)
}
