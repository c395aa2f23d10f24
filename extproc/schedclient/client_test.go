package schedclient

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/extproc"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/grpcx"
	"github.com/llmrouter/llmrouter/internal/servetest"
)

var (
	_ extproc.Scheduler    = (*Client)(nil)
	_ extproc.Availability = (*Client)(nil)
)

type picker struct {
	llmrouterv1.UnimplementedPickerServiceServer
	reports chan *llmrouterv1.OutcomeReport
}

func (p *picker) Pick(req *llmrouterv1.PickRequest, s grpc.ServerStreamingServer[llmrouterv1.PickResponse]) error {
	if req.Model == "silent" {
		return s.Send(&llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_PASSTHROUGH})
	}
	if req.Model == "queued" {
		if err := s.Send(&llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_QUEUED}); err != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return s.Send(&llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_ROUTED, Endpoints: []string{"10.0.0.1:8000"}})
}

func (p *picker) Report(_ context.Context, r *llmrouterv1.OutcomeReport) (*llmrouterv1.ReportAck, error) {
	p.reports <- r
	return &llmrouterv1.ReportAck{}, nil
}

// serve runs a scheduler stand-in on addr ("127.0.0.1:0" picks a port; one
// served again after a stop is on servetest.FreeAddr).
func serve(t testing.TB, cfg config.Config, addr string, p *picker) (*grpc.Server, string) {
	t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // re-binding a just-closed port may take a moment
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	opts, err := grpcx.ServerOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(opts...)
	llmrouterv1.RegisterPickerServiceServer(g, p)
	grpcx.RegisterHealth(g)
	go func() { _ = g.Serve(ln) }()
	return g, ln.Addr().String()
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPickQueuedReportAndRecovery(t *testing.T) {
	cfg := config.Default()
	cfg.Token = "s3cret"
	p := &picker{reports: make(chan *llmrouterv1.OutcomeReport, 4)}
	// It comes back on this address after the client redialled it.
	g, addr := serve(t, cfg, servetest.FreeAddr(t), p)

	c, err := Dial(cfg, addr, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	eventually(t, "the scheduler to become available", c.Available)

	var queuedCalls int
	resp, err := c.Pick(context.Background(), &llmrouterv1.PickRequest{Model: "queued"}, func(r *llmrouterv1.PickResponse) {
		if r.Status != llmrouterv1.PickResponse_QUEUED {
			t.Errorf("queued callback got %v", r.Status)
		}
		queuedCalls++
	})
	if err != nil || resp.Status != llmrouterv1.PickResponse_ROUTED || resp.Endpoints[0] != "10.0.0.1:8000" || queuedCalls != 1 {
		t.Fatalf("pick = %v, %v, queued calls %d", resp, err, queuedCalls)
	}
	// Every candidate silent: an answer (the gateway passes the request
	// through), not a scheduler failure that would trip the breaker.
	if resp, err := c.Pick(context.Background(), &llmrouterv1.PickRequest{Model: "silent"}, nil); err != nil || resp.Status != llmrouterv1.PickResponse_PASSTHROUGH {
		t.Fatalf("pick with every candidate silent = %v, %v; want PASSTHROUGH", resp, err)
	}
	if !c.Available() {
		t.Fatalf("a PASSTHROUGH answer made the scheduler unavailable")
	}
	if err := c.Report(context.Background(), &llmrouterv1.OutcomeReport{RequestId: "r"}); err != nil {
		t.Fatal(err)
	}
	if r := <-p.reports; r.RequestId != "r" {
		t.Fatalf("report = %v", r)
	}

	// The scheduler goes away: noticed without any pick, and picks fail
	// at once with Unavailable instead of waiting on a dead connection.
	g.Stop()
	eventually(t, "the scheduler to be seen unreachable", func() bool { return !c.Available() })
	if _, err := c.Pick(context.Background(), &llmrouterv1.PickRequest{Model: "m"}, nil); status.Code(err) != codes.Unavailable {
		t.Fatalf("pick while down: %v, want Unavailable", err)
	}

	// It comes back on the same address: noticed by itself.
	g2, _ := serve(t, cfg, addr, p)
	defer g2.Stop()
	eventually(t, "the scheduler to be seen again", c.Available)
	if _, err := c.Pick(context.Background(), &llmrouterv1.PickRequest{Model: "m"}, nil); err != nil {
		t.Fatalf("pick after recovery: %v", err)
	}
}

func TestWrongTokenRefused(t *testing.T) {
	srvCfg := config.Default()
	srvCfg.Token = "right"
	p := &picker{reports: make(chan *llmrouterv1.OutcomeReport, 1)}
	g, addr := serve(t, srvCfg, "127.0.0.1:0", p)
	defer g.Stop()
	cfg := config.Default()
	cfg.Token = "wrong"
	c, err := Dial(cfg, addr, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Health is exempt from the token, so the scheduler counts as reachable;
	// the pick itself is refused, and the gateway then passes through.
	eventually(t, "availability", c.Available)
	if _, err := c.Pick(context.Background(), &llmrouterv1.PickRequest{Model: "m"}, nil); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("pick with a wrong token: %v, want Unauthenticated", err)
	}
}

// BenchmarkDetectUnreachable measures how long the client takes to see a
// stopped scheduler (reported as detect-ms; the target is under a second)
// and to see it back (recover-ms).
func BenchmarkDetectUnreachable(b *testing.B) {
	cfg := config.Default()
	p := &picker{reports: make(chan *llmrouterv1.OutcomeReport, 1)}
	g, addr := serve(b, cfg, "127.0.0.1:0", p)
	c, err := Dial(cfg, addr, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var detect, recover time.Duration
	for b.Loop() {
		for !c.Available() {
			time.Sleep(time.Millisecond)
		}
		t0 := time.Now()
		g.Stop()
		for c.Available() {
			time.Sleep(time.Millisecond)
		}
		detect += time.Since(t0)
		t1 := time.Now()
		g, _ = serve(b, cfg, addr, p)
		for !c.Available() {
			time.Sleep(time.Millisecond)
		}
		recover += time.Since(t1)
	}
	g.Stop()
	b.ReportMetric(float64(detect.Milliseconds())/float64(b.N), "detect-ms")
	b.ReportMetric(float64(recover.Milliseconds())/float64(b.N), "recover-ms")
}
