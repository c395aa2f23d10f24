package leasttoken

import (
	"container/list"
	"math/rand/v2"
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	"github.com/llmrouter/llmrouter/scheduler/policy/internal/rank"
)

// Name is the policy's configuration name.
const Name = "least-token"

// maxLedger bounds the requests tracked; beyond it the oldest are forgotten.
const maxLedger = 1 << 20

func init() {
	policy.Register(Name, func(d policy.Deps) (policy.Policy, error) { return New(d), nil })
}

type entry struct {
	id, inst string
	out      float64
	at       time.Time
}

type account struct {
	out float64 // expected output tokens of its in-flight picks
	n   int64
}

// Policy is least-token. The scheduler calls it serially.
type Policy struct {
	rand      *rand.Rand
	clock     policy.Clock
	ttl       time.Duration
	keep      int
	avgOut    float64
	avgPrompt float64

	order  *list.List // of *entry, oldest first
	byReq  map[string]*list.Element
	byInst map[string]*account
	scores []float64
}

// New builds the policy from d.Config.
func New(d policy.Deps) *Policy {
	pc := d.Config.Scheduler.Policies
	if pc.MaxBatchedTokens == 0 {
		pc = config.DefaultPolicies()
	}
	ttl := d.Config.Scheduler.InflightTimeout
	if ttl <= 0 {
		ttl = 10 * time.Minute
	}
	p := &Policy{
		rand: d.Rand, clock: d.Clock, ttl: ttl,
		keep:   max(d.Config.Gateway.RetryCount+3, 4),
		avgOut: float64(pc.DefaultOutputTokens), avgPrompt: 512,
		order: list.New(), byReq: map[string]*list.Element{}, byInst: map[string]*account{},
	}
	if p.rand == nil {
		p.rand = rand.New(rand.NewPCG(1, 2))
	}
	if p.clock == nil {
		p.clock = policy.SystemClock{}
	}
	return p
}

// Name returns "least-token".
func (*Policy) Name() string { return Name }

// ExpectedOutput is the output length expected of req: the observed mean,
// never more than its max_tokens.
func (p *Policy) ExpectedOutput(req *policy.Request) float64 {
	if req.MaxTokens > 0 {
		return min(p.avgOut, float64(req.MaxTokens))
	}
	return p.avgOut
}

// Tokens is the policy's estimate of c's tokens in flight.
func (p *Policy) Tokens(c *policy.Instance) float64 {
	t := float64(c.InflightPromptTokens)
	var known int64
	if a := p.byInst[c.ID]; a != nil {
		t += a.out
		known = a.n
	}
	// Requests the engine runs that no pick of ours accounts for: on average
	// half their output is still to come; waiting ones still need prefill.
	if unknown := c.Running + c.Waiting - known; unknown > 0 {
		t += float64(unknown) * p.avgOut / 2
	}
	if c.Waiting > 0 {
		t += float64(c.Waiting) * p.avgPrompt
	}
	return t
}

// Pick ranks by ascending tokens in flight.
func (p *Policy) Pick(req *policy.Request, cands []*policy.Instance) policy.Decision {
	if len(cands) == 0 {
		return policy.Decision{}
	}
	p.expire()
	if req.PromptTokens > 0 {
		p.avgPrompt += 0.05 * (float64(req.PromptTokens) - p.avgPrompt)
	}
	if cap(p.scores) < len(cands) {
		p.scores = make([]float64, len(cands))
	}
	sc := p.scores[:len(cands)]
	for i, c := range cands {
		sc[i] = p.Tokens(c)
	}
	return policy.Decision{Ranked: rank.Top(p.rand, cands, sc, p.keep)}
}

// Picked records the request's expected output against the chosen instance.
func (p *Policy) Picked(req *policy.Request, d policy.Decision) {
	if len(d.Ranked) == 0 || req.ID == "" {
		return
	}
	if _, dup := p.byReq[req.ID]; dup {
		p.drop(req.ID)
	}
	inst := d.Ranked[0].ID
	e := &entry{id: req.ID, inst: inst, out: p.ExpectedOutput(req), at: p.clock.Now()}
	p.byReq[req.ID] = p.order.PushBack(e)
	a := p.byInst[inst]
	if a == nil {
		a = &account{}
		p.byInst[inst] = a
	}
	a.out += e.out
	a.n++
	for p.order.Len() > maxLedger {
		p.drop(p.order.Front().Value.(*entry).id)
	}
}

// Completed releases the request and learns from its output length.
func (p *Policy) Completed(reqID, _ string, _, completionTokens int64) {
	if completionTokens > 0 {
		p.avgOut += 0.05 * (float64(completionTokens) - p.avgOut)
	}
	p.drop(reqID)
}

// Removed forgets an instance's account; its ledger entries age out.
func (p *Policy) Removed(id string) { delete(p.byInst, id) }

func (p *Policy) drop(reqID string) {
	el, ok := p.byReq[reqID]
	if !ok {
		return
	}
	e := p.order.Remove(el).(*entry)
	delete(p.byReq, reqID)
	if a := p.byInst[e.inst]; a != nil {
		a.out -= e.out
		a.n--
		if a.n <= 0 {
			delete(p.byInst, e.inst)
		}
	}
}

// expire forgets picks no gateway reported within the in-flight timeout,
// as the scheduler does, so a lost report does not weigh forever.
func (p *Policy) expire() {
	now := p.clock.Now()
	for f := p.order.Front(); f != nil; f = p.order.Front() {
		e := f.Value.(*entry)
		if now.Sub(e.at) < p.ttl {
			return
		}
		p.drop(e.id)
	}
}

var _ policy.Observer = (*Policy)(nil)
