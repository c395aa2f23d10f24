package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/integration/harness"
)

// startPDEngines runs one prefill enginesim and two decode enginesims of
// s.opts.pd's protocol, each with its agent; the decode agents run pd
// proxies and advertise them. s.Engines[0] is the prefill instance.
func (s *system) startPDEngines(t *testing.T) {
	t.Helper()
	api := s.opts.pd
	sim := func(name string, extra ...string) *engine {
		args := append([]string{"enginesim", "--listen", "127.0.0.1:0", "--model", model, "--engine", api}, s.opts.engineArgs...)
		e := &engine{Proc: harness.Start(t, harness.Spec{Name: name, Args: append(args, extra...)})}
		e.Sim = e.Proc.WaitLog(t, startTimeout, "enginesim serving", nil).Str("addr")
		e.Addr = e.Sim
		return e
	}
	agent := func(e *engine, name string, extra ...string) {
		e.Agent = s.StartAgent(t, name, e.Sim, e.Addr, extra...)
		e.AgentHTTP = e.Agent.WaitLog(t, startTimeout, "http listening", nil).Str("addr")
	}
	var preArgs, preAgent []string
	if api == "sglang" {
		boot := harness.FreeAddr(t)
		_, port, _ := net.SplitHostPort(boot)
		preArgs, preAgent = []string{"--bootstrap-listen", boot}, []string{"--bootstrap-port", port}
	}
	pre := sim("enginesim-prefill", append([]string{"--role", "prefill"}, preArgs...)...)
	agent(pre, "agent-prefill", append([]string{"--role", "prefill"}, preAgent...)...)
	s.Engines = append(s.Engines, pre)
	for i := 1; i <= 2; i++ {
		d := sim(fmt.Sprintf("enginesim-decode-%d", i), "--role", "decode", "--kv-transfer-per-block", "20us")
		d.Addr = harness.FreeAddr(t)
		agent(d, fmt.Sprintf("agent-decode-%d", i), "--role", "decode", "--pd-proxy", d.Addr)
		s.Engines = append(s.Engines, d)
	}
}

// pdCounts is what the test reads of a pd fleet at one moment.
type pdCounts struct {
	prefilled, decoded   float64 // engines: disaggregated halves served
	disaggregated, local float64 // proxies: requests by path
	fallbacks            float64
	decisions            map[string]float64
}

func (s *system) pdCounts(t *testing.T) pdCounts {
	t.Helper()
	c := pdCounts{decisions: map[string]float64{}}
	if !s.Engines[0].Dead() {
		c.prefilled = s.Counter(t, s.Engines[0].Sim, "enginesim_pd_requests_total", "side", "prefill")
	}
	for _, d := range s.Engines[1:] {
		c.decoded += s.Counter(t, d.Sim, "enginesim_pd_requests_total", "side", "decode")
		c.disaggregated += s.Counter(t, d.AgentHTTP, "llmrouter_pd_requests_total", "path", "disaggregated")
		c.local += s.Counter(t, d.AgentHTTP, "llmrouter_pd_requests_total", "path", "local")
		c.fallbacks += s.Counter(t, d.AgentHTTP, "llmrouter_pd_fallbacks_total")
	}
	for _, l := range []string{"disaggregated", "short_prompt", "cached_prompt", "decode_not_busy", "no_prefill_instance"} {
		c.decisions[l] = s.schedCounter(t, "llmrouter_scheduler_pd_decisions_total", "decision", l)
	}
	return c
}

// longPrompt is about n tokens (4 characters each) of text distinct per seed.
func longPrompt(seed string, n int) string {
	var b strings.Builder
	for b.Len() < 4*n {
		fmt.Fprintf(&b, "%s word %d. ", seed, b.Len())
	}
	return b.String()
}

// complete wants a whole stream of exactly tokens output tokens.
func complete(t *testing.T, r reply, tokens int) {
	t.Helper()
	if err := r.Failure(); err != nil {
		t.Fatal(err)
	}
	if r.Usage == nil || r.Usage.CompletionTokens != tokens {
		t.Fatalf("usage %+v, want %d completion tokens", r.Usage, tokens)
	}
}

func TestPDSplitVLLM(t *testing.T)   { testPDSplit(t, "vllm") }
func TestPDSplitSGLang(t *testing.T) { testPDSplit(t, "sglang") }

// testPDSplit: with pd-split every request is prefilled on the prefill
// engine and decoded on a decode engine, streams intact; killing the prefill
// engine under load fails no request (the proxies prefill locally).
func testPDSplit(t *testing.T, api string) {
	s := startSystem(t, options{policy: "pd-split", pd: api, engineArgs: []string{"--ttft", "20ms", "--itl", "10ms"}})
	before := s.pdCounts(t)
	const n = 10
	for i := range n {
		complete(t, s.chat(context.Background(), chatReq{MaxTokens: 6, Prompt: longPrompt(fmt.Sprint(i), 300)}), 6)
	}
	after := s.pdCounts(t)
	if d := after.prefilled - before.prefilled; d != n {
		t.Errorf("prefill engine prefilled %g of %d requests", d, n)
	}
	if d := after.decoded - before.decoded; d != n {
		t.Errorf("decode engines continued %g of %d requests from transferred KV", d, n)
	}
	if d, l := after.disaggregated-before.disaggregated, after.local-before.local; d != n || l != 0 {
		t.Errorf("proxies: %g disaggregated, %g local; want %d and 0", d, l, n)
	}
	if d := after.decisions["disaggregated"] - before.decisions["disaggregated"]; d != n {
		t.Errorf("scheduler counted %g disaggregated decisions, want %d", d, n)
	}
	// The pd dashboard reads only what the scheduler and the proxies export.
	checkExported(t, exportedFamilies(t, s.SchedulerHTTP, s.Engines[1].AgentHTTP),
		shippedExprs(t, "../../deploy/grafana/llmrouter-pd-dashboard.json"), 5)

	// Kill the prefill engine under load: nothing fails.
	l := s.startLoad(4, chatReq{MaxTokens: 6, Prompt: longPrompt("load", 300)})
	t0 := time.Now()
	time.Sleep(time.Second)
	killed := time.Now()
	s.Engines[0].Proc.Kill(t)
	time.Sleep(3 * time.Second)
	rs := l.stop()
	checkNoFailures(t, rs, t0, window{name: "prefill engine killed", from: killed, to: time.Now()})
	end := s.pdCounts(t)
	if end.local-after.local == 0 {
		t.Error("no request was prefilled locally after the prefill engine died")
	}
	t.Logf("%s: after the kill %g fallbacks, %g local, %g disaggregated", api, end.fallbacks-after.fallbacks, end.local-after.local, end.disaggregated-after.disaggregated)
}

// TestDynamicPDSplit: dynamic-pd-split follows its documented rule decision
// by decision: an idle decode instance prefills for itself; on busy ones a
// short prompt stays local, a long uncached one is disaggregated, and the
// same long prompt again (now cached where it is decoded) stays local. Each
// decision is counted once under its reason, and the proxies agree.
func TestDynamicPDSplit(t *testing.T) {
	// The predicted-wait judgment is off (spreadEnv says why for the
	// policies' spread). Each decode instance runs one background stream; a
	// report that catches a request waiting for its first step beside it
	// (up to one 20 ms step) teaches admission a batch limit of one, and
	// these enginesims, measured far slower than the cost model, are then
	// judged full at one running request: the instance holding the prompt
	// was left out of the decode candidates and the cached prompt was
	// disaggregated elsewhere (about once in 25 runs on a loaded machine,
	// the debug log showing one candidate). This test follows
	// dynamic-pd-split's decisions, not admission's.
	s := startSystem(t, options{policy: "dynamic-pd-split", pd: "vllm",
		engineArgs: []string{"--ttft", "20ms", "--itl", "20ms"},
		env: append([]string{"LLMROUTER_LLM_SCHEDULER_DECODE_POLICY=prefix-cache",
			"LLMROUTER_LLM_SCHEDULER_POLICIES_PD_DECODE_BUSY_LOAD=1", "LLMROUTER_LLM_SCHEDULER_POLICIES_PD_MIN_PREFILL_TOKENS=256"}, spreadEnv...)})
	decode := s.Engines[1:]
	// settled waits until the scheduler sees the decode engines as they
	// are: no pick in flight (the gateway reports a request done after its
	// response has ended) and each decode engine running what its agent last
	// reported (every 200 ms). Until then a pick may count the last request
	// still in flight on the instance that served it, or miss a background
	// stream, and weigh load against cache on numbers that are not the
	// engines'. It replaces a half-second sleep for the agents' reports.
	settled := func(what string) {
		t.Helper()
		waitFor(t, time.Now(), 10*time.Second, what+": the scheduler's view settled", func() (bool, error) {
			inflight := s.schedCounter(t, "llmrouter_scheduler_inflight_requests")
			ok, seen := inflight == 0, fmt.Sprintf("%g in flight", inflight)
			for _, d := range decode {
				sim, sched := s.Counter(t, d.Sim, "vllm:num_requests_running"), s.schedCounter(t, "llmrouter_instance_running_requests", "engine", d.Addr)
				ok = ok && sim == sched
				seen += fmt.Sprintf("; %s running %g, the scheduler sees %g", d.Addr, sim, sched)
			}
			return ok, errors.New(seen)
		})
	}
	step := func(what, prompt, want string) {
		t.Helper()
		settled(what)
		b := s.pdCounts(t)
		complete(t, s.chat(context.Background(), chatReq{MaxTokens: 4, Prompt: prompt}), 4)
		a := s.pdCounts(t)
		for l, v := range a.decisions {
			d := v - b.decisions[l]
			if (l == want && d != 1) || (l != want && d != 0) {
				t.Fatalf("%s: decision %s counted %g times, want %s once: %v -> %v", what, l, d, want, b.decisions, a.decisions)
			}
		}
		dis := want == "disaggregated"
		if got := a.disaggregated - b.disaggregated; got != map[bool]float64{true: 1, false: 0}[dis] || a.prefilled-b.prefilled != got || a.local-b.local != 1-got {
			t.Fatalf("%s: proxies disaggregated %g, local %g, prefill engine %g; the scheduler decided %s", what, got, a.local-b.local, a.prefilled-b.prefilled, want)
		}
	}
	longA, longB := longPrompt("alpha", 500), longPrompt("bravo", 500)
	step("long prompt, decode idle", longA, "decode_not_busy")

	// Keep both decode engines busy with one long stream each, sent to the
	// engines themselves. Routed one every half second until both ran, a
	// loaded run sent three (two on one instance), leaving the decode
	// instances unequally loaded for the cached prompt below.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	for i, d := range decode {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.ChatTo(ctx, d.Sim, chatReq{MaxTokens: 2000, Prompt: fmt.Sprintf("background %d", i)})
		}()
	}
	waitFor(t, time.Now(), 10*time.Second, "both decode engines busy", func() (bool, error) {
		var running []float64
		for _, d := range decode {
			running = append(running, s.Counter(t, d.Sim, "vllm:num_requests_running"))
		}
		return !slices.Contains(running, 0), fmt.Errorf("running %v", running)
	})
	step("short prompt, decode busy", "Say hello.", "short_prompt")
	step("long uncached prompt, decode busy", longB, "disaggregated")
	step("the same long prompt again, cached where decoded", longB, "cached_prompt")
}
