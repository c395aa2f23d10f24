package extproc

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/envoytest"
)

// fakeSched records picks and reports; pickFn decides.
type fakeSched struct {
	mu      sync.Mutex
	picks   []*llmrouterv1.PickRequest
	pickFn  func(ctx context.Context, req *llmrouterv1.PickRequest, queued func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error)
	reports chan *llmrouterv1.OutcomeReport
}

func newFake(fn func(ctx context.Context, req *llmrouterv1.PickRequest, queued func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error)) *fakeSched {
	return &fakeSched{pickFn: fn, reports: make(chan *llmrouterv1.OutcomeReport, 100)}
}

func routed(eps ...string) func(context.Context, *llmrouterv1.PickRequest, func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
	return func(context.Context, *llmrouterv1.PickRequest, func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
		return &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_ROUTED, Endpoints: eps, Policy: "fake"}, nil
	}
}

func (f *fakeSched) Pick(ctx context.Context, req *llmrouterv1.PickRequest, queued func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
	f.mu.Lock()
	f.picks = append(f.picks, req)
	fn := f.pickFn
	f.mu.Unlock()
	return fn(ctx, req, queued)
}

func (f *fakeSched) setPick(fn func(context.Context, *llmrouterv1.PickRequest, func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error)) {
	f.mu.Lock()
	f.pickFn = fn
	f.mu.Unlock()
}

func (f *fakeSched) Report(_ context.Context, r *llmrouterv1.OutcomeReport) error {
	f.reports <- r
	return nil
}

func (f *fakeSched) pickCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.picks)
}

func (f *fakeSched) lastPick() *llmrouterv1.PickRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.picks) == 0 {
		return nil
	}
	return f.picks[len(f.picks)-1]
}

// availSched adds Availability to a fake.
type availSched struct {
	*fakeSched
	up atomic.Bool
}

func (a *availSched) Available() bool { return a.up.Load() }

// harness runs a gateway on loopback with Envoy-like filters in front.
type harness struct {
	srv  *Server
	reg  *prometheus.Registry
	f    *envoytest.Filter
	obs  *envoytest.Observer
	opts Options
}

func testOptions() Options {
	return Options{
		BlockChars: 16, MaxPrefixChars: 1024, CharsPerToken: 4,
		PickTimeout: 150 * time.Millisecond, WaitScheduleTimeout: 2 * time.Second,
		ProbeInterval: 100 * time.Millisecond,
	}
}

func newHarness(t testing.TB, sched Scheduler, opt Options) *harness {
	t.Helper()
	return newHarnessLogged(t, sched, opt, zap.NewNop())
}

// newHarnessLogged is newHarness with the gateway logging to log.
func newHarnessLogged(t testing.TB, sched Scheduler, opt Options, log *zap.Logger) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	srv := New(opt, sched, reg, log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(GRPCServerOptions()...)
	srv.Register(g)
	go func() { _ = g.Serve(ln) }()
	client, cc, err := envoytest.Dial(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cc.Close()
		g.Stop()
		srv.Close()
	})
	return &harness{
		srv: srv, reg: reg, opts: srv.opt,
		f: &envoytest.Filter{
			Client:              client,
			MessageTimeout:      200 * time.Millisecond,
			MaxMessageTimeout:   srv.opt.WaitScheduleTimeout + QueueTimeoutSlack,
			FailureModeAllow:    true,
			ReceivingNamespaces: []string{MetadataNamespace, GatewayNamespace},
			DisallowIsError:     true,
		},
		obs: &envoytest.Observer{Client: client, CloseWait: 2 * time.Second},
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func chatHeaders(extra ...envoytest.Header) []envoytest.Header {
	return append([]envoytest.Header{
		{Key: ":method", Value: "POST"},
		{Key: ":path", Value: "/v1/chat/completions"},
		{Key: ":authority", Value: "llm.example"},
		{Key: "content-type", Value: "application/json"},
	}, extra...)
}

func headerValues(hs []envoytest.Header, key string) []string {
	var out []string
	for _, h := range hs {
		if h.Key == key {
			out = append(out, h.Value)
		}
	}
	return out
}

func newRegistryForTest() *prometheus.Registry { return prometheus.NewRegistry() }
