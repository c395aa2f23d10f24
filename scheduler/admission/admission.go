package admission

import (
	"math"
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/costmodel"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// Reason names the threshold a saturated instance is over.
type Reason string

// Reasons, in the order they are checked.
const (
	NotSaturated  Reason = ""
	MaxWaiting    Reason = "max_waiting"
	KVCache       Reason = "kv_cache"
	PredictedWait Reason = "predicted_wait"
)

// Speeds outside these bounds are taken as a bad measurement and clamped:
// an engine fifty times slower or ten times faster than the model is not
// a GPU the model could describe anyway.
const minSpeed, maxSpeed = 0.02, 10

// ewma is the weight of one observation in the running means.
const ewma = 0.05

// Saturation is the saturation judgment (see the package comment).
type Saturation struct {
	model      costmodel.Model
	maxWaiting int64
	maxKV      float64
	target     float64 // llm_scheduler.max_predicted_wait in seconds; 0: off
	invBatch   float64 // 1 / max batched tokens

	// Running means standing in for what a report does not say: the
	// prompt of a request waiting at an engine, and how many tokens a
	// running request generates before it frees its place.
	avgPrompt, avgOut float64
}

// New builds the judgment from llm_scheduler (max_waiting,
// max_kv_cache_usage, max_predicted_wait, cost_model).
func New(cfg config.Config) *Saturation {
	s := &Saturation{
		model:      costmodel.FromConfig(cfg.Scheduler.CostModel),
		maxWaiting: int64(cfg.Scheduler.MaxWaiting),
		maxKV:      cfg.Scheduler.MaxKVCacheUsage,
		target:     cfg.Scheduler.MaxPredictedWait.Seconds(),
		avgPrompt:  512,
		avgOut:     float64(cfg.Scheduler.CostModel.DefaultOutputTokens),
	}
	if s.maxKV <= 0 {
		s.maxKV = 1
	}
	if s.avgOut <= 0 {
		s.avgOut = float64(config.DefaultCostModel().DefaultOutputTokens)
	}
	s.invBatch = 1 / s.model.MaxBatchedTokens
	return s
}

// Target is llm_scheduler.max_predicted_wait (0: off).
func (s *Saturation) Target() time.Duration { return seconds(s.target) }

// Observe learns from a request about to be decided: the mean prompt
// stands for the prompt of a request an engine reports waiting.
func (s *Saturation) Observe(req *policy.Request) {
	if req.PromptTokens > 0 {
		s.avgPrompt += ewma * (float64(req.PromptTokens) - s.avgPrompt)
	}
}

// Completed learns the mean output: a running request frees its place in
// the batch after about that many decode steps.
func (s *Saturation) Completed(completionTokens int64) {
	if completionTokens > 0 {
		s.avgOut += ewma * (float64(completionTokens) - s.avgOut)
	}
}

// Saturated says whether c is over a threshold, and which, for a request
// with no deadline (see Within).
func (s *Saturation) Saturated(c *policy.Instance) (bool, Reason) {
	return Judge{s, math.Inf(1)}.Saturated(c)
}

// SaturatedWithin is Within(budget).Saturated(c).
func (s *Saturation) SaturatedWithin(c *policy.Instance, budget time.Duration) (bool, Reason) {
	return s.Within(budget).Saturated(c)
}

// Judge is the judgment for one request that may wait at most a budget
// more (what is left of its wait_schedule_timeout): besides the expected
// wait against the target, the longest wait (see modelWait) is held
// against the budget, so a request goes only where it starts before its
// deadline even if the running batch finishes late — late in its wait, in
// practice, only to a free place. An instance predicting no wait at all is
// never over it.
type Judge struct {
	s      *Saturation
	budget float64 // seconds
}

// Within is the judgment for a request with budget left to wait; a
// decision makes one and asks it about every candidate.
func (s *Saturation) Within(budget time.Duration) Judge {
	return Judge{s, max(budget.Seconds(), 0)}
}

// Saturated says whether c is over a threshold, and which. It runs for
// every candidate of every decision: the common case (nothing queued, or
// a wait far under the target) reads a few fields.
func (j Judge) Saturated(c *policy.Instance) (bool, Reason) {
	s := j.s
	queued := c.Waiting + c.InflightRequests
	if s.maxWaiting > 0 && queued >= s.maxWaiting {
		return true, MaxWaiting
	}
	kv := c.KVCacheUsage
	if c.InflightPromptTokens != 0 { // the capacity is two cache lines further
		if n := c.NumGPUBlocks * c.BlockSize; n > 0 {
			kv += float64(c.InflightPromptTokens) / float64(n)
		}
	}
	if kv >= s.maxKV {
		return true, KVCache
	}
	if s.target > 0 && (queued > 0 || atLimit(c)) && s.overWait(c, queued, j.budget) {
		return true, PredictedWait
	}
	return false, NotSaturated
}

// overWait is modelWait's verdict — the expected wait at or over the
// target, or the longest at or over budget — computed without a division
// (this runs for every candidate with something queued): with r running,
// expected = prefill + seats × turnover / r is compared as
// prefill × r + seats × turnover against target × r, and the longest,
// prefill + ⌈seats / r⌉ × turnover, only when its bound prefill + seats ×
// turnover reaches budget. Both sides are in model seconds, the limits
// scaled by the speed. TestOverWaitMatchesModelWait holds it to modelWait.
func (s *Saturation) overWait(c *policy.Instance, queued int64, budget float64) bool {
	m := &s.model
	ahead := (float64(c.Waiting)*s.avgPrompt + float64(c.InflightPromptTokens)) * uncachedShare(c)
	step := m.Step + m.DecodeToken*float64(c.Running+c.InflightRequests)
	t := ahead * (m.PrefillToken + s.invBatch*step)
	sp := s.speed(c)
	target, budget := s.target*sp, budget*sp
	var seats int64
	if c.BatchLimit > 0 {
		seats = max(c.Running+queued-int64(c.BatchLimit)+1, 0)
	}
	if seats == 0 && (c.BatchLimit > 0 || queued <= max(c.Running, coldSeats)) {
		return t > 0 && (t >= target || t >= budget)
	}
	r := max(c.Running, 1)
	turnover := s.avgOut * step
	if c.Role == policy.RolePrefill {
		turnover = step // see modelWait
	}
	if seats == 0 { // no limit shown yet: expect none, the longest see modelWait
		rc := max(c.Running, coldSeats)
		seats = c.Running + queued - rc + 1
		return t >= target || t+float64((seats+rc-1)/rc)*turnover >= budget
	}
	if t*float64(r)+float64(seats)*turnover >= target*float64(r) {
		return true
	}
	if bound := t + float64(seats)*turnover; bound < budget {
		return false
	}
	return t+float64((seats+r-1)/r)*turnover >= budget
}

// Filter sets each candidate's Saturated flag and appends the unsaturated
// ones to out, which it returns.
func (s *Saturation) Filter(cands, out []*policy.Instance) []*policy.Instance {
	for _, c := range cands {
		c.Saturated, _ = s.Saturated(c)
		if !c.Saturated {
			out = append(out, c)
		}
	}
	return out
}

// PredictedWait is how long a request sent to c now is predicted to wait
// before it runs.
func (s *Saturation) PredictedWait(c *policy.Instance) time.Duration { return seconds(s.wait(c)) }

// wait is PredictedWait in seconds:
//
//	ahead   = (waiting × mean prompt + unreported picks' prompt tokens) × uncached share
//	step    = step time with running + unreported picks decoding
//	prefill = ahead × prefill cost + ahead / max batched tokens × step
//	seats   = running + waiting + unreported picks − batch limit + 1 (0 while no limit is known, or below it)
//	seat    = seats × mean output × step / running
//	wait    = (prefill + seat) / speed
//
// The uncached share is 1 − the engine's prefix-cache hit ratio (1 when it
// does not report one); the speed is costmodel.Work of the last report
// when the engine was busy through it (1 otherwise).
func (s *Saturation) wait(c *policy.Instance) float64 {
	queued := c.Waiting + c.InflightRequests
	if queued <= 0 && !atLimit(c) {
		return 0
	}
	t, _ := s.modelWait(c, queued)
	return t / s.speed(c)
}

// coldSeats is the batch an engine that has not shown its limit is
// assumed to run at least, idle included (no engine worth routing to runs
// fewer than 4 at once; the enginesim and vLLM defaults run far more).
const coldSeats = 4

// atLimit: c runs as many requests as its batch limit, so even with
// nothing queued a new request waits for a place.
func atLimit(c *policy.Instance) bool { return c.BatchLimit > 0 && c.Running >= int64(c.BatchLimit) }

// modelWait is wait before the division by the speed.
//
// longest is the same with the seats' wait at its longest: the running
// requests may have started together (a burst, a batch that finished
// together), so a place is only sure to free when the whole batch turns
// over — one output's time per running batch's worth of seats,
// ⌈seats / running⌉ × mean output × step. On a small, slow batch the two
// differ most: 4 running on an L4 free a place about every second, but
// may all take the full 4 s of a 64-token reply.
func (s *Saturation) modelWait(c *policy.Instance, queued int64) (expected, longest float64) {
	m := &s.model
	ahead := (float64(c.Waiting)*s.avgPrompt + float64(c.InflightPromptTokens)) * uncachedShare(c)
	step := m.Step + m.DecodeToken*float64(c.Running+c.InflightRequests) // m.StepTime, inlined by hand
	t := ahead * (m.PrefillToken + s.invBatch*step)
	expected, longest = t, t
	turnover := s.avgOut * step
	if c.Role == policy.RolePrefill {
		// pd-split's prefill requests end with their first token: a
		// place frees one step after a prefill.
		turnover = step
	}
	r := max(c.Running, 1)
	switch {
	case c.BatchLimit > 0:
		// The requests queued beyond the limit, and this one, each take
		// the place of a running request that finishes; running requests
		// finish at running / (mean output × step) a second.
		if seats := c.Running + queued - int64(c.BatchLimit) + 1; seats > 0 {
			expected += float64(seats) * turnover / float64(r)
			longest += float64((seats+r-1)/r) * turnover
		}
	case queued > max(c.Running, coldSeats):
		// No limit shown yet (a cold engine taking its first burst: the
		// report that would show requests held back comes a report
		// interval after they were sent, later when reports lag). Expect
		// none, and take it to have as many places again as it runs (at
		// least coldSeats, idle included), as a slow start would let it
		// grow: a request that fits in those waits for none. (Not fewer:
		// an engine that never shows a limit, an H100 running long replies
		// whose turnover exceeds the budget, would otherwise take a pick
		// per report.) Beyond them the assumption is all that stood
		// between the request and a queue, so at longest it is priced as
		// if the limit were what it runs (at least coldSeats): the seats
		// beyond that, this one included, wait a turnover per batch of
		// that size — a 4-running L4 at its real limit of 4 seats its
		// fifth to eighth unreported pick after two turnovers, not one.
		// A request's budget (SaturatedWithin) then bounds how far a burst
		// goes before the engine reports.
		rc := max(c.Running, coldSeats)
		seats := c.Running + queued - rc + 1
		longest += float64((seats+rc-1)/rc) * turnover
	}
	return expected, longest
}

// uncachedShare is the share of a prompt c must compute: 1 − its
// prefix-cache hit ratio, 1 when it reports none.
func uncachedShare(c *policy.Instance) float64 {
	if h := c.PrefixCacheHitRatio; h >= 0 && h <= 1 {
		return 1 - h
	}
	return 1
}

// speed is c's measured speed (Reported), 1 until measured.
func (s *Saturation) speed(c *policy.Instance) float64 {
	if c.Speed > 0 {
		return float64(c.Speed)
	}
	return 1
}

// speedEWMA is the weight of one report in an instance's speed: about
// two seconds of reports at 200 ms. One report's sample is noisy (a 200 ms
// interval holds a few steps of a slow engine; a request still
// prefilling counts as running but generates nothing).
const speedEWMA = 0.1

// Reported updates what admission keeps in an instance's view from its
// latest report, once the scheduler has copied the report in: its batch
// limit (BatchLimit) and its speed against the cost model
// (costmodel.Work of the report, smoothed; the first sample is taken
// whole). Any running request makes a sample: an engine steps without
// pause while one runs.
func (s *Saturation) Reported(c *policy.Instance) {
	c.BatchLimit = int32(min(BatchLimit(int64(c.BatchLimit), c.Running, c.Waiting), math.MaxInt32))
	if c.Running <= 0 || !(c.GenTPS > 0) {
		return
	}
	w := s.model.Work(float64(c.Running), c.GenTPS, c.PromptTPS, uncachedShare(c))
	if math.IsNaN(w) || math.IsInf(w, 0) {
		return
	}
	w = min(max(w, minSpeed), maxSpeed)
	if c.Speed <= 0 {
		c.Speed = float32(w)
		return
	}
	c.Speed += float32(speedEWMA * (w - float64(c.Speed)))
}

// RetryAfter is what a request shed for want of capacity is told: the
// predicted time until the first of cands has room, at least one second,
// at most most, in whole seconds. A candidate saturated by its count or
// its KV cache rather than its wait gives the minimum.
func (s *Saturation) RetryAfter(cands []*policy.Instance, most time.Duration) int32 {
	first := math.Inf(1)
	for _, c := range cands {
		first = min(first, max(s.wait(c)-s.target, 0))
	}
	hi := max(math.Ceil(most.Seconds()), 1)
	if math.IsInf(first, 1) {
		return int32(hi)
	}
	return int32(min(max(math.Ceil(first), 1), hi))
}

// BatchLimit is an instance's batch limit after a report of running and
// waiting requests, given the previous one (0: none seen): an engine that
// holds requests back is at its limit (max_num_seqs, or its KV cache), and
// one running more than the limit shows a larger one.
func BatchLimit(prev, running, waiting int64) int64 {
	switch {
	case waiting > 0 && running > 0:
		return running
	case prev > 0 && running > prev:
		return running
	}
	return prev
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
