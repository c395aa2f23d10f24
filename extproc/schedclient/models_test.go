package schedclient

import (
	"context"
	"encoding/json"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/extproc"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/envoytest"
	"github.com/llmrouter/llmrouter/internal/servetest"
	"github.com/llmrouter/llmrouter/scheduler"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/leastrequest"
	"github.com/llmrouter/llmrouter/scheduler/server"
)

var _ extproc.ModelLister = (*Client)(nil)

// gatewayOver runs the gateway over c on loopback and returns the Envoy-like
// blocking filter in front of it.
func gatewayOver(t *testing.T, c extproc.Scheduler) *envoytest.Filter {
	t.Helper()
	opt := extproc.OptionsFromConfig(config.Default().Gateway)
	opt.ModelsCacheTTL = 100 * time.Millisecond
	gw := extproc.New(opt, c, prometheus.NewRegistry(), zap.NewNop())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(extproc.GRPCServerOptions()...)
	gw.Register(g)
	go func() { _ = g.Serve(ln) }()
	client, cc, err := envoytest.Dial(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cc.Close()
		g.Stop()
		gw.Close()
	})
	return &envoytest.Filter{Client: client, MessageTimeout: 200 * time.Millisecond, FailureModeAllow: true,
		ReceivingNamespaces: []string{extproc.MetadataNamespace, extproc.GatewayNamespace}, DisallowIsError: true}
}

var getModels = envoytest.Request{Headers: []envoytest.Header{{Key: ":method", Value: "GET"}, {Key: ":path", Value: "/v1/models"}, {Key: ":authority", Value: "llm"}}}

// GET /v1/models through the gateway over the scheduler's gRPC API: the
// models of every routable instance (two engines serving different base
// models, one with an adapter), not one engine's; and once the scheduler is
// gone, the request continues to Envoy's round robin as before.
func TestGatewayListsTheFleetsModels(t *testing.T) {
	cfg := config.Default()
	cfg.Token = "s3cret"
	cfg.Scheduler.Policy = "least-request"
	sch, err := scheduler.New(cfg, scheduler.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*llmrouterv1.Register{
		{Address: "10.0.0.1:8000", Models: []string{"llama"}, LoraAdapters: []string{"chat-lora"}},
		{Address: "10.0.0.2:8000", Models: []string{"qwen"}},
		{Address: "10.0.0.3:8000", Models: []string{"drained"}},
	} {
		r.Engine, r.ReportInterval, r.Initial = "vllm", durationpb.New(time.Hour), &llmrouterv1.Report{Healthy: true}
		if _, err := sch.Register(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := sch.Drain("10.0.0.3:8000", "test"); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg, sch, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := servetest.Loopback(t, srv)
	c, err := Dial(cfg, addr, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	eventually(t, "the scheduler to become available", c.Available)
	f := gatewayOver(t, c)

	res := f.Do(context.Background(), getModels)
	if res.Immediate == nil || res.Immediate.Status != 200 {
		t.Fatalf("GET /v1/models: err %v continued %v immediate %v", res.Err, res.Continued, res.Immediate)
	}
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
			Parent string `json:"parent"`
		} `json:"data"`
	}
	if err := json.Unmarshal(res.Immediate.Body, &list); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range list.Data {
		ids = append(ids, d.ID+"<"+d.Parent)
	}
	if list.Object != "list" || !slices.Equal(ids, []string{"chat-lora<llama", "llama<", "qwen<"}) {
		t.Fatalf("listed %v (%s), want chat-lora (parent llama), llama and qwen", ids, res.Immediate.Body)
	}

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the scheduler to be seen unreachable", func() bool { return !c.Available() })
	time.Sleep(150 * time.Millisecond) // past the cached answer
	res = f.Do(context.Background(), getModels)
	if res.Err != nil || !res.Continued || res.Immediate != nil {
		t.Fatalf("scheduler down: err %v continued %v immediate %v, want the request to continue", res.Err, res.Continued, res.Immediate)
	}
}

// A scheduler from before ListModels answers Unimplemented: the request
// continues and one engine answers, as before the gateway listed models.
func TestGatewayOverOlderSchedulerPassesModelsThrough(t *testing.T) {
	cfg := config.Default()
	g, addr := serve(t, cfg, "127.0.0.1:0", &picker{reports: make(chan *llmrouterv1.OutcomeReport, 1)})
	defer g.Stop()
	c, err := Dial(cfg, addr, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	eventually(t, "the scheduler to become available", c.Available)
	res := gatewayOver(t, c).Do(context.Background(), getModels)
	if res.Err != nil || !res.Continued || res.Immediate != nil {
		t.Fatalf("err %v continued %v immediate %v, want the request to continue", res.Err, res.Continued, res.Immediate)
	}
	if !c.Available() {
		t.Fatal("an Unimplemented ListModels made the scheduler unavailable")
	}
}
