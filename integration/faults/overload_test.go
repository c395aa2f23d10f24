//go:build faults

package faults

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/integration/harness"
)

const (
	// defaultWaitScheduleTimeout is llm_gateway.wait_schedule_timeout's
	// default (internal/config): the overload scenario runs the default
	// configuration.
	defaultWaitScheduleTimeout = 10 * time.Second
	// rssBound is the most scheduler and gateway may hold resident.
	rssBound = 512 << 20
)

// TestOverload: three L4-profile engines running at most 4 sequences each,
// the default configuration, 20x their measured capacity for 30 s. Every
// request gets its first token, or a 429/503, within
// wait_schedule_timeout + 4 s of its arrival; a request sent 5 s after the
// load stops is served within wait_schedule_timeout + 2x its unloaded
// latency; scheduler and gateway stay under 512 MB resident.
//
// Those bounds are admission's. A machine starved of CPU can take requests
// around it on the documented degraded path — a pick not answered within
// pick_timeout, the gateway's breaker open, every agent silent at once
// (membership panic: PASSTHROUGH), the data plane's ext_proc message
// timeout — and such a request queues at an engine unjudged, delaying the
// admitted requests behind it (seen: 16.2 s for a request behind a queue
// of 5 that the gateway's 22 ms of degraded mode let through, on a machine
// at load 28), even past its client's timeout. A run that misses a bound
// (or has a request fail) with requests counted on that path does not
// measure admission: it is judged only on what admission does not govern
// (resident memory, no process exited), and the scenario runs once more, on
// a new deployment, judged in full. A miss without any such request fails
// at once.
func TestOverload(t *testing.T) {
	counted := scenario(t)
	r := overloadRun(t)
	if r.missed() && r.bypassed.total() > 0 {
		t.Logf("run 1 missed a bound (%d late: %s; probe %s) with %s taken around admission by a starved machine (degraded path); it does not measure admission: running the scenario again",
			r.nLate, strings.Join(r.late, "; "), r.probeTook.Round(time.Millisecond), r.bypassed)
		r.check(t, &row{}, false) // what admission does not govern still holds
		r.s.stopAll(t)
		r = overloadRun(t)
	}
	r.check(t, counted, true)
}

// overloadResult is what one run of the overload scenario saw.
type overloadResult struct {
	s                  *system
	began              time.Time
	rs                 []reply
	probe              reply
	unloaded, bound    time.Duration
	probeBound         time.Duration
	rate               float64
	peak               map[string]int64
	bypassed           bypassCounts
	late               []string // the first few requests later than bound
	nLate              int
	slowest, probeTook time.Duration
}

// missed reports whether a request missed one of admission's bounds, or
// failed: a request that waits in an engine's queue past its client's
// timeout (bound + 2x the unloaded latency + 5 s) fails, and so does the
// probe when the engines' queues still hold the load 5 s after it ended.
func (r *overloadResult) missed() bool {
	for _, rep := range r.rs {
		if rep.Failure() != nil && !rep.Shed() {
			return true
		}
	}
	return r.nLate > 0 || r.probe.Failure() != nil || r.probeTook > r.probeBound
}

func overloadRun(t *testing.T) *overloadResult {
	t.Helper()
	s := startSystem(t, options{split: true, engineArgs: []string{"--profile", "llama3-8b-l4", "--max-num-seqs", "4"}})
	const maxTokens = 128
	r := &overloadResult{s: s, bound: defaultWaitScheduleTimeout + 4*time.Second, peak: map[string]int64{}}
	q := chatReq{MaxTokens: maxTokens, Timeout: 60 * time.Second}

	// Unloaded latency of one request alone (the second of two: the first
	// warms connections and caches).
	for range 2 {
		u := s.chat(t.Context(), q)
		if err := u.Failure(); err != nil {
			t.Fatalf("unloaded request: %v", err)
		}
		r.unloaded = u.End.Sub(u.Start)
	}
	capacity := float64(len(s.Engines)*4) / r.unloaded.Seconds() // requests per second
	r.rate = 20 * capacity
	// A request answered within bound then streams for about its unloaded
	// latency; one still running well after that has failed, and ending it
	// keeps the scenario short when it does.
	q.Timeout = r.bound + 2*r.unloaded + 5*time.Second
	r.probeBound = defaultWaitScheduleTimeout + 2*r.unloaded
	t.Logf("unloaded latency %s: capacity %.2f req/s; offering %.1f req/s for 30 s", r.unloaded.Round(time.Millisecond), capacity, r.rate)
	bypassedBefore := s.bypassed(t)

	var peakMu sync.Mutex
	stopRSS := make(chan struct{})
	rssDone := make(chan struct{})
	go func() {
		defer close(rssDone)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, p := range []struct {
				name string
				pid  int
			}{{"scheduler", s.Scheduler.Pid()}, {"gateway", s.Gateway.Pid()}} {
				if b, err := rssBytes(p.pid); err == nil {
					peakMu.Lock()
					r.peak[p.name] = max(r.peak[p.name], b)
					peakMu.Unlock()
				}
			}
			select {
			case <-stopRSS:
				return
			case <-tick.C:
			}
		}
	}()

	const loadFor = 30 * time.Second
	l := s.openLoop(r.rate, loadFor, q, nil)
	r.began = l.began
	// Each engine's longest queue (vllm:num_requests_waiting) and when:
	// a queue longer than a batch or two is what makes first tokens late.
	type peakQueue struct {
		n  float64
		at time.Duration
	}
	queues := make([]peakQueue, len(s.Engines))
	queuesDone := make(chan struct{})
	go func() {
		defer close(queuesDone)
		for time.Since(l.began) < loadFor {
			for i, e := range s.Engines {
				if m, err := harness.Scrape(e.Addr, ""); err == nil {
					if v, ok := m.Value("vllm:num_requests_waiting"); ok && v > queues[i].n {
						queues[i] = peakQueue{v, time.Since(l.began)}
					}
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	// The probe: 5 s after the last arrival.
	time.Sleep(time.Until(l.began.Add(loadFor + 5*time.Second)))
	r.probe = s.chat(t.Context(), chatReq{MaxTokens: maxTokens, Timeout: r.probeBound + 5*time.Second})
	r.probeTook = r.probe.End.Sub(r.probe.Start)
	r.rs = l.wait()
	close(stopRSS)
	<-rssDone

	<-queuesDone
	for i, q := range queues {
		t.Logf("%s: longest queue %g requests, at %+.1fs", s.Engines[i].Proc.Name, q.n, q.at.Seconds())
	}
	r.bypassed = s.bypassed(t).minus(bypassedBefore)
	t.Logf("taken around admission (degraded path): %s", r.bypassed)
	for _, rep := range r.rs {
		answered := rep.First // the first token
		if rep.First.IsZero() {
			answered = rep.End // a shed (or failed) answer
		}
		d := answered.Sub(rep.Start)
		r.slowest = max(r.slowest, d)
		if d > r.bound {
			r.nLate++
			if len(r.late) < 5 {
				r.late = append(r.late, fmt.Sprintf("at %+.1fs: %s (status %d)", rep.Start.Sub(l.began).Seconds(), d.Round(time.Millisecond), rep.Status))
			}
		}
	}
	t.Logf("slowest first token or refusal: %s (bound %s)", r.slowest.Round(time.Millisecond), r.bound)
	t.Logf("the request sent 5 s after the load: %s (bound %s)", r.probeTook.Round(time.Millisecond), r.probeBound.Round(time.Millisecond))
	return r
}

// check judges the run into row. Without bounds (a run that went around
// admission) only what admission does not govern: resident memory, and no
// process exited; the rest is logged.
func (r *overloadResult) check(t *testing.T, row *row, bounds bool) {
	t.Helper()
	if !bounds {
		var o outcome
		for _, rep := range r.rs {
			o.sent++
			switch {
			case rep.Failure() == nil:
				o.ok++
			case rep.Shed():
				o.shed++
			default:
				o.failed++
			}
		}
		t.Logf("not judged: %d sent, %d succeeded, %d shed, %d failed; the request 5 s after the load: %s, %v",
			o.sent, o.ok, o.shed, o.failed, r.probeTook.Round(time.Millisecond), r.probe.Failure())
		r.checkRSS(t, row)
		r.s.alive(t)
		return
	}
	o := judge(t, row, r.rs, r.began, true)
	if r.nLate > 0 {
		t.Errorf("%d of %d requests got neither a first token nor a 429/503 within %s: %s", r.nLate, len(r.rs), r.bound, strings.Join(r.late, "; "))
	}
	if o.shed == 0 {
		t.Errorf("nothing was shed at 20x capacity")
	}

	row.add(outcome{sent: 1, ok: b2i(r.probe.Failure() == nil), failed: b2i(r.probe.Failure() != nil)})
	if err := r.probe.Failure(); err != nil {
		t.Errorf("the request sent 5 s after the load stopped failed after %s: %v", r.probeTook.Round(time.Millisecond), err)
	} else if r.probeTook > r.probeBound {
		t.Errorf("the request sent 5 s after the load stopped took %s, want within %s (wait_schedule_timeout + 2x %s)", r.probeTook.Round(time.Millisecond), r.probeBound.Round(time.Millisecond), r.unloaded.Round(time.Millisecond))
	}

	r.checkRSS(t, row)
	r.s.alive(t)
}

// checkRSS: scheduler and gateway stayed under rssBound resident.
func (r *overloadResult) checkRSS(t *testing.T, row *row) {
	t.Helper()
	row.note = fmt.Sprintf("(%.1f req/s; peak RSS scheduler %d MB, gateway %d MB)", r.rate, r.peak["scheduler"]>>20, r.peak["gateway"]>>20)
	for _, name := range []string{"scheduler", "gateway"} {
		t.Logf("%s peak RSS %d MB", name, r.peak[name]>>20)
		if r.peak[name] == 0 {
			t.Errorf("no RSS sample of the %s", name)
		} else if r.peak[name] > rssBound {
			t.Errorf("%s peak RSS %d MB, want under %d MB", name, r.peak[name]>>20, rssBound>>20)
		}
	}
}

// bypassCounts are requests that reached an engine without admission's
// judgment, by where they left the normal path.
type bypassCounts struct {
	degraded      float64 // gateway breaker open: no pick asked
	pickFailed    float64 // no pick answer within pick_timeout
	allSilent     float64 // the scheduler's PASSTHROUGH: every candidate silent
	extProcFailed float64 // the data plane's ext_proc message timeout (failure_mode_allow)
}

func (b bypassCounts) total() float64 {
	return b.degraded + b.pickFailed + b.allSilent + b.extProcFailed
}

func (b bypassCounts) minus(a bypassCounts) bypassCounts {
	return bypassCounts{b.degraded - a.degraded, b.pickFailed - a.pickFailed, b.allSilent - a.allSilent, b.extProcFailed - a.extProcFailed}
}

func (b bypassCounts) String() string {
	return fmt.Sprintf("%g requests (gateway degraded %g, pick timed out %g, every agent silent %g; data plane ext_proc timeout %g)",
		b.total(), b.degraded, b.pickFailed, b.allSilent, b.extProcFailed)
}

// bypassed reads the counts so far from the gateway's metrics and the
// stand-in's log.
func (s *system) bypassed(t *testing.T) bypassCounts {
	t.Helper()
	reason := func(r string) float64 {
		return s.Counter(t, s.GatewayHTTP, "llmrouter_gateway_passthrough_total", "reason", r)
	}
	return bypassCounts{
		degraded: reason("degraded"), pickFailed: reason("scheduler_error"), allSilent: reason("scheduler_passthrough"),
		extProcFailed: float64(len(s.DataPlane.Logs("", func(l harness.Line) bool {
			return strings.Contains(l.Raw, "ext_proc failed") && strings.Contains(l.Raw, "llmrouter.ext_proc.pick")
		}))),
	}
}

// stopAll kills every process of the deployment (a run that is not judged
// frees the machine for the next).
func (s *system) stopAll(t *testing.T) {
	t.Helper()
	for _, p := range s.procs() {
		p.Kill(t)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
