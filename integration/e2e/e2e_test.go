package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/llmrouter/llmrouter/integration/harness"
)

// spreadEnv turns the predicted-wait judgment off for the systems whose
// Spread subtest holds the policy's own spread to ±30%. With the judgment on,
// an engine whose batch limit is not yet known and that holds more than four
// unreported picks is judged by a full reply's turnover of the configured
// default output (256 tokens, learned down slowly), scaled by the engines'
// measured speed (these enginesims are ~7x slower than the H100 model):
// it is held back for a moment and the policy's spread is no longer what
// the test measures. Admission's own behaviour is covered by
// scheduler/admission and the faults suite, which run with the defaults.
var spreadEnv = []string{"LLMROUTER_LLM_SCHEDULER_MAX_PREDICTED_WAIT=0"}

// TestLeastRequestSystem: all-in-one under least-request, three engines, the
// data plane. Streaming, spread and WebSocket share the one system.
func TestLeastRequestSystem(t *testing.T) {
	s := startSystem(t, options{policy: "least-request", env: spreadEnv})
	t.Run("StreamingChat", s.testStreaming)
	t.Run("Spread", s.testSpread)
	t.Run("WebSocket", s.testWebSocket)
}

// TestRoundRobinSystem: all-in-one under round-robin.
func TestRoundRobinSystem(t *testing.T) {
	s := startSystem(t, options{policy: "round-robin", env: spreadEnv})
	t.Run("Spread", s.testSpread)
	t.Run("ClientDestinationHeaderIgnored", s.testDestinationHeader)
}

// testStreaming: a streaming chat completion arrives as SSE events while
// the engine generates them (40 ms apart, 30 tokens: 1.2 s), ends with
// [DONE], and the gateway counts its tokens.
func (s *system) testStreaming(t *testing.T) {
	const tokens = 30
	tokensBefore := s.gwCounter(t, "llmrouter_gateway_completion_tokens_total")
	ttftBefore := s.gwCounter(t, "llmrouter_gateway_ttft_seconds")
	routedBefore := s.gwCounter(t, "llmrouter_gateway_requests_total", "api", "chat_completions", "outcome", "routed")

	r := s.chat(context.Background(), chatReq{MaxTokens: tokens})
	if err := r.Failure(); err != nil {
		t.Fatalf("streaming chat: %v", err)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("content-type %q, want text/event-stream", ct)
	}
	ev := r.Events
	if last := ev[len(ev)-1].Data; last != "[DONE]" {
		t.Fatalf("last event %q, want [DONE]", last)
	}
	if r.Usage == nil || r.Usage.CompletionTokens != tokens {
		t.Fatalf("usage %+v, want %d completion tokens", r.Usage, tokens)
	}
	// One event per token plus role, finish, usage and [DONE].
	if len(ev) < tokens {
		t.Errorf("%d SSE events for %d tokens", len(ev), tokens)
	}
	first, last := ev[0].At, ev[len(ev)-1].At
	spread := last.Sub(first)
	t.Logf("%d events: first %s after the request, last %s after the first", len(ev),
		first.Sub(r.Start).Round(time.Millisecond), spread.Round(time.Millisecond))
	// Generation takes tokens×40 ms = 1.2 s; a buffering data plane would
	// deliver every event at once.
	if spread < 600*time.Millisecond {
		t.Errorf("events arrived within %s of each other, want them spread over the ~1.2 s generation", spread)
	}
	// Arrival follows generation: about half the events by the middle.
	mid := first.Add(spread / 2)
	early := 0
	for _, e := range ev {
		if e.At.Before(mid) {
			early++
		}
	}
	if early < len(ev)/4 || early > 3*len(ev)/4 {
		t.Errorf("%d of %d events arrived in the first half of the stream", early, len(ev))
	}

	// The observability filter reports asynchronously.
	harness.Eventually(t, settle, "completion tokens counted by the gateway", func() error {
		got := s.gwCounter(t, "llmrouter_gateway_completion_tokens_total") - tokensBefore
		if got != tokens {
			return fmt.Errorf("llmrouter_gateway_completion_tokens_total grew by %g, want %d", got, tokens)
		}
		return nil
	})
	if d := s.gwCounter(t, "llmrouter_gateway_ttft_seconds") - ttftBefore; d != 1 {
		t.Errorf("TTFT observations grew by %g, want 1", d)
	}
	if d := s.gwCounter(t, "llmrouter_gateway_requests_total", "api", "chat_completions", "outcome", "routed") - routedBefore; d != 1 {
		t.Errorf("routed chat completions grew by %g, want 1", d)
	}
}

// testSpread sends 60 streaming requests, 8 at a time (each ~0.5 s, so
// they overlap), and wants each engine within ±30% of 20, every request
// routed by a pick (Envoy's own round robin must not be what spreads them).
func (s *system) testSpread(t *testing.T) {
	const total, workers = 60, 8
	servedBefore := s.served(t)
	routedBefore := s.gwCounter(t, "llmrouter_gateway_requests_total", "outcome", "routed")
	passBefore := s.gwCounter(t, "llmrouter_gateway_passthrough_total")

	var next atomic.Int64
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	began := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= total {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				r := s.chat(ctx, chatReq{MaxTokens: 12})
				cancel()
				if err := r.Failure(); err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(began)
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed: %v", len(failures), total, failures)
	}
	var got map[string]float64
	harness.Eventually(t, settle, "engines' success counters", func() error {
		got = delta(s.served(t), servedBefore)
		n := 0.0
		for _, v := range got {
			n += v
		}
		if n != total {
			return fmt.Errorf("engines served %g of %d: %v", n, total, got)
		}
		return nil
	})
	t.Logf("%s: %d requests in %s, per engine %v", s.opts.policy, total, took.Round(time.Millisecond), got)
	if d := s.gwCounter(t, "llmrouter_gateway_requests_total", "outcome", "routed") - routedBefore; d != total {
		t.Errorf("gateway routed %g of %d requests", d, total)
	}
	if d := s.gwCounter(t, "llmrouter_gateway_passthrough_total") - passBefore; d != 0 {
		t.Errorf("%g requests passed through without a pick", d)
	}
	even := float64(total) / float64(len(s.Engines))
	for addr, n := range got {
		if math.Abs(n-even) > 0.3*even {
			t.Errorf("%s served %g requests, want %g ±30%% (per engine: %v)", addr, n, even, got)
		}
	}
}

// testWebSocket: a WebSocket session through the data plane streams tokens
// as the engine generates them, and the gateway picked its instance.
func (s *system) testWebSocket(t *testing.T) {
	const tokens = 20
	routedBefore := s.gwCounter(t, "llmrouter_gateway_requests_total", "api", "websocket", "outcome", "routed")
	servedBefore := s.served(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+s.Listen+"/v1/realtime?model="+model, nil)
	if err != nil {
		t.Fatalf("websocket dial through %s: %v (response %+v)", s.DataPlane.Name, err, resp)
	}
	defer c.CloseNow()
	// Two requests on one session: the connection stays usable.
	for i := range 2 {
		id := fmt.Sprintf("ws-%d", i)
		req, _ := json.Marshal(map[string]any{"id": id, "model": model, "max_tokens": tokens,
			"messages": []map[string]string{{"role": "user", "content": "stream over a websocket"}}})
		sent := time.Now()
		if err := c.Write(ctx, websocket.MessageText, req); err != nil {
			t.Fatal(err)
		}
		var times []time.Time
		var done struct {
			Type  string `json:"type"`
			ID    string `json:"id"`
			Usage *usage `json:"usage"`
			Error any    `json:"error"`
		}
		for done.Type != "done" {
			_, b, err := c.Read(ctx)
			if err != nil {
				t.Fatalf("%s: read after %d tokens: %v", id, len(times), err)
			}
			if err := json.Unmarshal(b, &done); err != nil {
				t.Fatalf("%s: message %q: %v", id, b, err)
			}
			switch done.Type {
			case "token":
				times = append(times, time.Now())
			case "done":
			default:
				t.Fatalf("%s: unexpected message %s", id, b)
			}
			if done.ID != id {
				t.Fatalf("message for %q, want %q", done.ID, id)
			}
		}
		if len(times) != tokens || done.Usage == nil || done.Usage.CompletionTokens != tokens {
			t.Fatalf("%s: %d token messages, usage %+v; want %d", id, len(times), done.Usage, tokens)
		}
		spread := times[len(times)-1].Sub(times[0])
		t.Logf("%s: first token %s after sending, last %s after the first", id,
			times[0].Sub(sent).Round(time.Millisecond), spread.Round(time.Millisecond))
		// 20 tokens at 40 ms: ~0.8 s of generation, delivered as it happens.
		if spread < 400*time.Millisecond {
			t.Errorf("%s: tokens arrived within %s, want them spread over the ~0.8 s generation", id, spread)
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("close: %v", err)
	}
	if d := s.gwCounter(t, "llmrouter_gateway_requests_total", "api", "websocket", "outcome", "routed") - routedBefore; d != 1 {
		t.Errorf("gateway routed %g WebSocket upgrades, want 1", d)
	}
	harness.Eventually(t, settle, "both generations counted by one engine", func() error {
		got := delta(s.served(t), servedBefore)
		for _, v := range got {
			if v == 2 {
				return nil
			}
		}
		return fmt.Errorf("per engine: %v", got)
	})
}

// testDestinationHeader: a client naming an instance in
// x-gateway-destination-endpoint does not get it. Under round-robin twelve
// sequential requests give each engine four; a header that steered routing
// would give the named one all twelve.
func (s *system) testDestinationHeader(t *testing.T) {
	const n = 12
	target := s.Engines[0].Addr
	before := s.served(t)
	routedBefore := s.gwCounter(t, "llmrouter_gateway_requests_total", "outcome", "routed")
	for i := range n {
		h := http.Header{}
		h.Set("x-gateway-destination-endpoint", target)
		if i%2 == 1 {
			h.Set("x-gateway-destination-endpoint", target+","+target)
		}
		r := s.chat(context.Background(), chatReq{MaxTokens: 2, NoStream: i%3 == 0, Header: h})
		if err := r.Failure(); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	var got map[string]float64
	harness.Eventually(t, settle, "engines' success counters", func() error {
		got = delta(s.served(t), before)
		total := 0.0
		for _, v := range got {
			total += v
		}
		if total != n {
			return fmt.Errorf("engines served %g of %d: %v", total, n, got)
		}
		return nil
	})
	t.Logf("%d requests naming %s: per engine %v", n, target, got)
	if d := s.gwCounter(t, "llmrouter_gateway_requests_total", "outcome", "routed") - routedBefore; d != n {
		t.Errorf("gateway routed %g of %d", d, n)
	}
	for addr, v := range got {
		if v < n/3-1 || v > n/3+1 {
			t.Errorf("%s served %g, want %d±1 (round robin; the header named %s)", addr, v, n/3, target)
		}
	}
}

// TestSchedulerKilled: a separate scheduler is SIGKILLed twice under a
// continuous request loop, and no request fails.
//
// First the window between a restart and the agents' return is made long on
// purpose (the agents are paused from the kill until the data plane has
// reconnected to the new scheduler's xDS): the restarted scheduler knows no
// instance, Envoy keeps its endpoints, the gateway passes requests through.
// Then a plain kill: the gateway goes degraded at once (no request waits a
// second longer than before), and after a restart on the same ports the
// agents re-register and picks resume within 2 s.
func TestSchedulerKilled(t *testing.T) {
	s := startSystem(t, options{policy: "least-request", split: true, engineArgs: []string{"--ttft", "20ms", "--itl", "20ms"}})
	t0 := time.Now()
	l := s.startLoad(4, chatReq{MaxTokens: 6})
	stopped := false
	defer func() {
		if !stopped {
			l.stop()
		}
	}()
	time.Sleep(1500 * time.Millisecond)

	// 1. Restarted while the agents are away.
	passBefore := s.gwCounter(t, "llmrouter_gateway_passthrough_total", "reason", "rejected_503")
	killed1 := time.Now()
	s.Scheduler.Kill(t)
	// Paused only now: paused agents beside a live scheduler would miss
	// their reports and be removed, which is right but not this test.
	paused := true
	for _, e := range s.Engines {
		signal(t, e.Agent, syscall.SIGSTOP)
	}
	defer func() {
		if paused {
			for _, e := range s.Engines {
				_ = syscall.Kill(e.Agent.Pid(), syscall.SIGCONT)
			}
		}
	}()
	started := s.RestartScheduler(t)
	// The new scheduler holds an empty endpoint set back for xds.EmptyHold
	// (10 s); the agents must be back before that, or the fleet really is
	// empty.
	connected := s.Scheduler.WaitLog(t, 8*time.Second, "xds client connected", nil).At
	s.WaitGauge(t, 8*time.Second, s.GatewayHTTP, "llmrouter_gateway_degraded", 0)
	time.Sleep(time.Until(minTime(time.Now().Add(time.Second), started.Add(8*time.Second))))
	if d := s.gwCounter(t, "llmrouter_gateway_passthrough_total", "reason", "rejected_503") - passBefore; d < 1 {
		t.Errorf("no request passed through on the instance-less scheduler's 503 after the data plane reconnected")
	}
	for _, e := range s.Engines {
		signal(t, e.Agent, syscall.SIGCONT)
	}
	paused = false
	resumed1 := time.Now()
	s.WaitFleet(t, settle)
	t.Logf("agents paused: the data plane was back on xDS %s after the restart; the fleet %s after the agents resumed",
		connected.Sub(started).Round(time.Millisecond), time.Since(resumed1).Round(time.Millisecond))
	routed := s.gwCounter(t, "llmrouter_gateway_requests_total", "outcome", "routed")
	time.Sleep(500 * time.Millisecond)
	if d := s.gwCounter(t, "llmrouter_gateway_requests_total", "outcome", "routed") - routed; d < 1 {
		t.Errorf("no request routed by a pick after the agents came back")
	}

	// 2. Killed and restarted after a few seconds.
	degradedBefore := s.gwCounter(t, "llmrouter_gateway_requests_total", "outcome", "degraded")
	killed2 := time.Now()
	s.Scheduler.Kill(t)
	noticed := waitFor(t, killed2, 5*time.Second, "gateway degraded", func() (bool, error) {
		m, err := harness.Scrape(s.GatewayHTTP, "")
		if err != nil {
			return false, err
		}
		v, _ := m.Value("llmrouter_gateway_degraded")
		return v == 1, nil
	})
	t.Logf("gateway degraded %s after the scheduler was killed", noticed.Round(time.Millisecond))
	if noticed > 2*time.Second {
		t.Errorf("gateway noticed the dead scheduler after %s, want about a second", noticed)
	}
	body, err := harness.Get("http://"+s.GatewayHTTP+"/readyz", "")
	if err != nil || !strings.Contains(string(body), "degraded") {
		t.Errorf("gateway /readyz while degraded: %v %q, want 200 saying degraded", err, body)
	}
	time.Sleep(time.Until(killed2.Add(3 * time.Second)))
	if d := s.gwCounter(t, "llmrouter_gateway_requests_total", "outcome", "degraded") - degradedBefore; d < 1 {
		t.Errorf("no request answered in degraded mode while the scheduler was down")
	}
	restarted := s.RestartScheduler(t)
	back := waitFor(t, restarted, settle, "gateway out of degraded mode", func() (bool, error) {
		m, err := harness.Scrape(s.GatewayHTTP, "")
		if err != nil {
			return false, err
		}
		v, ok := m.Value("llmrouter_gateway_degraded")
		return ok && v == 0, nil
	})
	resumed2 := waitFor(t, restarted, settle, "picks routed by the restarted scheduler", func() (bool, error) {
		m, err := harness.Scrape(s.SchedulerHTTP, "")
		if err != nil {
			return false, err
		}
		return m.Sum("llmrouter_scheduler_decisions_total", "outcome", "routed") > 0, nil
	})
	t.Logf("after the restart: gateway recovered in %s, picks resumed in %s", back.Round(time.Millisecond), resumed2.Round(time.Millisecond))
	if resumed2 > 2*time.Second {
		t.Errorf("picks resumed %s after the scheduler restarted, want within 2s", resumed2)
	}
	s.WaitFleet(t, settle)
	t.Logf("all three agents re-registered %s after the restart", time.Since(restarted).Round(time.Millisecond))
	routed = s.gwCounter(t, "llmrouter_gateway_requests_total", "outcome", "routed")
	time.Sleep(500 * time.Millisecond)
	if d := s.gwCounter(t, "llmrouter_gateway_requests_total", "outcome", "routed") - routed; d < 1 {
		t.Errorf("no request routed by a pick after recovery")
	}

	rs := l.stop()
	stopped = true
	checkNoFailures(t, rs, t0, window{"restarted without instances", killed1, resumed1}, window{"scheduler down", killed2, restarted})
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// signal sends sig to one of the test's processes.
func signal(t *testing.T, p *harness.Proc, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(p.Pid(), sig); err != nil {
		t.Fatalf("%s: %v: %v", p.Name, sig, err)
	}
}

// TestGatewayKilled: the gateway is SIGKILLed under a continuous request
// loop; the data plane's failure_mode_allow carries every request to an
// engine without a pick. Every request also names engine 1 in
// x-gateway-destination-endpoint, which must not steer it even while no
// gateway strips the header. Restarted, the gateway picks again.
func TestGatewayKilled(t *testing.T) {
	s := startSystem(t, options{policy: "least-request", split: true, engineArgs: []string{"--ttft", "20ms", "--itl", "20ms"}})
	target := s.Engines[0].Addr
	h := http.Header{}
	h.Set("x-gateway-destination-endpoint", target)
	servedBefore := s.served(t)
	t0 := time.Now()
	l := s.startLoad(4, chatReq{MaxTokens: 6, Header: h})
	stopped := false
	defer func() {
		if !stopped {
			l.stop()
		}
	}()
	time.Sleep(1500 * time.Millisecond)

	killed := time.Now()
	s.Gateway.Kill(t)
	// A pick the dead gateway asked for may still be in the scheduler.
	time.Sleep(200 * time.Millisecond)
	decisions := s.schedCounter(t, "llmrouter_scheduler_decisions_total")
	downServed := s.served(t)
	time.Sleep(1800 * time.Millisecond)
	if n := len(l.replies()); n == 0 {
		t.Fatal("no replies at all")
	}
	downGot := delta(s.served(t), downServed)
	// In-flight picks may still complete; no new decisions.
	if d := s.schedCounter(t, "llmrouter_scheduler_decisions_total") - decisions; d != 0 {
		t.Errorf("the scheduler made %g decisions with no gateway running", d)
	}
	t.Logf("served per engine while the gateway was down: %v", downGot)
	total := 0.0
	for _, v := range downGot {
		total += v
	}
	if total < 6 {
		t.Errorf("only %g requests served in the 1.8 s without a gateway", total)
	}
	if downGot[target] > 0.6*total {
		t.Errorf("the client-named %s served %g of %g requests without a gateway: the header steered routing", target, downGot[target], total)
	}

	restarted := s.RestartGateway(t)
	resumed := waitFor(t, restarted, settle, "picks by the restarted gateway", func() (bool, error) {
		m, err := harness.Scrape(s.GatewayHTTP, "")
		if err != nil {
			return false, err
		}
		return m.Sum("llmrouter_gateway_requests_total", "outcome", "routed") > 0, nil
	})
	t.Logf("the restarted gateway picked again after %s", resumed.Round(time.Millisecond))
	time.Sleep(time.Second)

	rs := l.stop()
	stopped = true
	checkNoFailures(t, rs, t0, window{"gateway down", killed, restarted})
	all := delta(s.served(t), servedBefore)
	t.Logf("served per engine over the whole run: %v", all)
}

// window is a stretch of a test when a process was down or degraded.
type window struct {
	name     string
	from, to time.Time
}

// checkNoFailures wants every reply complete and, for requests started in a
// window, latency within a second of the slowest before the first window.
func checkNoFailures(t *testing.T, rs []reply, t0 time.Time, ws ...window) {
	t.Helper()
	var when []string
	for _, w := range ws {
		when = append(when, fmt.Sprintf("%s %+.3fs..%+.3fs", w.name, w.from.Sub(t0).Seconds(), w.to.Sub(t0).Seconds()))
	}
	f := failed(rs, t0)
	t.Logf("%d requests, %d failed (%s)", len(rs), len(f), strings.Join(when, ", "))
	if len(f) > 0 {
		t.Errorf("%d of %d requests failed; the first: %v", len(f), len(rs), f[:min(len(f), 10)])
	}
	before := slowest(rs, t0, ws[0].from)
	for _, w := range ws {
		n := 0
		for _, r := range rs {
			if !r.Start.Before(w.from) && r.Start.Before(w.to) {
				n++
			}
		}
		down := slowest(rs, w.from, w.to)
		t.Logf("%s: %d requests started, slowest %s (before: %s)", w.name, n, down.Round(time.Millisecond), before.Round(time.Millisecond))
		if n == 0 {
			t.Errorf("%s: no request started", w.name)
		}
		if down > before+time.Second {
			t.Errorf("%s: a request took %s, over a second more than the slowest before (%s)", w.name, down, before)
		}
	}
}

// TestQueueOverflow: every engine runs one sequence at a time (50 ms per
// token), the scheduler holds an instance back from one waiting request on,
// and the admission queue holds 4. A burst of 20 streams: those beyond the
// queue get 429 with Retry-After and an OpenAI error body; every other one
// completes with 200, the queued ones included.
func TestQueueOverflow(t *testing.T) {
	s := startSystem(t, options{policy: "least-request",
		engineArgs:          []string{"--ttft", "20ms", "--itl", "50ms", "--max-num-seqs", "1"},
		env:                 []string{"LLMROUTER_LLM_GATEWAY_MAX_QUEUE_SIZE=4", "LLMROUTER_LLM_SCHEDULER_MAX_WAITING=1"},
		waitScheduleTimeout: 30 * time.Second,
	})
	const burst = 20
	servedBefore := s.served(t)
	queuedBefore := s.schedCounter(t, "llmrouter_scheduler_decisions_total", "outcome", "queued")
	rejectedBefore := s.schedCounter(t, "llmrouter_scheduler_decisions_total", "outcome", "rejected")
	routedBefore := s.schedCounter(t, "llmrouter_scheduler_decisions_total", "outcome", "routed")
	cancelledBefore := s.schedCounter(t, "llmrouter_scheduler_decisions_total", "outcome", "cancelled")
	waitsBefore := s.schedCounter(t, "llmrouter_scheduler_queue_wait_seconds")

	replies := make([]reply, burst)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range burst {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			replies[i] = s.chat(ctx, chatReq{MaxTokens: 20, Prompt: fmt.Sprintf("request %d of the burst", i)})
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(began)

	ok, rejected := 0, 0
	var slowest429, slowestOK time.Duration
	for i, r := range replies {
		switch {
		case r.Err == nil && r.Status == http.StatusTooManyRequests:
			rejected++
			slowest429 = max(slowest429, r.End.Sub(r.Start))
			if ra, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || ra < 1 {
				t.Errorf("request %d: 429 with Retry-After %q, want whole seconds ≥ 1", i, r.Header.Get("Retry-After"))
			}
			var e struct {
				Error *struct {
					Message string `json:"message"`
					Type    string `json:"type"`
					Code    any    `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(r.Body, &e); err != nil || e.Error == nil || e.Error.Message == "" || e.Error.Type == "" {
				t.Errorf("request %d: 429 body %q, want an OpenAI error object", i, r.Body)
			}
		case r.Failure() == nil:
			ok++
			slowestOK = max(slowestOK, r.End.Sub(r.Start))
		default:
			t.Errorf("request %d: %v (want 200 to the end, or 429)", i, r.Failure())
		}
	}
	t.Logf("burst of %d in %s: %d completed (slowest %s), %d got 429 (slowest %s)", burst, took.Round(time.Millisecond),
		ok, slowestOK.Round(time.Millisecond), rejected, slowest429.Round(time.Millisecond))
	if rejected == 0 {
		t.Errorf("no 429 for a burst of %d against 3 single-sequence engines and a queue of 4", burst)
	}
	queued := s.schedCounter(t, "llmrouter_scheduler_decisions_total", "outcome", "queued") - queuedBefore
	waits := s.schedCounter(t, "llmrouter_scheduler_queue_wait_seconds") - waitsBefore
	schedRejected := s.schedCounter(t, "llmrouter_scheduler_decisions_total", "outcome", "rejected") - rejectedBefore
	t.Logf("scheduler: %g queued, %g queue waits ended, %g rejected", queued, waits, schedRejected)
	if queued < 1 || waits < queued {
		t.Errorf("%g requests queued, %g queue waits ended: want the queue used and every wait ended", queued, waits)
	}
	if schedRejected != float64(rejected) {
		t.Errorf("the scheduler rejected %g, clients saw %d 429s", schedRejected, rejected)
	}
	// Every accepted request, the queued ones included, was routed by a pick
	// (not passed through, not given up on).
	if d := s.schedCounter(t, "llmrouter_scheduler_decisions_total", "outcome", "routed") - routedBefore; d != float64(ok) {
		t.Errorf("the scheduler routed %g requests, clients got %d complete answers", d, ok)
	}
	if d := s.schedCounter(t, "llmrouter_scheduler_decisions_total", "outcome", "cancelled") - cancelledBefore; d != 0 {
		t.Errorf("%g queued requests were cancelled", d)
	}
	// Nothing accepted was lost: every 200 reached an engine and finished.
	harness.Eventually(t, settle, "every accepted request served by an engine", func() error {
		got := delta(s.served(t), servedBefore)
		n := 0.0
		for _, v := range got {
			n += v
		}
		if int(n) != ok {
			return fmt.Errorf("engines finished %g, clients got %d complete answers: %v", n, ok, got)
		}
		return nil
	})
	s.WaitGauge(t, settle, s.SchedulerHTTP, "llmrouter_scheduler_queue_length", 0)
}
