package scheduler

import (
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/leastrequest"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/random"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/roundrobin"
	"github.com/llmrouter/llmrouter/scheduler/registry"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func testConfig() config.Config {
	cfg := config.Default()
	cfg.Scheduler.Policy = "least-request"
	return cfg
}

func newTestScheduler(t testing.TB, mutate func(*config.Config)) (*Scheduler, *fakeClock) {
	t.Helper()
	cfg := testConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	clk := newFakeClock()
	s, err := New(cfg, Deps{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return s, clk
}

const interval = 200 * time.Millisecond

func regMsg(addr string, models ...string) *llmrouterv1.Register {
	if len(models) == 0 {
		models = []string{"m"}
	}
	return &llmrouterv1.Register{
		Address: addr, Engine: "vllm", Models: models, ReportInterval: durationpb.New(interval),
		Initial: &llmrouterv1.Report{Healthy: true},
	}
}

func mustRegister(t testing.TB, s *Scheduler, addr string, models ...string) *registry.Lease {
	t.Helper()
	l, err := s.Register(regMsg(addr, models...))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mustReport(t testing.TB, s *Scheduler, id string, rep *llmrouterv1.Report) {
	t.Helper()
	if err := s.InstanceReport(id, 0, rep); err != nil {
		t.Fatal(err)
	}
}

func load(running, waiting int64) *llmrouterv1.Report {
	return &llmrouterv1.Report{Healthy: true, Running: running, Waiting: waiting}
}

func routableIDs(s *Scheduler) []string {
	var out []string
	for _, r := range s.Registry().Published() {
		out = append(out, r.ID)
	}
	return out
}

func pickReq(id, model string) *llmrouterv1.PickRequest {
	return &llmrouterv1.PickRequest{RequestId: id, Model: model, PromptTokens: 100, MaxTokens: 50}
}
