package framework

import (
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// ranking is a whole policy used as a profile's picker.
type ranking struct{ pol policy.Policy }

func (r ranking) Policy() policy.Policy { return r.pol }

func (r ranking) Pick(_ *CycleState, req *policy.Request, cands []*policy.Instance, _ []float64) policy.Decision {
	return r.pol.Pick(req, cands)
}

// Picked etc. forward to the policy when it observes; a ranking built into
// a larger profile is its observer.
func (r ranking) Picked(req *policy.Request, d policy.Decision) {
	if o, ok := r.pol.(policy.Observer); ok {
		o.Picked(req, d)
	}
}

func (r ranking) Completed(reqID, instanceID string, promptTokens, completionTokens int64) {
	if o, ok := r.pol.(policy.Observer); ok {
		o.Completed(reqID, instanceID, promptTokens, completionTokens)
	}
}

func (r ranking) Removed(id string) {
	if o, ok := r.pol.(policy.Observer); ok {
		o.Removed(id)
	}
}

// rankingFactory builds the registered policy typ as a ranking picker:
// with its parameters when RegisterPolicy registered it, else refusing any.
func rankingFactory(typ string) Factory {
	return func(h *Handle, params Params) (any, error) {
		mu.RLock()
		r, ok := rankers[typ]
		mu.RUnlock()
		if ok {
			pol, err := r(h.Deps, params)
			if err != nil {
				return nil, err
			}
			return ranking{pol}, nil
		}
		if err := params.Decode(&struct{}{}); err != nil {
			return nil, err
		}
		pol, err := policy.New(typ, h.Deps)
		if err != nil {
			return nil, err
		}
		return ranking{pol}, nil
	}
}
