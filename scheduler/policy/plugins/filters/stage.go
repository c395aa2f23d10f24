package filters

import (
	"fmt"
	"math"
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/admission"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// The scheduler's stage: filters every decision runs ahead of its profile.
// The scheduler decides what happens when they leave nothing (queue, shed
// with 429, or pass through to Envoy when every instance is silent).
const (
	// Routable keeps the instances that may take picks: healthy,
	// verified, not draining and reporting (policy.Instance.Routable).
	Routable = "routable-filter"
	// Saturation keeps the instances with room for the request
	// (scheduler/admission): under maxWaiting, maxKVCacheUsage and
	// maxPredictedWait. It marks each candidate's Saturated flag.
	Saturation = "saturation-filter"
)

func init() {
	framework.RegisterStage(Routable, func(_ *framework.Handle, p framework.Params) (any, error) {
		return &routable{}, p.Decode(&struct{}{})
	})
	framework.RegisterStagePlugin(Saturation, DefaultSaturationParams, newSaturation)
}

// routable drops the instances the scheduler does not route to. Not safe
// for concurrent use (its result is its own buffer).
type routable struct{ kept subset }

// Filter keeps the routable candidates: cands itself when all are.
func (r *routable) Filter(_ *framework.CycleState, _ *policy.Request, cands []*policy.Instance) []*policy.Instance {
	for i, c := range cands {
		if !c.Routable {
			out := r.kept.start(cands, i)
			for _, c := range cands[i+1:] {
				if c.Routable {
					out = append(out, c)
				}
			}
			return r.kept.done(out)
		}
	}
	return cands
}

// subset is a filter's result when it drops candidates. A filter never
// writes to the slice it is given (framework.Filter: the scheduler passes
// its own list of a pool's instances), so the ones it keeps are copied
// here, into a buffer reused from one call to the next. The buffer holds
// no more pointers than the last result.
type subset struct{ buf []*policy.Instance }

// start begins a result with cands[:i], the candidates kept before the
// first dropped one.
func (s *subset) start(cands []*policy.Instance, i int) []*policy.Instance {
	return append(s.buf[:0], cands[:i]...)
}

// done keeps out, built from start, as the buffer for the next call, and
// clears what the previous result left beyond it.
func (s *subset) done(out []*policy.Instance) []*policy.Instance {
	if prev := len(s.buf); prev > len(out) {
		clear(out[len(out):prev]) // prev <= cap(out): out grew from buf or replaced it with a larger one
	}
	s.buf = out
	return out
}

// SaturationParams are saturation-filter's parameters. Their defaults are
// llm_scheduler.max_waiting, max_kv_cache_usage and max_predicted_wait.
type SaturationParams struct {
	// MaxWaiting: an instance whose waiting queue plus unreported picks
	// reaches it is saturated; 0 turns the check off.
	MaxWaiting int `json:"maxWaiting" default:"llm_scheduler.max_waiting"`
	// MaxKVCacheUsage: the KV cache fraction, in (0, 1], at which an
	// instance is saturated.
	MaxKVCacheUsage float64 `json:"maxKVCacheUsage" default:"llm_scheduler.max_kv_cache_usage"`
	// MaxPredictedWait: the predicted wait at which an instance is
	// saturated; 0 turns the check off.
	MaxPredictedWait framework.Duration `json:"maxPredictedWait" default:"llm_scheduler.max_predicted_wait"`
}

// DefaultSaturationParams are the parameters with c's thresholds.
func DefaultSaturationParams(c config.Config) SaturationParams {
	return SaturationParams{
		MaxWaiting:       c.Scheduler.MaxWaiting,
		MaxKVCacheUsage:  c.Scheduler.MaxKVCacheUsage,
		MaxPredictedWait: framework.Duration(c.Scheduler.MaxPredictedWait),
	}
}

// Validate checks the thresholds.
func (pr SaturationParams) Validate() error {
	switch {
	case pr.MaxWaiting < 0:
		return fmt.Errorf("parameter maxWaiting %d: accepted: 0 (off) or more", pr.MaxWaiting)
	case !(pr.MaxKVCacheUsage > 0 && pr.MaxKVCacheUsage <= 1):
		return fmt.Errorf("parameter maxKVCacheUsage %g: accepted: a fraction in (0, 1]", pr.MaxKVCacheUsage)
	case pr.MaxPredictedWait < 0:
		return fmt.Errorf("parameter maxPredictedWait %s: accepted: 0 (off) or a positive duration such as 2s", time.Duration(pr.MaxPredictedWait))
	}
	return nil
}

func newSaturation(h *framework.Handle, pr SaturationParams) (any, error) {
	cfg := h.Deps.Config
	clock := h.Deps.Clock
	if clock == nil { // a configuration check builds without one
		clock = policy.SystemClock{}
	}
	// scheduler/admission is the implementation, unchanged: it reads the
	// thresholds from llm_scheduler, so it is given these there.
	cfg.Scheduler.MaxWaiting = pr.MaxWaiting
	cfg.Scheduler.MaxKVCacheUsage = pr.MaxKVCacheUsage
	cfg.Scheduler.MaxPredictedWait = time.Duration(pr.MaxPredictedWait)
	return &SaturationFilter{s: admission.New(cfg), clock: clock, params: pr}, nil
}

// SaturationFilter is saturation-filter: scheduler/admission's judgment as
// a framework filter. Besides filtering, it learns from the traffic
// (Observe, Completed, Reported) and predicts waits for the scheduler's
// answers to requests it sheds. Not safe for concurrent use (the scheduler
// calls it under its lock; its result is its own buffer).
type SaturationFilter struct {
	s      *admission.Saturation
	clock  policy.Clock
	params SaturationParams
	kept   subset
}

// Params are the parameters the filter was built with.
func (f *SaturationFilter) Params() SaturationParams { return f.params }

// budget is how much longer req may wait for a place: until its deadline
// (what is left of its wait_schedule_timeout), unbounded without one.
func (f *SaturationFilter) budget(req *policy.Request) time.Duration {
	if req.Deadline.IsZero() {
		return math.MaxInt64
	}
	return max(req.Deadline.Sub(f.clock.Now()), 0)
}

// Filter marks every candidate's Saturated flag and keeps the unsaturated
// ones: cands itself when none is saturated.
func (f *SaturationFilter) Filter(_ *framework.CycleState, req *policy.Request, cands []*policy.Instance) []*policy.Instance {
	j := f.s.Within(f.budget(req))
	var out []*policy.Instance
	dropped := false
	for i, c := range cands {
		sat, _, ok := j.Remembered(c) // most candidates: inline, one word
		if !ok {
			sat, _ = j.Saturated(c)
		}
		c.Saturated = sat
		switch {
		case sat && !dropped:
			out, dropped = f.kept.start(cands, i), true
		case !sat && dropped:
			out = append(out, c)
		}
	}
	if !dropped {
		return cands
	}
	return f.kept.done(out)
}

// HeldBackWait is, among cands, the shortest predicted wait of those
// saturated by their predicted wait for req (rather than by a count or
// the KV cache), in seconds; +Inf when none is: no budget lets req in.
func (f *SaturationFilter) HeldBackWait(req *policy.Request, cands []*policy.Instance) float64 {
	j := f.s.Within(f.budget(req))
	need := math.Inf(1)
	for _, c := range cands {
		if _, why := j.Saturated(c); why == admission.PredictedWait {
			need = min(need, f.s.PredictedWait(c).Seconds())
		}
	}
	return need
}

// Saturated judges c for a request without a deadline.
func (f *SaturationFilter) Saturated(c *policy.Instance) bool {
	sat, _ := f.s.Saturated(c)
	return sat
}

// Observe learns from a request about to be decided.
func (f *SaturationFilter) Observe(req *policy.Request) { f.s.Observe(req) }

// Completed learns from a finished request's output length.
func (f *SaturationFilter) Completed(completionTokens int64) { f.s.Completed(completionTokens) }

// Reported updates what the judgment keeps in c's view after a report.
func (f *SaturationFilter) Reported(c *policy.Instance) { f.s.Reported(c) }

// PredictedWait is how long a request sent to c now is predicted to wait.
func (f *SaturationFilter) PredictedWait(c *policy.Instance) time.Duration {
	return f.s.PredictedWait(c)
}

// RetryAfter is the Retry-After, in seconds, for a request shed from cands.
func (f *SaturationFilter) RetryAfter(cands []*policy.Instance, most time.Duration) int32 {
	return f.s.RetryAfter(cands, most)
}

// Target is the maxPredictedWait in force (0: off).
func (f *SaturationFilter) Target() time.Duration { return f.s.Target() }
