package metricbased

import (
	"fmt"
	"math/rand/v2"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	"github.com/llmrouter/llmrouter/scheduler/policy/internal/rank"
)

// Name is the policy's configuration name.
const Name = "llm-metric-based"

func init() {
	framework.RegisterPolicy(Name, DefaultParams, func(d policy.Deps, p Params) (policy.Policy, error) { return New(d, p), nil })
}

// Params are the weights of the score's terms: plugin type
// llm-metric-based; the built-in profile runs with DefaultParams.
type Params struct {
	WaitingWeight    float64 `json:"waitingWeight"`
	KVCacheWeight    float64 `json:"kvCacheWeight"`
	RunningWeight    float64 `json:"runningWeight"`
	ThroughputWeight float64 `json:"throughputWeight"`
}

// DefaultParams are the weights' defaults (docs/policies.md).
func DefaultParams(config.Config) Params {
	return Params{WaitingWeight: 1, KVCacheWeight: 0.5, RunningWeight: 0.3, ThroughputWeight: 0.2}
}

// Validate checks each weight, and that one at least counts.
func (p Params) Validate() error {
	ws := []struct {
		name string
		v    float64
	}{{"waitingWeight", p.WaitingWeight}, {"kvCacheWeight", p.KVCacheWeight}, {"runningWeight", p.RunningWeight}, {"throughputWeight", p.ThroughputWeight}}
	sum := 0.0
	for _, w := range ws {
		if !(w.v >= 0) {
			return fmt.Errorf("parameter %s %g: accepted: 0 or more", w.name, w.v)
		}
		sum += w.v
	}
	if !(sum > 0) {
		return fmt.Errorf("parameters waitingWeight, kvCacheWeight, runningWeight, throughputWeight all 0: accepted: weights of which at least one is positive")
	}
	return nil
}

// Weights of the score's terms.
type Weights struct{ Waiting, KVCache, Running, Throughput float64 }

// Policy is llm-metric-based.
type Policy struct {
	w      Weights
	rand   *rand.Rand
	keep   int
	scores []float64
}

// New builds the policy with weights pc (checked: Params.Validate).
func New(d policy.Deps, pc Params) *Policy {
	r := d.Rand
	if r == nil {
		r = rand.New(rand.NewPCG(1, 2))
	}
	return &Policy{
		w:    Weights{pc.WaitingWeight, pc.KVCacheWeight, pc.RunningWeight, pc.ThroughputWeight},
		rand: r,
		keep: max(d.Config.Gateway.RetryCount+3, 4),
	}
}

// Name returns "llm-metric-based".
func (*Policy) Name() string { return Name }

// Pick ranks by ascending score:
//
//	waiting_weight × waiting/max + kv_cache_weight × kv_usage
//	+ running_weight × running/max − throughput_weight × speed/max
//
// where waiting includes the scheduler's picks not yet reported, and speed
// is tokens/s per running request (how fast this instance serves each).
func (p *Policy) Pick(_ *policy.Request, cands []*policy.Instance) policy.Decision {
	if len(cands) == 0 {
		return policy.Decision{}
	}
	var maxW, maxR, maxS float64
	for _, c := range cands {
		maxW = max(maxW, waiting(c))
		maxR = max(maxR, float64(c.Running))
		maxS = max(maxS, speed(c))
	}
	if cap(p.scores) < len(cands) {
		p.scores = make([]float64, len(cands))
	}
	sc := p.scores[:len(cands)]
	for i, c := range cands {
		sc[i] = p.w.Waiting*norm(waiting(c), maxW) + p.w.KVCache*min(max(c.KVCacheUsage, 0), 1) +
			p.w.Running*norm(float64(c.Running), maxR) - p.w.Throughput*norm(speed(c), maxS)
	}
	return policy.Decision{Ranked: rank.Top(p.rand, cands, sc, p.keep)}
}

func waiting(c *policy.Instance) float64 { return float64(c.Waiting + c.InflightRequests) }

func speed(c *policy.Instance) float64 {
	return (c.PromptTPS + c.GenTPS) / float64(c.Running+1)
}

func norm(v, m float64) float64 {
	if m <= 0 {
		return 0
	}
	return v / m
}
