package cluster

// A scheduler restart in the middle of a run, and the windowed time series
// that shows what it costs and how long the fleet takes to recover from it
// (docs/operating.md, "What a scheduler restart loses").
//
// At Options.RestartAt the scheduler is replaced by a fresh one, built as
// Run built the first (same configuration, clock, logger and random
// stream), with nothing of the old one's memory: registry, admission queue,
// in-flight picks, session affinity, the policy's prefix index. What a real
// restart does to the requests around it is simulated as the gateway and
// Envoy behave:
//
//   - Requests waiting in the old scheduler's admission queue lose their pick
//     stream: the gateway passes them through, and Envoy sends them round
//     robin over the endpoints it still holds.
//   - Requests already on an engine finish there; their outcome reports reach
//     the new scheduler, which ignores request ids it did not pick
//     (Scheduler.Report).
//   - The agents reconnect and re-register one by one over Options.RestartGap
//     (agent backoff capped at 1 s plus the scheduler's start: about 1.5 s in
//     `make test-faults`), instance i at RestartAt + gap × (i+1)/N, then
//     report as before. While none is registered the new scheduler answers
//     503 ("no instance is registered") and the request passes through,
//     round robin; once one is, every pick goes to the instances registered
//     so far, as it would. The order and even spacing of reconnections is the
//     simplification: real agents come back in whatever order their backoff
//     timers fire.
//   - The restarted scheduler's metrics are not collected (Options.Metrics
//     keeps the first scheduler's; a real restarted process starts its
//     counters from zero).
//
// The series (Options.Window) buckets completed requests by arrival time:
// per window, the prompt tokens served from a prefix cache over all prompt
// tokens (the engines' prefix hit ratio, by request) and the mean TTFT.
// Windows are aligned on the restart, so none straddles it.

import (
	"fmt"
	"io"
	"sort"
	"time"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler"
	"github.com/llmrouter/llmrouter/sim/workload"
)

const (
	// DefaultRestartGap is how long the agents take to re-register after a
	// scheduler restart: picks resume within about 1.5 s in make test-faults.
	DefaultRestartGap = 1500 * time.Millisecond
	// DefaultWindow is the series' window when Options.Window is not set.
	DefaultWindow = 5 * time.Second
	// BaselineSpan is how much of the run before the restart the pre-restart
	// hit ratio and TTFT average over (the whole windows within it; at least
	// six windows), at most the second half of the run before it: the first
	// is the warm-up.
	BaselineSpan = 30 * time.Second
	// RecoveryTolerance: the hit ratio has recovered in the first window
	// after the restart whose ratio is at least (1 - RecoveryTolerance) times
	// the pre-restart one.
	RecoveryTolerance = 0.05
)

// checkRestart validates RestartAt, RestartGap and Window and fills their
// defaults.
func (o *Options) checkRestart() error {
	if o.RestartAt < 0 {
		return fmt.Errorf("restart at %s: want a positive time since the start of the run (0: no restart)", o.RestartAt)
	}
	if o.RestartGap < 0 {
		return fmt.Errorf("restart gap %s: want 0 or more (0: the default %s)", o.RestartGap, DefaultRestartGap)
	}
	if o.Window < 0 {
		return fmt.Errorf("window %s: want a positive length of virtual time (0: %s with a restart, no series without)", o.Window, DefaultWindow)
	}
	if o.RestartAt == 0 {
		return nil
	}
	if o.Plan.Duration > 0 && o.RestartAt >= o.Plan.Duration {
		return fmt.Errorf("restart at %s: want a time before the end of the run's duration %s", o.RestartAt, o.Plan.Duration)
	}
	if len(o.Roles) > 0 {
		return fmt.Errorf("restart at %s: a restart is not simulated with prefill/decode roles (run both-role instances)", o.RestartAt)
	}
	if o.RestartGap == 0 {
		o.RestartGap = DefaultRestartGap
	}
	if o.Window == 0 {
		o.Window = DefaultWindow
	}
	return nil
}

// restarter replaces the scheduler at Options.RestartAt and keeps the
// series.
type restarter struct {
	at, gap time.Duration
	cfg     config.Config
	deps    scheduler.Deps
	// done: the scheduler was replaced; back: how many instances (the first
	// back, in index order) have re-registered with the new one since.
	done bool
	back int
	// rr is Envoy's round robin over the endpoints it holds, for requests
	// the gateway passes through.
	rr                      int
	passedThrough, requeued int
	win                     time.Duration
	first                   int // index of wins[0]: windows start at at + k × win
	wins                    []winAcc
}

type winAcc struct {
	requests       int
	prompt, cached int64
	ttft           time.Duration
}

// newRestarter is nil when the run neither restarts nor keeps a series.
func newRestarter(o Options, cfg config.Config, deps scheduler.Deps) *restarter {
	if o.RestartAt == 0 && o.Window == 0 {
		return nil
	}
	// Only the first scheduler reports metrics: registering the same
	// collectors twice is an error.
	deps.Metrics = nil
	r := &restarter{at: o.RestartAt, gap: o.RestartGap, cfg: cfg, deps: deps, win: o.Window}
	// Windows start at RestartAt + k × Window for every integer k, so the
	// first one begins at or before 0.
	r.first = -int((o.RestartAt + o.Window - 1) / o.Window)
	return r
}

// restartNext is the time of the next restart event: the restart, then
// each agent's re-registration.
func (s *sim) restartNext() time.Duration {
	r := s.restart
	switch {
	case r == nil || r.at == 0:
		return never
	case !r.done:
		return r.at
	case r.back < len(s.insts):
		return r.at + r.gap*time.Duration(r.back+1)/time.Duration(len(s.insts))
	}
	return never
}

// restartStep runs the event restartNext announced.
func (s *sim) restartStep() error {
	r := s.restart
	if !r.done {
		sched, err := scheduler.New(r.cfg, r.deps)
		if err != nil {
			return fmt.Errorf("restarting the scheduler: %w", err)
		}
		s.sched, r.done = sched, true
		// The old scheduler's queue is gone with it: those requests'
		// gateways lose the pick stream and pass them through, in the order
		// they arrived.
		var queued []*flight
		for _, f := range s.flights {
			if f.inst == nil {
				queued = append(queued, f)
			}
		}
		sort.Slice(queued, func(i, j int) bool { return queued[i].engID < queued[j].engID })
		s.queued = 0
		r.requeued = len(queued)
		for _, f := range queued {
			s.roundRobin(f)
		}
		return nil
	}
	in := s.insts[r.back]
	if err := s.registerAgent(in, s.modelNames()); err != nil {
		return fmt.Errorf("re-registering simulated instance %s after the restart: %w", in.addr, err)
	}
	r.back++
	// The agent's first report on its new stream: the engine's state now,
	// not the empty engine of the first registration.
	s.report(in)
	return nil
}

// modelNames is the models every instance registers: the plan's, the
// default model standing for a request that names none.
func (s *sim) modelNames() []string {
	seen := map[string]bool{}
	var names []string
	for _, m := range s.o.Plan.Source.Models() {
		if m == "" {
			m = s.o.Plan.DefaultModel
		}
		if !seen[m] {
			seen[m] = true
			names = append(names, m)
		}
	}
	return names
}

// agentUp reports whether in's agent is connected to the current scheduler
// (its reports reach it): always, but between a restart and its
// re-registration.
func (s *sim) agentUp(in *instance) bool {
	r := s.restart
	return r == nil || !r.done || in.idx < r.back
}

// passThrough handles a pick answer the gateway would pass through to
// Envoy since the restart: 503 while no instance is registered (or
// PASSTHROUGH). It reports whether it took the request.
func (s *sim) passThrough(f *flight, resp *llmrouterv1.PickResponse) bool {
	r := s.restart
	if r == nil || !r.done {
		return false
	}
	switch st := resp.GetStatus(); {
	case st == llmrouterv1.PickResponse_PASSTHROUGH:
	case st == llmrouterv1.PickResponse_REJECTED && resp.GetHttpStatus() == 503:
	default:
		return false
	}
	r.passedThrough++
	s.roundRobin(f)
	return true
}

// roundRobin sends f where Envoy's round robin would, without a pick.
func (s *sim) roundRobin(f *flight) {
	r := s.restart
	in := s.insts[r.rr%len(s.insts)]
	r.rr++
	s.dispatch(f, &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_ROUTED, Endpoints: []string{in.addr}})
}

// observe adds a completed request to its arrival's window.
func (s *sim) observe(f *flight, o workload.Outcome) {
	r := s.restart
	if r == nil || r.win <= 0 {
		return
	}
	k := int(floorDiv(f.req.Arrival-r.at, r.win)) - r.first
	if k < 0 {
		return
	}
	for len(r.wins) <= k {
		r.wins = append(r.wins, winAcc{})
	}
	w := &r.wins[k]
	w.requests++
	w.prompt += int64(o.InputTokens)
	w.cached += int64(o.CachedTokens)
	w.ttft += o.TTFT
}

func floorDiv(a, b time.Duration) time.Duration {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// Window is one slice of virtual time of Result.Series: the requests that
// arrived in it and completed.
type Window struct {
	Start, End time.Duration
	Requests   int
	// PromptTokens and CachedTokens: the prompts' tokens, and those of them
	// an engine served from its prefix cache.
	PromptTokens, CachedTokens int64
	// HitRatio is CachedTokens / PromptTokens (-1 without requests).
	HitRatio float64
	MeanTTFT time.Duration
}

// Series is the windowed hit ratio and TTFT of a run, and, with a restart,
// how it dipped and recovered.
type Series struct {
	Window  time.Duration
	Windows []Window
	// RestartAt and RestartGap: the restart (0: none).
	RestartAt, RestartGap time.Duration
	// PassedThrough: requests arriving while no instance was registered
	// with the new scheduler; Requeued: requests waiting in the old one's
	// queue at the restart. Both went round robin, without a pick.
	PassedThrough, Requeued int
	// Recovery is the analysis around the restart (Series.Around(RestartAt)).
	Recovery Recovery
}

// Recovery is how the windowed hit ratio behaved after an instant.
type Recovery struct {
	At time.Duration
	// Before and TTFTBefore: the hit ratio and mean TTFT of the requests
	// that arrived in the whole windows of the BaselineSpan (or six
	// windows) before At, at most the second half of the run before it.
	Before     float64
	TTFTBefore time.Duration
	// Dip is the lowest windowed hit ratio from At on (DipAt its window's
	// start), TTFTPeak the highest windowed mean TTFT.
	Dip           float64
	DipAt         time.Duration
	TTFTPeak      time.Duration
	TTFTPeakAt    time.Duration
	Recovered     bool
	RecoveredAt   time.Duration // end of the first window back within RecoveryTolerance of Before
	RecoveryTime  time.Duration // RecoveredAt - At
	LastHitRatio  float64       // the last whole window's before the plan's duration ended
	AfterWindows  int           // whole windows from At to the end of the plan's duration
	BeforeWindows int           // whole windows Before and TTFTBefore average over
}

// series closes the windows for Result (nil without Options.Window).
func (s *sim) series() *Series {
	r := s.restart
	if r == nil || r.win <= 0 {
		return nil
	}
	out := &Series{Window: r.win, PassedThrough: r.passedThrough, Requeued: r.requeued}
	if r.at > 0 {
		out.RestartAt, out.RestartGap = r.at, r.gap
	}
	end := s.o.Plan.Duration
	for i, w := range r.wins {
		start := r.at + time.Duration(i+r.first)*r.win
		win := Window{Start: max(start, 0), End: start + r.win, Requests: w.requests, PromptTokens: w.prompt, CachedTokens: w.cached, HitRatio: -1}
		if end > 0 && win.Start >= end {
			break // the drain after the last arrivals: no steady state
		}
		if end > 0 {
			win.End = min(win.End, end)
		}
		if w.prompt > 0 {
			win.HitRatio = float64(w.cached) / float64(w.prompt)
		}
		if w.requests > 0 {
			win.MeanTTFT = w.ttft / time.Duration(w.requests)
		}
		out.Windows = append(out.Windows, win)
	}
	if r.at > 0 {
		out.Recovery = out.Around(r.at)
	}
	return out
}

// Around analyses the windows around at (a window boundary: with a restart,
// its time): the hit ratio before, the dip after, and when it came back.
// A run without a restart gives the control: no dip.
func (sr *Series) Around(at time.Duration) Recovery {
	rc := Recovery{At: at, Before: -1, Dip: -1, LastHitRatio: -1}
	var prompt, cached int64
	var ttft time.Duration
	var n int
	from := max(at-max(BaselineSpan, 6*sr.Window), at/2)
	for _, w := range sr.Windows {
		if w.Start >= from && w.End <= at && w.End-w.Start == sr.Window {
			prompt += w.PromptTokens
			cached += w.CachedTokens
			ttft += w.MeanTTFT * time.Duration(w.Requests)
			n += w.Requests
			rc.BeforeWindows++
		}
	}
	if prompt == 0 || n == 0 {
		return rc
	}
	rc.Before, rc.TTFTBefore = float64(cached)/float64(prompt), ttft/time.Duration(n)
	for _, w := range sr.Windows {
		if w.Start < at || w.HitRatio < 0 || w.End-w.Start < sr.Window {
			continue
		}
		rc.AfterWindows++
		if rc.Dip < 0 || w.HitRatio < rc.Dip {
			rc.Dip, rc.DipAt = w.HitRatio, w.Start
		}
		if w.MeanTTFT > rc.TTFTPeak {
			rc.TTFTPeak, rc.TTFTPeakAt = w.MeanTTFT, w.Start
		}
		if !rc.Recovered && w.HitRatio >= (1-RecoveryTolerance)*rc.Before {
			rc.Recovered, rc.RecoveredAt, rc.RecoveryTime = true, w.End, w.End-at
		}
		rc.LastHitRatio = w.HitRatio
	}
	return rc
}

// Write prints the series and its recovery as text.
func (sr *Series) Write(w io.Writer) {
	rc := sr.Recovery
	if sr.RestartAt > 0 {
		fmt.Fprintf(w, "Scheduler restart at %s (agents re-registered over %s; %d requests passed through round robin while none was, %d waiting in the old queue went round robin)\n",
			sr.RestartAt, sr.RestartGap, sr.PassedThrough, sr.Requeued)
		if rc.Before < 0 {
			fmt.Fprintf(w, "  no completed request in the %s before the restart: nothing to compare with\n", BaselineSpan)
		} else {
			fmt.Fprintf(w, "  prefix hit ratio before (the %s before it): %.3f   mean TTFT %s\n", time.Duration(rc.BeforeWindows)*sr.Window, rc.Before, ms(rc.TTFTBefore))
			if rc.Dip >= 0 {
				fmt.Fprintf(w, "  dip: %.3f in the window from %s (%.0f%% of before); mean TTFT peaked at %s (window from %s)\n",
					rc.Dip, rc.DipAt, 100*rc.Dip/rc.Before, ms(rc.TTFTPeak), rc.TTFTPeakAt)
			}
			if rc.Recovered {
				fmt.Fprintf(w, "  recovery time: %s (the first %s window back within %.0f%% of before ends at %s)\n",
					rc.RecoveryTime, sr.Window, 100*RecoveryTolerance, rc.RecoveredAt)
			} else {
				fmt.Fprintf(w, "  recovery time: not recovered within the run (last window %.3f)\n", rc.LastHitRatio)
			}
		}
	}
	fmt.Fprintf(w, "  %-16s %9s %10s %12s\n", "window", "requests", "hit ratio", "mean TTFT")
	for _, x := range sr.Windows {
		mark := ""
		if sr.RestartAt > 0 && x.Start == sr.RestartAt {
			mark = "  <- restart"
		}
		hr := "-"
		if x.HitRatio >= 0 {
			hr = fmt.Sprintf("%.3f", x.HitRatio)
		}
		fmt.Fprintf(w, "  %-16s %9d %10s %12s%s\n", fmt.Sprintf("%s-%s", x.Start, x.End), x.Requests, hr, ms(x.MeanTTFT), mark)
	}
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}
