package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/integration/harness"
	"github.com/llmrouter/llmrouter/integration/stack"
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
type engine = stack.Engine

// system is one whole llmrouter deployment on loopback.
type system struct {
	*stack.Stack
	t    *testing.T
	opts options
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
	if o.policy == "" {
		o.policy = "least-request"
	}
	if o.engineArgs == nil {
		o.engineArgs = []string{"--ttft", "20ms", "--itl", "40ms"}
	}
	s := &system{t: t, opts: o}
	so := stack.Options{
		Model: model, Split: o.split, Policy: o.policy, Env: o.env, EngineArgs: o.engineArgs,
		WaitScheduleTimeout: o.waitScheduleTimeout,
		Standin:             binaries(t), Envoy: envoyBinary(),
		StartTimeout: startTimeout, Settle: settle,
		Client: &http.Client{
			Timeout:   60 * time.Second,
			Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
		},
	}
	if o.pd != "" {
		so.StartEngines = func(t *testing.T, st *stack.Stack) {
			s.Stack = st
			s.startPDEngines(t)
		}
	}
	s.Stack = stack.Start(t, so)

	// Routed end to end: a completion through the data plane, counted as
	// picked by the gateway.
	harness.Eventually(t, settle, "a routed completion through the data plane", func() error {
		r := s.chat(context.Background(), chatReq{MaxTokens: 1})
		if err := r.Failure(); err != nil {
			return err
		}
		if v := s.gwCounter(t, "llmrouter_gateway_requests_total", "outcome", "routed"); v < 1 {
			return fmt.Errorf("gateway routed %g requests", v)
		}
		return nil
	})
	t.Logf("system up in %s: %s policy %s, data plane %s on %s, engines %v", time.Since(began).Round(time.Millisecond),
		map[bool]string{true: "scheduler + gateway", false: "all-in-one"}[o.split], o.policy, s.DataPlane.Name, s.Listen, s.EngineAddrs())
	return s
}

// ---------------------------------------------------------------- metrics

// gwCounter sums a gateway series (the all-in-one serves the gateway's
// metrics on its one HTTP port).
func (s *system) gwCounter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	return s.Counter(t, s.GatewayHTTP, name, labels...)
}

func (s *system) schedCounter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	return s.Counter(t, s.SchedulerHTTP, name, labels...)
}

// served returns each engine's completed requests (vllm:request_success_total
// over every finish reason), by address.
func (s *system) served(t *testing.T) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, e := range s.Engines {
		out[e.Addr] = s.Counter(t, e.Addr, "vllm:request_success_total")
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

type (
	chatReq = stack.ChatReq
	reply   = stack.Reply
	usage   = stack.Usage
)

// chat sends one chat completion through the data plane (8 tokens unless
// asked; a stream reports its usage) and reads the answer to its end.
func (s *system) chat(ctx context.Context, q chatReq) reply {
	if q.MaxTokens == 0 {
		q.MaxTokens = 8
	}
	q.Usage = true
	return s.Chat(ctx, q)
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
		if err := r.Failure(); err != nil {
			out = append(out, fmt.Sprintf("at %+.3fs: %v", r.Start.Sub(t0).Seconds(), err))
		}
	}
	return out
}

// slowest is the longest reply that started within [from, to).
func slowest(rs []reply, from, to time.Time) time.Duration {
	var d time.Duration
	for _, r := range rs {
		if !r.Start.Before(from) && r.Start.Before(to) {
			d = max(d, r.End.Sub(r.Start))
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
