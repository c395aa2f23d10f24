package admission

import (
	"math"
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/costmodel"
	// Imported for Instance.UncachedShare's inline body (see leastrequest).
	_ "github.com/llmrouter/llmrouter/scheduler/fleet"
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
	maxKV      float64 // the KV usage that saturates: the setting, else 1 (a full cache)
	target     float64 // llm_scheduler.max_predicted_wait in seconds; 0: off
	invBatch   float64 // 1 / max batched tokens

	// Running means standing in for what a report does not say: the
	// prompt of a request waiting at an engine, and how many tokens a
	// running request generates before it frees its place.
	avgPrompt, avgOut float64

	// What the verdicts remembered in policy.Instance.SaturationMemo hold
	// for (see Remember): the bands the running means stay in during
	// epoch, and the budget a verdict of no saturation holds from.
	epoch    uint32
	pLo, pHi float64
	oLo, oHi float64
	freeFrom float64 // seconds: wait_schedule_timeout / memoBand
	monotone bool    // the model's costs are finite and not negative (see remember)
}

// Opt is an optional setting: Some(v) holds v, the zero Opt holds none.
// Zero is a value like any other, never a stand-in for "not given".
type Opt[T any] struct {
	v   T
	set bool
}

// Some is the setting v.
func Some[T any](v T) Opt[T] { return Opt[T]{v: v, set: true} }

// Get returns the value and whether one was given.
func (o Opt[T]) Get() (T, bool) { return o.v, o.set }

// Settings are what the judgment is built from.
type Settings struct {
	Model costmodel.Model
	// MaxWaiting: an instance whose waiting requests plus unreported picks
	// reach it is saturated; 0 checks no count (llm_scheduler.max_waiting).
	MaxWaiting int
	// MaxKVCacheUsage: the KV cache fraction at which an instance is
	// saturated. Not given: only a full cache (1) saturates.
	MaxKVCacheUsage Opt[float64]
	// MaxPredictedWait: the predicted wait at which an instance is
	// saturated; 0 predicts none (llm_scheduler.max_predicted_wait).
	MaxPredictedWait time.Duration
	// OutputTokens: the reply length a running request is taken to have
	// until replies are observed. Not given: the default cost model's
	// (config.DefaultCostModel).
	OutputTokens Opt[float64]
	// WaitScheduleTimeout is llm_gateway.wait_schedule_timeout.
	WaitScheduleTimeout time.Duration
}

// New builds the judgment from llm_scheduler (max_waiting,
// max_kv_cache_usage, max_predicted_wait, cost_model), every value given:
// config.Validate (or saturation-filter's parameters) checked them.
func New(cfg config.Config) *Saturation {
	return FromSettings(Settings{
		Model:               costmodel.FromConfig(cfg.Scheduler.CostModel),
		MaxWaiting:          cfg.Scheduler.MaxWaiting,
		MaxKVCacheUsage:     Some(cfg.Scheduler.MaxKVCacheUsage),
		MaxPredictedWait:    cfg.Scheduler.MaxPredictedWait,
		OutputTokens:        Some(float64(cfg.Scheduler.CostModel.DefaultOutputTokens)),
		WaitScheduleTimeout: cfg.Gateway.WaitScheduleTimeout,
	})
}

// FromSettings builds the judgment from st.
func FromSettings(st Settings) *Saturation {
	s := &Saturation{
		model:      st.Model,
		maxWaiting: int64(st.MaxWaiting),
		maxKV:      1,
		target:     st.MaxPredictedWait.Seconds(),
		avgPrompt:  512,
		avgOut:     float64(config.DefaultCostModel().DefaultOutputTokens),
	}
	if v, ok := st.MaxKVCacheUsage.Get(); ok {
		s.maxKV = v
	}
	if v, ok := st.OutputTokens.Get(); ok {
		s.avgOut = v
	}
	s.invBatch = 1 / s.model.MaxBatchedTokens
	s.freeFrom = max(st.WaitScheduleTimeout.Seconds(), 0) / memoBand
	m := s.model
	s.monotone = true
	for _, x := range []float64{m.Step, m.PrefillToken, m.DecodeToken, s.invBatch, s.target} {
		if !(x >= 0) || math.IsInf(x, 0) {
			s.monotone = false
		}
	}
	s.rebase()
	return s
}

// Target is llm_scheduler.max_predicted_wait (0: off).
func (s *Saturation) Target() time.Duration { return seconds(s.target) }

// Observe learns from a request about to be decided: the mean prompt
// stands for the prompt of a request an engine reports waiting.
func (s *Saturation) Observe(req *policy.Request) {
	if req.PromptTokens > 0 {
		s.avgPrompt += ewma * (float64(req.PromptTokens) - s.avgPrompt)
		if s.avgPrompt < s.pLo || s.avgPrompt > s.pHi {
			s.rebase()
		}
	}
}

// Completed learns the mean output: a running request frees its place in
// the batch after about that many decode steps.
func (s *Saturation) Completed(completionTokens int64) {
	if completionTokens > 0 {
		s.avgOut += ewma * (float64(completionTokens) - s.avgOut)
		if s.avgOut < s.oLo || s.avgOut > s.oHi {
			s.rebase()
		}
	}
}

// Saturated says whether c is over a threshold, and which, for a request
// with no deadline (see Within).
func (s *Saturation) Saturated(c *policy.Instance) (bool, Reason) {
	j := s.Within(math.MaxInt64)
	j.budget = math.Inf(1)
	return j.Saturated(c)
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
	// epoch is s.epoch when the judge was made; accept, the set of
	// remembered verdicts (memo codes) that hold at budget.
	epoch  uint32
	accept uint8
}

// Within is the judgment for a request with budget left to wait; a
// decision makes one and asks it about every candidate.
func (s *Saturation) Within(budget time.Duration) Judge {
	j := Judge{s: s, budget: max(budget.Seconds(), 0), epoch: s.epoch}
	if s.monotone && s.epoch < maxEpoch {
		j.accept = 1<<memoFullWaiting | 1<<memoFullKV | 1<<memoFullWait
		if j.budget >= s.freeFrom {
			j.accept |= 1 << memoFree
		}
	}
	return j
}

// Saturated says whether c is over a threshold, and which. It runs for
// every candidate of every decision: the common case reads the verdict c
// remembers (see Remember), else a few fields (nothing queued, or a wait
// far under the target).
func (j Judge) Saturated(c *policy.Instance) (bool, Reason) {
	if w := c.SaturationMemo; w != 0 && j.accept != 0 {
		if w>>memoCodeBits != j.epoch {
			w = j.s.remember(c)
		}
		if code := w & memoCodeMask; j.accept&(1<<code) != 0 {
			return code != memoFree, memoReasons[code]
		}
	}
	return j.judge(c)
}

// Remembered is the verdict c remembers that holds for this judge (see
// Remember); ok is false when there is none, and Saturated must judge.
// It is Saturated's first step alone, small enough to inline into a loop
// over a fleet.
func (j *Judge) Remembered(c *policy.Instance) (saturated bool, why Reason, ok bool) {
	w := c.SaturationMemo
	if code := w & memoCodeMask; w>>memoCodeBits == j.epoch && j.accept&(1<<code) != 0 {
		return code != memoFree, memoReasons[code], true
	}
	return false, NotSaturated, false
}

// judge is Saturated without a memo.
func (j Judge) judge(c *policy.Instance) (bool, Reason) {
	s := j.s
	queued := c.Waiting + c.InflightRequests
	if s.maxWaiting > 0 && queued >= s.maxWaiting {
		return true, MaxWaiting
	}
	if kvCommitted(c) >= s.maxKV {
		return true, KVCache
	}
	if s.target > 0 && (queued > 0 || atLimit(c)) && s.overWait(c, queued, j.budget, s.avgPrompt, s.avgOut) {
		return true, PredictedWait
	}
	return false, NotSaturated
}

// Remember lets admission remember its verdict on c in
// c.SaturationMemo, so that a decision over a large fleet reads one word
// of most candidates instead of pricing their queues. Only the owner of c
// may call it, and must call it again whenever it changes c (a report
// copied in, a pick made or released): the verdict is of c as it was.
// An instance never passed to Remember (SaturationMemo 0) is judged
// afresh every time.
//
// A verdict depends, besides the instance, on the running means (prompt
// and output) and the request's budget. The means move a little with every
// request, so the memo is not of the verdict at the means but over bands
// around them (memoBand, from when the epoch began): not saturated at the
// bands' tops and a budget of wait_schedule_timeout / memoBand, or
// saturated at their bottoms with no deadline. The wait grows with both
// means and the verdict with the wait and as the budget shrinks, and
// floating-point arithmetic keeps that order (rounding is monotone, and
// every factor is at least 0: remember checks), so such a verdict is the
// exact one anywhere in the bands — not saturated at any larger budget,
// saturated at any. A mean leaving its band starts a new epoch, which
// every memo misses once. An instance whose verdict flips inside the bands
// is judged afresh for every request, as without a memo.
// TestMemoMatchesSaturated holds the memo to the verdict without it.
func Remember(c *policy.Instance) { c.SaturationMemo = memoEmpty }

// A memo is epoch<<memoCodeBits | code.
const (
	memoCodeBits = 3
	memoCodeMask = 1<<memoCodeBits - 1
	maxEpoch     = math.MaxUint32 >> memoCodeBits // then no more memos: an old one might match

	memoOpen        = 1 // flips inside the bands: judge afresh
	memoFree        = 2 // not saturated, at budgets ≥ freeFrom
	memoFullWaiting = 3 // saturated (max_waiting), at any budget
	memoFullKV      = 4 // saturated (kv_cache)
	memoFullWait    = 5 // saturated (predicted_wait)

	memoEmpty = memoOpen // epoch 0: never current
)

var memoReasons = [memoCodeMask + 1]Reason{memoFullWaiting: MaxWaiting, memoFullKV: KVCache, memoFullWait: PredictedWait}

// remember stores in c's memo the verdict over the epoch's bands (see
// Remember) and returns the memo.
func (s *Saturation) remember(c *policy.Instance) uint32 {
	code := uint32(memoOpen)
	if c.Waiting >= 0 && c.InflightPromptTokens >= 0 && c.Running+c.InflightRequests >= 0 { // else a factor of the wait is below 0
		switch s.judgeAt(c, s.pHi, s.oHi, s.freeFrom) {
		case NotSaturated:
			code = memoFree
		case MaxWaiting:
			code = memoFullWaiting
		case KVCache:
			code = memoFullKV
		case PredictedWait:
			if s.judgeAt(c, s.pLo, s.oLo, math.Inf(1)) == PredictedWait {
				code = memoFullWait
			}
		}
	}
	w := s.epoch<<memoCodeBits | code
	c.SaturationMemo = w
	return w
}

// judgeAt is the verdict's reason with the means at avgPrompt and avgOut
// and budget seconds left.
func (s *Saturation) judgeAt(c *policy.Instance, avgPrompt, avgOut, budget float64) Reason {
	queued := c.Waiting + c.InflightRequests
	if s.maxWaiting > 0 && queued >= s.maxWaiting {
		return MaxWaiting
	}
	if kvCommitted(c) >= s.maxKV {
		return KVCache
	}
	if s.target > 0 && (queued > 0 || atLimit(c)) && s.overWait(c, queued, budget, avgPrompt, avgOut) {
		return PredictedWait
	}
	return NotSaturated
}

// memoBand is how far the bands reach above the means (and below, by its
// inverse) when an epoch begins, and how far below wait_schedule_timeout a
// budget may be for a remembered verdict of no saturation to hold. Wider
// bands start fewer epochs (each costs every instance two judgments at its
// next decision) but leave more verdicts open (judged afresh every
// decision). At 1.25 a running mean of log-normal prompts (σ = 1) leaves
// its band about every 24 requests, and BenchmarkPick's fleets leave 5 %
// of their verdicts open (24 % at 2).
const memoBand = 1.25

// Invalidate makes every remembered verdict judged afresh once, as if
// each instance had changed.
func (s *Saturation) Invalidate() { s.rebase() }

// rebase starts an epoch: bands around the means, and every memo
// forgotten.
func (s *Saturation) rebase() {
	s.epoch++
	s.pLo, s.pHi = s.avgPrompt/memoBand, s.avgPrompt*memoBand
	s.oLo, s.oHi = s.avgOut/memoBand, s.avgOut*memoBand
}

// overWait is modelWait's verdict — the expected wait at or over the
// target, or the longest at or over budget — computed without a division
// (this runs for every candidate with something queued): with r running,
// expected = prefill + seats × turnover / r is compared as
// prefill × r + seats × turnover against target × r, and the longest,
// prefill + ⌈seats / r⌉ × turnover, only when its bound prefill + seats ×
// turnover reaches budget. Both sides are in model seconds, the limits
// scaled by the speed. TestOverWaitMatchesModelWait holds it to modelWait.
func (s *Saturation) overWait(c *policy.Instance, queued int64, budget, avgPrompt, avgOut float64) bool {
	m := &s.model
	ahead := (float64(c.Waiting)*avgPrompt + float64(c.InflightPromptTokens)) * c.UncachedShare()
	step := m.Step + m.DecodeToken*float64(c.Running+c.InflightRequests)
	t := ahead * (m.PrefillToken + s.invBatch*step)
	sp := s.speed(c)
	target, budget := s.target*sp, budget*sp
	var seats int64
	if c.BatchLimit > 0 {
		seats = max(c.Running+queued-int64(c.BatchLimit)+1, 0)
	}
	if seats == 0 && (c.BatchLimit > 0 || queued < max(c.Running, coldSeats)) {
		return t > 0 && (t >= target || t >= budget)
	}
	r := max(c.Running, 1)
	turnover := avgOut * step
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
	ahead := (float64(c.Waiting)*s.avgPrompt + float64(c.InflightPromptTokens)) * c.UncachedShare()
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
	case queued >= max(c.Running, coldSeats):
		// No limit shown yet (a cold engine taking its first burst: the
		// report that would show requests held back comes a report
		// interval after they were sent, later when reports lag). Expect
		// none, and take it to have as many places again as it runs (at
		// least coldSeats, idle included), as a slow start would let it
		// grow: a request that fits in those (fewer than that many queued
		// ahead of it) waits for none. (Not fewer:
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

// kvCommitted is the KV cache fraction c's engine reported plus what its
// unreported picks take: the part of their prompts the engine does not
// hold, at its miss rate as overWait prices it. Charging the whole prompt
// made one 10k-token pick to its home saturate a 192k-token cache until
// the next report: the fleet looked full, conversations moved off their
// homes and recomputed their history, and the KV really filled
// (docs/policies.md, lognormal-kvfull).
func kvCommitted(c *policy.Instance) float64 {
	kv := c.KVCacheUsage
	if c.InflightPromptTokens != 0 { // the capacity is two cache lines further
		if n := c.NumGPUBlocks * c.BlockSize; n > 0 {
			kv += float64(c.InflightPromptTokens) * c.UncachedShare() / float64(n)
		}
	}
	return kv
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
	limit, held := BatchLimit(int64(c.BatchLimit), int64(c.BatchHeld), c.Running, c.Waiting)
	c.BatchLimit, c.BatchHeld = int32(min(limit, math.MaxInt32)), int32(min(held, math.MaxInt32))
	if c.Running <= 0 || !(c.GenTPS > 0) {
		return
	}
	w := s.model.Work(float64(c.Running), c.GenTPS, c.PromptTPS, c.UncachedShare())
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
// waiting requests, given the limit before (prev, 0: none seen) and held,
// the running count of the report before if it too showed requests waiting
// (0 if it did not); heldNow is held for the next report.
//
// An engine that holds requests back is at its limit (max_num_seqs, or a
// KV cache that fits no more), but only a hold that lasts says so: a vLLM
// engine reports a request waiting for a moment whenever one arrives
// between two of its steps, so one report catching that, at whatever it
// happens to run, would set a limit of 1 on an engine that runs 256, and
// admission would queue or shed requests while it has room. So the limit
// is learnt, or lowered (a fuller KV cache holds fewer), only when two
// reports in a row show requests waiting, at the larger of their running
// counts (a place may have freed just before either); one report running
// more than the limit shows a larger one, waiting or not.
func BatchLimit(prev, held, running, waiting int64) (limit, heldNow int64) {
	limit = prev
	if prev > 0 && running > prev {
		limit = running
	}
	if waiting <= 0 || running <= 0 {
		return limit, 0
	}
	if held > 0 {
		limit = max(held, running)
	}
	return limit, running
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
