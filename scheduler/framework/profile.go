package framework

import (
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// weighted is a scorer and its weight in the profile.
type weighted struct {
	Scorer
	weight float64
}

// Profile runs filters, then weighted scorers, then a picker. It is a
// policy.Policy and forwards the scheduler's observations to every plugin
// that keeps state. The scheduler calls it serially.
type Profile struct {
	name      string
	filters   []Filter
	scorers   []weighted
	picker    Picker
	observers []policy.Observer
	plugins   []any    // every plugin built with the profile, in declaration order
	types     []string // plugins[i]'s type

	cs           CycleState
	total, score []float64 // per-decision scratch
}

// Name is the profile's name, which is the policy's name.
func (p *Profile) Name() string { return p.name }

// Pick runs one decision.
func (p *Profile) Pick(req *policy.Request, cands []*policy.Instance) policy.Decision {
	p.cs.Reset()
	for _, f := range p.filters {
		if len(cands) == 0 {
			break
		}
		cands = f.Filter(&p.cs, req, cands)
	}
	if len(cands) == 0 {
		return policy.Decision{}
	}
	var total []float64
	if len(p.scorers) > 0 {
		n := len(cands)
		if cap(p.total) < n {
			p.total, p.score = make([]float64, n), make([]float64, n)
		}
		total = p.total[:n]
		score := p.score[:n]
		for j, s := range p.scorers {
			s.Score(&p.cs, req, cands, score)
			if j == 0 {
				for i, v := range score {
					total[i] = s.weight * v
				}
				continue
			}
			for i, v := range score {
				total[i] += s.weight * v
			}
		}
	}
	return p.picker.Pick(&p.cs, req, cands, total)
}

// Picked tells every stateful plugin the decision.
func (p *Profile) Picked(req *policy.Request, d policy.Decision) {
	for _, o := range p.observers {
		o.Picked(req, d)
	}
}

// Completed tells every stateful plugin a request finished.
func (p *Profile) Completed(reqID, instanceID string, promptTokens, completionTokens int64) {
	for _, o := range p.observers {
		o.Completed(reqID, instanceID, promptTokens, completionTokens)
	}
}

// Removed tells every stateful plugin an instance left.
func (p *Profile) Removed(id string) {
	for _, o := range p.observers {
		o.Removed(id)
	}
}

var _ policy.Observer = (*Profile)(nil)

// HasScorers reports whether the profile has scorers.
func (p *Profile) HasScorers() bool { return len(p.scorers) > 0 }

// Scores runs the profile's filters and scorers without its picker and
// returns each remaining candidate's weighted sum (for tests and
// explanations; valid until the next decision).
func (p *Profile) Scores(req *policy.Request, cands []*policy.Instance) []float64 {
	var out []float64
	picker := p.picker
	p.picker = capture{&out}
	defer func() { p.picker = picker }()
	p.Pick(req, cands)
	return out
}

type capture struct{ out *[]float64 }

func (c capture) Pick(_ *CycleState, _ *policy.Request, _ []*policy.Instance, scores []float64) policy.Decision {
	*c.out = scores
	return policy.Decision{}
}

// Find returns the first plugin of pol that is a T: pol itself when it is
// one (a built-in profile is its policy), else a plugin its profile was
// built with (a ranking picker's policy counting as its plugin). A policy
// composing others (pd-split) reaches what a sub-profile shares — its
// prefix index — so, through the framework, not by knowing its type.
func Find[T any](pol policy.Policy) (T, bool) {
	if t, ok := pol.(T); ok {
		return t, true
	}
	var zero T
	p, ok := pol.(*Profile)
	if !ok {
		return zero, false
	}
	for _, x := range p.plugins {
		if r, ok := x.(ranking); ok {
			x = r.pol
		}
		if t, ok := x.(T); ok {
			return t, true
		}
	}
	return zero, false
}
