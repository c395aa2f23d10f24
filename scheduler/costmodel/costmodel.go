// Package costmodel is the engine cost model the scheduler's decisions
// share: prefix-cache prices candidates with it, and scheduler/admission
// predicts the wait at an engine with it, so the two never disagree about
// how fast an engine works (docs/policies.md, llm_scheduler.cost_model).
//
// An engine step costs Step, plus PrefillToken per uncached prompt token it
// schedules, plus DecodeToken per running sequence; a step schedules at
// most MaxBatchedTokens tokens (the engine's max_num_batched_tokens). All
// times are in seconds of a reference engine (the defaults: Llama-3-8B on
// one H100); an engine's measured speed (Speed) says how much faster or
// slower a real one is.
package costmodel

import (
	"github.com/llmrouter/llmrouter/internal/config"
)

// Model is the cost model, in seconds.
type Model struct {
	Step, PrefillToken, DecodeToken float64
	MaxBatchedTokens                float64
}

// FromConfig reads the model from llm_scheduler.cost_model.
func FromConfig(pc config.CostModel) Model {
	return Model{
		Step:             pc.StepTime.Seconds(),
		PrefillToken:     pc.PrefillTokenTime.Seconds(),
		DecodeToken:      pc.DecodeTokenTime.Seconds(),
		MaxBatchedTokens: float64(pc.MaxBatchedTokens),
	}
}

// StepTime is one step with running sequences decoding and no prefill.
func (m *Model) StepTime(running float64) float64 { return m.Step + m.DecodeToken*running }

// PrefillRate is an engine's prefill throughput while it has prefill
// queued, in tokens per second: a full chunk of MaxBatchedTokens per step
// of step + chunk × prefill + running × decode cost.
func (m *Model) PrefillRate(running float64) float64 {
	b := m.MaxBatchedTokens
	return b / (m.Step + b*m.PrefillToken + running*m.DecodeToken)
}

// Work is the model's seconds of work in one second of an engine that
// reported running sequences, generation and prompt throughputs (tokens per
// second) and an uncached share of its prompt tokens:
//
//	generated / running × step time(running) + uncached prompt tokens × prefill cost
//
// For an engine that stepped without pause over the interval (it had work
// all along) this is its speed against the model: 1 as the model says, 0.1
// for an engine ten times slower. 0 when running is 0.
func (m *Model) Work(running, genTPS, promptTPS, uncachedShare float64) float64 {
	if !(running > 0) {
		return 0
	}
	return genTPS/running*m.StepTime(running) + max(promptTPS, 0)*uncachedShare*m.PrefillToken
}
