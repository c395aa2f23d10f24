package leasttoken

import (
	"container/list"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	"github.com/llmrouter/llmrouter/scheduler/policy/internal/bypos"
	"github.com/llmrouter/llmrouter/scheduler/policy/internal/rank"
)

// Name is the policy's configuration name.
const Name = "least-token"

// maxLedger bounds the requests tracked; beyond it the oldest are forgotten.
const maxLedger = 1 << 20

func init() {
	framework.RegisterPolicy(Name, DefaultParams, func(d policy.Deps, p Params) (policy.Policy, error) { return New(d, p), nil })
}

// floorDiv sets the least a pick still weighs once the generation rate says
// it should be done: 1/floorDiv of its expected output (at least a token).
// A pick that outran its expectation is still running: it holds a batch
// seat and its KV cache, and having run long it is likely a long one. One
// token would let an instance with fifty overdue requests look lighter than
// one with a single fresh request. A small fraction still lets old picks
// rank well below fresh ones, and bounds what a pick whose completion was
// never reported weighs until inflight_timeout releases it.
const floorDiv = 8

type entry struct {
	id, inst string
	acct     *account // the account it was added to, even if since removed
	out      int64    // expected output tokens
	floor    int64    // the least it weighs while in flight
	atMs     int64    // when picked, ms since the policy's epoch
	settled  bool     // at its floor, out of the counting sums
	prev     *entry   // in acct's counting list, oldest first
	next     *entry
}

// account aggregates an instance's in-flight picks so that the output still
// to generate, Σ max(out − rate·age, floor), is estimated in O(1).
//
// The cn picks still counting down are summed: each generates at the same
// rate, so together they have max(Σout − rate·(cn·now − Σat), Σfloor) left.
// That linear sum lets a pick far past its expectation subtract from the
// others (one lost report, minutes old, would zero a whole instance), so a
// pick at its floor is settled: moved out of the sums into settledFloor,
// oldest first, checked at each Pick. Each pick settles at most once, so
// this costs O(1) per candidate amortised. A younger pick past its floor
// behind an older one still counting stays in the sums until the older one
// settles; each such pick understates the total by less than the older
// one's expected output, and the total never falls below the floors.
//
// The sums are integers (whole tokens, whole milliseconds) so that adding
// and removing picks in any order leaves no rounding residue.
type account struct {
	// What Pick reads for each candidate comes first, in one 64-byte span.
	cn    int64 // the picks still counting down
	out   int64 // their Σ expected output
	floor int64 // their Σ floor
	atMs  int64 // their Σ pick time, ms since the policy's epoch
	// The oldest counting pick's out−floor and pick time, copied so that
	// Pick reads only the account, not an entry elsewhere in memory.
	headSlack, headAtMs int64
	settledFloor        int64 // Σ floor of the settled picks
	n                   int64 // every in-flight pick, counting or settled

	head, tail *entry // the counting picks, oldest first
}

func (a *account) add(e *entry) {
	a.n++
	a.cn++
	a.out += e.out
	a.floor += e.floor
	a.atMs += e.atMs
	e.prev, e.next = a.tail, nil
	if a.tail != nil {
		a.tail.next = e
	} else {
		a.setHead(e)
	}
	a.tail = e
}

func (a *account) remove(e *entry) {
	a.n--
	if e.settled {
		a.settledFloor -= e.floor
		return
	}
	a.unlink(e)
}

// unlink takes a counting pick out of the sums and the list.
func (a *account) unlink(e *entry) {
	a.cn--
	a.out -= e.out
	a.floor -= e.floor
	a.atMs -= e.atMs
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		a.setHead(e.next)
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		a.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (a *account) setHead(e *entry) {
	a.head = e
	a.headSlack, a.headAtMs = 0, 0 // an emptied account is all zero
	if e != nil {
		a.headSlack, a.headAtMs = e.out-e.floor, e.atMs
	}
}

// remaining is the output its picks still have to generate at nowMs when
// each of its running requests generates rate tokens/s (0: unknown).
func (a *account) remaining(nowMs int64, rate float64) float64 {
	if !(rate > 0) || math.IsInf(rate, 1) { // NaN or +Inf from a bad report: unknown too
		return float64(a.out + a.settledFloor)
	}
	perMs := rate * 1e-3
	for a.cn > 0 && perMs*float64(nowMs-a.headAtMs) >= float64(a.headSlack) {
		e := a.head
		a.unlink(e)
		e.settled = true
		a.settledFloor += e.floor
	}
	// Plain comparisons: the builtin min and max order NaNs and signed
	// zeros, which costs a third of the pick at a thousand candidates.
	left := float64(a.out) - perMs*float64(a.cn*nowMs-a.atMs)
	if f := float64(a.floor); left < f {
		left = f
	} else if o := float64(a.out); left > o {
		left = o
	}
	return left + float64(a.settledFloor)
}

// Policy is least-token. The scheduler calls it serially.
type Policy struct {
	rand      *rand.Rand
	clock     policy.Clock
	epoch     time.Time // pick times are kept as ms since
	ttl       time.Duration
	keep      int
	avgOut    float64
	avgPrompt float64

	order  *list.List // of *entry, oldest first
	byReq  map[string]*list.Element
	byInst map[string]*account
	scores []float64

	// The candidates' accounts by position (see accounts); acctGen changes
	// whenever an account is made or dropped.
	pos     bypos.Cache[*account]
	acctGen uint64
}

// Params are least-token's parameters: plugin type least-token; the
// built-in profile runs with DefaultParams.
type Params struct {
	// DefaultOutputTokens is a reply's expected length until replies are
	// observed; defaults llm_scheduler.cost_model.default_output_tokens.
	DefaultOutputTokens int `json:"defaultOutputTokens" default:"llm_scheduler.cost_model.default_output_tokens"`
}

// DefaultParams are the parameters with c's cost model.
func DefaultParams(c config.Config) Params {
	return Params{DefaultOutputTokens: c.Scheduler.CostModel.DefaultOutputTokens}
}

// Validate checks the parameters.
func (p Params) Validate() error {
	if p.DefaultOutputTokens < 1 {
		return fmt.Errorf("parameter defaultOutputTokens %d: accepted: 1 or more", p.DefaultOutputTokens)
	}
	return nil
}

// New builds the policy with parameters pr (checked: Params.Validate).
func New(d policy.Deps, pr Params) *Policy {
	ttl := d.Config.Scheduler.InflightTimeout
	if ttl <= 0 {
		ttl = 10 * time.Minute
	}
	p := &Policy{
		rand: d.Rand, clock: d.Clock, ttl: ttl,
		keep:   max(d.Config.Gateway.RetryCount+3, 4),
		avgOut: float64(pr.DefaultOutputTokens), avgPrompt: 512,
		order: list.New(), byReq: map[string]*list.Element{}, byInst: map[string]*account{},
	}
	if p.rand == nil {
		p.rand = rand.New(rand.NewPCG(1, 2))
	}
	if p.clock == nil {
		p.clock = policy.SystemClock{}
	}
	p.epoch = p.clock.Now()
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

// Tokens is the policy's estimate of c's tokens in flight now.
func (p *Policy) Tokens(c *policy.Instance) float64 { return p.tokens(c, p.nowMs()) }

// nowMs is the policy's clock in ms since its epoch.
func (p *Policy) nowMs() int64 { return p.clock.Now().Sub(p.epoch).Milliseconds() }

func (p *Policy) tokens(c *policy.Instance, nowMs int64) float64 {
	return p.tokensOf(c, p.byInst[c.ID], nowMs)
}

// tokensOf is tokens given c's account a (nil: none).
func (p *Policy) tokensOf(c *policy.Instance, a *account, nowMs int64) float64 {
	t := float64(c.InflightPromptTokens)
	var known int64
	if a != nil {
		// Each running request generates an equal share of the instance's
		// reported rate; with no rate reported, nothing counts down.
		t += a.remaining(nowMs, c.GenTPS/float64(max(c.Running, 1)))
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
	now := p.nowMs()
	accts := p.accounts(cands)
	for i, c := range cands {
		sc[i] = p.tokensOf(c, accts[i], now)
	}
	return policy.Decision{Ranked: rank.Top(p.rand, cands, sc, p.keep)}
}

// accounts returns each candidate's account, by position (internal/bypos),
// cached while no account is made or dropped (acctGen).
func (p *Policy) accounts(cands []*policy.Instance) []*account {
	return p.pos.Get(cands, p.acctGen, func(c *policy.Instance) *account { return p.byInst[c.ID] })
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
	a := p.byInst[inst]
	if a == nil {
		a = &account{}
		p.byInst[inst] = a
		p.acctGen++
	}
	out := max(int64(math.Round(p.ExpectedOutput(req))), 1)
	e := &entry{id: req.ID, inst: inst, acct: a, out: out, floor: max(out/floorDiv, 1), atMs: p.nowMs()}
	p.byReq[req.ID] = p.order.PushBack(e)
	a.add(e)
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
func (p *Policy) Removed(id string) {
	if _, ok := p.byInst[id]; ok {
		delete(p.byInst, id)
		p.acctGen++
	}
}

func (p *Policy) drop(reqID string) {
	el, ok := p.byReq[reqID]
	if !ok {
		return
	}
	e := p.order.Remove(el).(*entry)
	delete(p.byReq, reqID)
	// Subtract from the account the pick was added to: if the instance was
	// removed and has come back, its new account never held this pick.
	// An emptied account stays (until Removed): dropping it would
	// invalidate every pick's cached accounts.
	e.acct.remove(e)
}

// expire forgets picks no gateway reported within the in-flight timeout,
// as the scheduler does, so a lost report does not weigh forever.
func (p *Policy) expire() {
	now, ttl := p.nowMs(), p.ttl.Milliseconds()
	for f := p.order.Front(); f != nil; f = p.order.Front() {
		e := f.Value.(*entry)
		if now-e.atMs < ttl {
			return
		}
		p.drop(e.id)
	}
}

var _ policy.Observer = (*Policy)(nil)
