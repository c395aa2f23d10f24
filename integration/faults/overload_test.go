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
func TestOverload(t *testing.T) {
	row := scenario(t)
	s := startSystem(t, options{split: true, engineArgs: []string{"--profile", "llama3-8b-l4", "--max-num-seqs", "4"}})
	const maxTokens = 128
	bound := defaultWaitScheduleTimeout + 4*time.Second
	q := chatReq{MaxTokens: maxTokens, Timeout: 60 * time.Second}

	// Unloaded latency of one request alone (the second of two: the first
	// warms connections and caches).
	var unloaded time.Duration
	for range 2 {
		r := s.chat(t.Context(), q)
		if err := r.Failure(); err != nil {
			t.Fatalf("unloaded request: %v", err)
		}
		unloaded = r.End.Sub(r.Start)
	}
	capacity := float64(len(s.Engines)*4) / unloaded.Seconds() // requests per second
	rate := 20 * capacity
	// A request answered within bound then streams for about its unloaded
	// latency; one still running well after that has failed, and ending it
	// keeps the scenario short when it does.
	q.Timeout = bound + 2*unloaded + 5*time.Second
	probeBound := defaultWaitScheduleTimeout + 2*unloaded
	t.Logf("unloaded latency %s: capacity %.2f req/s; offering %.1f req/s for 30 s", unloaded.Round(time.Millisecond), capacity, rate)

	var peakMu sync.Mutex
	peak := map[string]int64{}
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
					peak[p.name] = max(peak[p.name], b)
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
	l := s.openLoop(rate, loadFor, q, nil)
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
	probe := s.chat(t.Context(), chatReq{MaxTokens: maxTokens, Timeout: probeBound + 5*time.Second})
	rs := l.wait()
	close(stopRSS)
	<-rssDone

	<-queuesDone
	for i, q := range queues {
		t.Logf("%s: longest queue %g requests, at %+.1fs", s.Engines[i].Proc.Name, q.n, q.at.Seconds())
	}
	o := judge(t, row, rs, l.began, true)
	var late []string
	nLate := 0
	var slowest time.Duration
	for _, r := range rs {
		answered := r.First // the first token
		if r.First.IsZero() {
			answered = r.End // a shed (or failed) answer
		}
		d := answered.Sub(r.Start)
		slowest = max(slowest, d)
		if d > bound {
			nLate++
			if len(late) < 5 {
				late = append(late, fmt.Sprintf("at %+.1fs: %s (status %d)", r.Start.Sub(l.began).Seconds(), d.Round(time.Millisecond), r.Status))
			}
		}
	}
	t.Logf("slowest first token or refusal: %s (bound %s)", slowest.Round(time.Millisecond), bound)
	if nLate > 0 {
		t.Errorf("%d of %d requests got neither a first token nor a 429/503 within %s: %s", nLate, len(rs), bound, strings.Join(late, "; "))
	}
	if o.shed == 0 {
		t.Errorf("nothing was shed at 20x capacity")
	}

	row.add(outcome{sent: 1, ok: b2i(probe.Failure() == nil), failed: b2i(probe.Failure() != nil)})
	took := probe.End.Sub(probe.Start)
	t.Logf("the request sent 5 s after the load: %s (bound %s)", took.Round(time.Millisecond), probeBound.Round(time.Millisecond))
	if err := probe.Failure(); err != nil {
		t.Errorf("the request sent 5 s after the load stopped failed after %s: %v", took.Round(time.Millisecond), err)
	} else if took > probeBound {
		t.Errorf("the request sent 5 s after the load stopped took %s, want within %s (wait_schedule_timeout + 2x %s)", took.Round(time.Millisecond), probeBound.Round(time.Millisecond), unloaded.Round(time.Millisecond))
	}

	peakMu.Lock()
	defer peakMu.Unlock()
	row.note = fmt.Sprintf("(%.1f req/s; peak RSS scheduler %d MB, gateway %d MB)", rate, peak["scheduler"]>>20, peak["gateway"]>>20)
	for _, name := range []string{"scheduler", "gateway"} {
		t.Logf("%s peak RSS %d MB", name, peak[name]>>20)
		if peak[name] == 0 {
			t.Errorf("no RSS sample of the %s", name)
		} else if peak[name] > rssBound {
			t.Errorf("%s peak RSS %d MB, want under %d MB", name, peak[name]>>20, rssBound>>20)
		}
	}
	s.alive(t)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
