package framework

import (
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// Filter keeps the candidates that may take the request. It returns a
// subset of cands, in their order, and never writes to cands: the caller
// may pass a list it keeps (the scheduler's stage gets the pool's own
// list, so a decision copies no pointers when no candidate is dropped). A
// filter that keeps every candidate returns cands itself; one that drops
// some returns a slice of its own, which the caller reads until the
// filter's next call. A filter may set a candidate's per-decision fields
// (saturation-filter marks Saturated, which the scheduler's fallbacks
// read).
type Filter interface {
	Filter(cs *CycleState, req *policy.Request, cands []*policy.Instance) []*policy.Instance
}

// Scorer scores every candidate: out[i] is cands[i]'s score, in [0, 1],
// higher better. out has len(cands) and holds garbage on entry.
type Scorer interface {
	Score(cs *CycleState, req *policy.Request, cands []*policy.Instance, out []float64)
}

// Picker ranks the candidates, best first. scores[i] is cands[i]'s weighted
// sum over the profile's scorers, nil when the profile has none. A picker
// returns at least the scheduler's pick and its fallbacks (Deps.Keep) when
// that many candidates exist.
type Picker interface {
	Pick(cs *CycleState, req *policy.Request, cands []*policy.Instance, scores []float64) policy.Decision
}

// Ranking is a picker that is a whole policy: it ranks by its own rules and
// ignores scores. A profile of nothing but a Ranking is the policy itself.
type Ranking interface {
	Picker
	Policy() policy.Policy
}

// ProfileHandler is accepted as a plugin for compatibility with
// EndpointPickerConfig files (single-profile-handler); it takes no part in
// a decision.
type ProfileHandler interface {
	profileHandler()
}

// CycleState carries what plugins derive during one decision, for the
// plugins after them in the same profile. It is reset before every
// decision; a value must not be kept past it.
type CycleState struct {
	keys []string
	vals []any
}

// Write stores v under key (by convention the writing plugin's type).
func (c *CycleState) Write(key string, v any) {
	for i, k := range c.keys {
		if k == key {
			c.vals[i] = v
			return
		}
	}
	c.keys = append(c.keys, key)
	c.vals = append(c.vals, v)
}

// Read returns the value stored under key in this decision.
func (c *CycleState) Read(key string) (any, bool) {
	for i, k := range c.keys {
		if k == key {
			return c.vals[i], true
		}
	}
	return nil, false
}

// Reset empties the state for a new decision (a Profile resets its own;
// the scheduler resets the one its stage filters share).
func (c *CycleState) Reset() {
	clear(c.vals)
	c.keys, c.vals = c.keys[:0], c.vals[:0]
}

// SingleProfileHandler is the type name of the profile handler llm-d
// files declare when they have one profile; it is accepted and does
// nothing (each profile is a policy here, chosen by llm_scheduler.policy).
// As upstream, a file declaring it with several profiles is refused
// (ParseEndpointPickerConfig).
const SingleProfileHandler = "single-profile-handler"

type singleProfileHandler struct{}

func (singleProfileHandler) profileHandler() {}

func init() {
	Register(SingleProfileHandler, func(_ *Handle, p Params) (any, error) {
		return singleProfileHandler{}, p.Decode(&struct{}{})
	})
}
