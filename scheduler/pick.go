package scheduler

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/clip"
	"github.com/llmrouter/llmrouter/internal/sessionkey"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// waiter is a request in the admission queue.
type waiter struct {
	req      policy.Request // in the waiter: a request and its waiter are one allocation
	pool     string
	fallback string // fallback reason already incurred (default_pool), "" if none
	seq      uint64
	enqueued time.Time
	deadline time.Time
	// deliver receives the final response, outside the scheduler's lock.
	deliver func(*llmrouterv1.PickResponse)
	done    bool
	routed  *pick // the committed pick, when the final answer was ROUTED
}

// decideMode says what a decision may do when no instance has room.
type decideMode int

const (
	modeFresh  decideMode = iota // a new request: reject if nothing is routable, else maybe queue
	modeRetry                    // a queued request: keep waiting unless an unsaturated instance exists
	modeExpire                   // a queued request at its deadline: route to an unsaturated instance, else shed (429)
)

// Pick decides where one request goes. When every candidate is saturated the
// request joins the admission queue: queued (if not nil) is called once with
// the QUEUED response, then Pick waits for the final ROUTED or REJECTED
// answer, which arrives on a capacity change, a queue re-evaluation, or the
// wait_schedule_timeout (all driven by Tick and the reports). Cancelling ctx
// takes the request out of the queue and returns ctx's error.
func (s *Scheduler) Pick(ctx context.Context, req *llmrouterv1.PickRequest, queued func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	final := make(chan *llmrouterv1.PickResponse, 1)
	resp, w := s.TryPick(req, func(r *llmrouterv1.PickResponse) { final <- r })
	if w == nil {
		return resp, nil
	}
	if queued != nil {
		queued(resp)
	}
	select {
	case r := <-final:
		return r, nil
	case <-ctx.Done():
	}
	s.abandon(w.w)
	return nil, ctx.Err()
}

// Ticket is a queued request, for its owner to cancel.
type Ticket struct{ w *waiter }

// TryPick is Pick without blocking, for the simulator in virtual time and as
// the one path Pick itself uses. It returns the response and, when that
// response is QUEUED, a ticket: onFinal is then called exactly once, later,
// with the ROUTED or REJECTED answer, from whichever call (Tick, a report, a
// completion) freed the request — never while the scheduler's lock is held,
// so onFinal may call the scheduler. The ticket is nil otherwise.
func (s *Scheduler) TryPick(req *llmrouterv1.PickRequest, onFinal func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, *Ticket) {
	start := time.Now() // decision cost, not scheduling time: measured on the wall clock even in virtual time
	if onFinal == nil {
		onFinal = func(*llmrouterv1.PickResponse) {}
	}
	s.mu.Lock()
	resp, w := s.submit(req, onFinal)
	s.unlock()
	s.m.pickDuration.WithLabelValues(s.pol.Name()).Observe(time.Since(start).Seconds())
	if w == nil {
		return resp, nil
	}
	return resp, &Ticket{w: w}
}

// Cancel takes a queued request out of the queue (its onFinal is not
// called), or, if it was routed meanwhile, releases the pick.
func (s *Scheduler) Cancel(t *Ticket) {
	if t != nil {
		s.abandon(t.w)
	}
}

func (s *Scheduler) abandon(w *waiter) {
	s.mu.Lock()
	defer s.unlock()
	if w.done {
		if w.routed != nil {
			s.release(w.routed)
			s.capacityChanged()
		}
		return
	}
	w.done = true
	if i := slices.Index(s.queue, w); i >= 0 {
		s.queue = slices.Delete(s.queue, i, i+1)
	}
	s.m.queueLength.Set(float64(len(s.queue)))
	s.m.queueWait.Observe(s.clock.Now().Sub(w.enqueued).Seconds())
	s.m.decisions.WithLabelValues(s.pol.Name(), "cancelled").Inc()
}

// submit handles a new request under mu: route it, reject it, or queue it.
func (s *Scheduler) submit(pr *llmrouterv1.PickRequest, deliver func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, *waiter) {
	now := s.clock.Now()
	s.seq++
	w := &waiter{seq: s.seq, enqueued: now, deliver: deliver, req: policy.Request{
		ID: sessionkey.Bound(pr.GetRequestId()), Model: pr.GetModel(), BlockHashes: pr.GetPromptBlockHashes(),
		BlockChars: int(pr.GetBlockChars()), PromptTokens: pr.GetPromptTokens(), MaxTokens: pr.GetMaxTokens(),
		Stream: pr.GetStream(), SessionKey: sessionkey.Bound(pr.GetSessionKey()), Priority: int(pr.GetPriority()),
		LoRA: pr.GetLoraAdapter(), Arrival: now, Deadline: now.Add(s.cfg.Gateway.WaitScheduleTimeout),
	}}
	req := &w.req
	s.tiers(req, pr)
	if req.ID == "" {
		req.ID = "scheduler-" + strconv.FormatUint(s.seq, 10)
	}
	if rej := s.resolvePool(w, pr.GetLoraPath()); rej != nil {
		return rej, nil
	}
	s.sat.Observe(req)
	if resp, ok := s.decide(w, modeFresh); ok {
		return resp, nil
	}
	if limit := s.cfg.Gateway.MaxQueueSize; len(s.queue) >= limit && s.held {
		// A hold is a preference, never a reason to refuse: with the
		// queue full the best candidate takes the request now.
		resp, _ := s.decide(w, modeExpire)
		return resp, nil
	}
	if limit := s.cfg.Gateway.MaxQueueSize; len(s.queue) >= limit {
		return s.shed(s.routableIn(req, w.pool), shedQueueFull, fmt.Sprintf("every instance serving model %q is saturated and the admission queue is full (%d requests, llm_gateway.max_queue_size)", clip.Input(req.Model), limit)), nil
	}
	w.deadline = req.Deadline
	// Larger priority first; equal priorities keep arrival order.
	i := sort.Search(len(s.queue), func(i int) bool { return s.queue[i].req.Priority < req.Priority })
	s.queue = append(s.queue, nil)
	copy(s.queue[i+1:], s.queue[i:])
	s.queue[i] = w
	if len(s.queue) == 1 {
		s.nextTry = now.Add(s.cfg.Gateway.WaitScheduleTryPeriod)
	}
	s.m.queueLength.Set(float64(len(s.queue)))
	s.m.decisions.WithLabelValues(s.pol.Name(), outcomeQueued).Inc()
	return &llmrouterv1.PickResponse{
		Status:  llmrouterv1.PickResponse_QUEUED,
		MaxWait: durationpb.New(s.cfg.Gateway.WaitScheduleTimeout),
		Policy:  s.pol.Name(),
		Pool:    w.pool,
		Reason:  s.queuedReason(req.Model),
	}, w
}

// Bounds of a tiered layout the scheduler accepts: a tail block of at
// most maxTailBlockChars, and hashes covering at most maxLayoutBlocks
// blocks (1 GiB of prompt at 64 characters a block), so that no block
// count a policy keeps (in 32 bits) can overflow.
const (
	maxTailBlockChars = 1 << 20
	maxLayoutBlocks   = 1 << 24
)

// tiers sets where req's hashes turn into tail blocks. A layout that
// does not add up (a tail block not a whole number of blocks, a head
// longer than the hashes) or passes the bounds above keeps the head
// alone: the request is routed on what it says surely, never refused
// for it.
func (s *Scheduler) tiers(req *policy.Request, pr *llmrouterv1.PickRequest) {
	tail, head := int(pr.GetTailBlockChars()), int(pr.GetHeadBlocks())
	if tail <= 0 {
		return
	}
	bc := cmp.Or(req.BlockChars, s.cfg.Gateway.BlockChars)
	if bc <= 0 || tail%bc != 0 || tail > maxTailBlockChars || head < 0 || head > len(req.BlockHashes) ||
		int64(head)+int64(len(req.BlockHashes)-head)*int64(tail/bc) > maxLayoutBlocks {
		req.BlockHashes = req.BlockHashes[:max(min(head, len(req.BlockHashes)), 0)]
		return
	}
	req.HeadBlocks, req.BlocksPerTail = head, tail/bc
}

// resolvePool finds the instances for the request's model: a base model
// or a LoRA adapter served under its own name (rebuildPools), or, for a
// name no instance serves literally, SGLang's "base:adapter" naming an
// adapter SGLang instances serve (sglang.go). loraPath (SGLang's older
// lora_path field) narrows a model to the SGLang instances serving it and
// that adapter when there are any, as "model:loraPath" would. A model no
// registered instance serves is rejected with 404 (503 while no instance at
// all is registered), unless
// llm_scheduler.default_pool names a model: its instances then take the
// request (the model name is passed through unchanged, so those engines must
// accept it, e.g. as an alias).
func (s *Scheduler) resolvePool(w *waiter, loraPath string) *llmrouterv1.PickResponse {
	model := w.req.Model
	if pool, n, ok := s.resolveLoRAPath(model, loraPath); ok {
		w.pool, w.req.LoRA = pool, n.adapter
		return nil
	}
	if _, ok := s.pools[model]; ok && model != "" {
		w.pool = model
		if n, ok := s.sglang[model]; ok {
			w.req.LoRA = n.adapter
		}
		return nil
	}
	if pool, n, ok := s.resolveSGLang(model); ok {
		// SGLang's "base:adapter": scored as a request for the adapter,
		// as SGLang runs it (the adapter in the model field wins over
		// any other the request names).
		w.pool, w.req.LoRA = pool, n.adapter
		return nil
	}
	if def := s.cfg.Scheduler.DefaultPool; def != "" {
		if _, ok := s.pools[def]; !ok {
			return s.reject(503, fmt.Sprintf("model %q is not served and the default pool %q has no instance (llm_scheduler.default_pool)", clip.Input(model), def))
		}
		w.pool, w.fallback = def, fallbackDefaultPool
		return nil
	}
	if len(s.pools) == 0 {
		// No instance registered at all, as right after a scheduler restart
		// before the agents reconnect: nothing says the model does not exist.
		// 503 (not 404) lets the gateway pass the request to Envoy, which
		// still holds the last endpoints.
		return s.reject(503, fmt.Sprintf("no instance is registered (model %q)", clip.Input(model)))
	}
	if model == "" {
		return s.reject(404, "the request names no model; served models: "+s.joinModels())
	}
	return s.reject(404, fmt.Sprintf("model %q is not served by any instance; served models: %s", clip.Input(model), s.joinModels()))
}

// decide tries to route w now. ok is false when the request must (keep)
// wait.
//
// The stage's filters run first: routable-filter keeps the instances that
// may take picks (all), saturation-filter those of them with room (unsat,
// marking every one's Saturated flag; scheduler/admission judges, holding
// predicted waits against the request's deadline). What happens when they
// leave nothing is the scheduler's: pass through when every instance is
// silent, queue, or shed.
func (s *Scheduler) decide(w *waiter, mode decideMode) (resp *llmrouterv1.PickResponse, ok bool) {
	// Filters never write to their input: with every instance routable
	// and none saturated, all and unsat are the pool's own list, and a
	// decision copies no pointers (under the GC's write barrier, copying
	// and clearing pool-sized buffers was the largest cost of a
	// least-request pick over 256 instances).
	all := s.routableIn(&w.req, w.pool)
	unsat := s.sat.Filter(&s.stageCS, &w.req, all)
	s.need = math.Inf(1)
	if len(unsat) == 0 && len(all) > 0 && mode == modeRetry {
		s.need = s.sat.HeldBackWait(&w.req, all)
	}
	fallback := w.fallback
	s.held = false
	switch {
	case len(unsat) > 0 && len(unsat) < len(all) && mode != modeExpire && s.holder != nil &&
		s.holder.Hold(&w.req, all, s.clock.Now().Sub(w.req.Arrival)):
		s.held = true
		return nil, false
	case len(unsat) > 0:
	case len(all) == 0 && s.anySilent(w.pool):
		return s.passthrough(w.req.Model), true
	case len(all) == 0 && mode == modeRetry:
		return nil, false // the fleet may come back before the deadline
	case len(all) == 0:
		return s.reject(503, fmt.Sprintf("no healthy instance serves model %q (pool %q): all are unhealthy, draining or gone", clip.Input(w.req.Model), clip.Input(w.pool))), true
	case mode == modeExpire:
		return s.shed(all, shedQueueTimeout, fmt.Sprintf("every instance serving model %q stayed saturated for %s (llm_gateway.wait_schedule_timeout); shortest predicted wait %s against llm_scheduler.max_predicted_wait %s",
			clip.Input(w.req.Model), s.cfg.Gateway.WaitScheduleTimeout, s.shortestWait(all).Round(time.Millisecond), s.sat.Target())), true
	default:
		return nil, false
	}
	return s.route(w, unsat, all, fallback), true
}

// queuedReason says why a new request was queued.
func (s *Scheduler) queuedReason(model string) string {
	if s.held {
		return fmt.Sprintf("waiting for the saturated instance holding most of the prompt rather than computing it elsewhere (model %q)", clip.Input(model))
	}
	return fmt.Sprintf("every instance serving model %q is saturated; waiting for capacity", clip.Input(model))
}

// anySilent: an instance of pool is published (in EDS) but silent.
func (s *Scheduler) anySilent(pool string) bool {
	for _, in := range s.pools[pool] {
		if in.published() && in.silent {
			return true
		}
	}
	return false
}

// budget is how much longer w may wait: its whole wait_schedule_timeout
// while new, what is left of it once queued. (saturation-filter holds
// predicted waits against the same, from the request's deadline.)
func (s *Scheduler) budget(w *waiter) time.Duration {
	if w.deadline.IsZero() {
		return s.cfg.Gateway.WaitScheduleTimeout
	}
	return max(w.deadline.Sub(s.clock.Now()), 0)
}

// route asks the policy, keeps only valid instances (never a draining or
// unhealthy one, whatever the policy returns), commits the pick and tells an
// observing policy.
//
// When fewer unsaturated candidates than 1+retry_count exist, saturated ones
// fill the remaining fallback places, least loaded first: a retry on a busy
// instance beats no retry.
func (s *Scheduler) route(w *waiter, cands, all []*policy.Instance, fallback string) *llmrouterv1.PickResponse {
	d := s.pol.Pick(&w.req, cands)
	n := min(1+s.retries, len(all))
	ranked := make([]*policy.Instance, 0, n)
	add := func(v *policy.Instance) {
		in := s.insts[v.ID]
		if in == nil || !in.routable() || !in.serves(w.pool) && !s.servesSGLang(in, w.pool) {
			return
		}
		for _, r := range ranked {
			if r.ID == v.ID {
				return
			}
		}
		ranked = append(ranked, &in.view)
	}
	for _, v := range d.Ranked {
		if len(ranked) == n {
			break
		}
		if v != nil {
			add(v)
		}
	}
	if len(ranked) == 0 {
		fallback = fallbackPolicyEmpty
		for _, v := range cands {
			if len(ranked) == n {
				break
			}
			add(v)
		}
	}
	if len(ranked) < n {
		rest := make([]*policy.Instance, 0, len(all)-len(cands))
		for _, v := range all {
			if v.Saturated {
				rest = append(rest, v)
			}
		}
		slices.SortFunc(rest, func(a, b *policy.Instance) int {
			if c := cmp.Compare(a.Load(), b.Load()); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
		for _, v := range rest {
			if len(ranked) == n {
				break
			}
			add(v)
		}
	}
	d.Ranked = ranked
	if d.Prefill != nil {
		if in := s.insts[d.Prefill.ID]; in == nil || !in.routable() {
			d.Prefill = nil
		} else {
			d.Prefill = &in.view
		}
	}
	primary := s.insts[ranked[0].ID]
	p := s.commit(w.req.ID, primary, w.req.PromptTokens, w.req.MaxTokens)
	w.routed = p
	if s.observer != nil {
		s.observer.Picked(&w.req, d)
	}
	if fallback != "" {
		s.m.fallbacks.WithLabelValues(fallback).Inc()
	}
	s.m.decisions.WithLabelValues(s.pol.Name(), outcomeRouted).Inc()
	resp := &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_ROUTED, Policy: s.pol.Name(), Pool: w.pool, Endpoints: make([]string, len(ranked))}
	for i, v := range ranked {
		resp.Endpoints[i] = v.Address
	}
	if d.Prefill != nil {
		resp.PrefillEndpoint = d.Prefill.Address
		resp.PrefillBootstrapPort = s.insts[d.Prefill.ID].bootstrapPort
	}
	return resp
}

func (s *Scheduler) reject(code int32, reason string) *llmrouterv1.PickResponse {
	s.m.decisions.WithLabelValues(s.pol.Name(), outcomeRejected).Inc()
	return &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_REJECTED, HttpStatus: code, Reason: reason, Policy: s.pol.Name()}
}

// shed rejects a request for want of capacity with 429 and a Retry-After: the
// predicted time until the first of its candidates has room (admission's
// RetryAfter), in whole seconds, at least 1 and at most
// wait_schedule_timeout.
func (s *Scheduler) shed(cands []*policy.Instance, why, reason string) *llmrouterv1.PickResponse {
	s.m.shed.WithLabelValues(why).Inc()
	r := s.reject(429, reason)
	r.RetryAfterSeconds = s.sat.RetryAfter(cands, s.cfg.Gateway.WaitScheduleTimeout)
	return r
}

// routableIn starts the stage for req: pool's routable instances, the
// pool's own list when all are (read-only, valid until the next decision).
func (s *Scheduler) routableIn(req *policy.Request, pool string) []*policy.Instance {
	s.stageCS.Reset()
	return s.routable.Filter(&s.stageCS, req, s.poolViews[pool])
}

// shortestWait is the shortest predicted wait among cands, for the
// rejection's reason.
func (s *Scheduler) shortestWait(cands []*policy.Instance) time.Duration {
	var best time.Duration = -1
	for _, c := range cands {
		if d := s.sat.PredictedWait(c); best < 0 || d < best {
			best = d
		}
	}
	return max(best, 0)
}

// capacityChanged re-evaluates the queue after a report, a completion, a
// new or resumed instance.
func (s *Scheduler) capacityChanged() {
	if len(s.queue) > 0 {
		s.drainQueue()
	}
}

// drainQueue routes every queued request that now has an unsaturated
// candidate, in queue order. Once a pool has no room, later requests for it
// are skipped in this pass — their candidates are the same — unless the
// room they lack is time that a request with more of its wait left has:
// need is the shortest predicted wait that held a request back.
func (s *Scheduler) drainQueue() {
	now := s.clock.Now()
	s.nextTry = now.Add(s.cfg.Gateway.WaitScheduleTryPeriod)
	full := s.fullBuf[:0]
	kept := s.queue[:0]
	for _, w := range s.queue {
		if i := slices.IndexFunc(full, func(f poolNeed) bool { return f.pool == w.pool }); i >= 0 {
			if s.budget(w).Seconds() <= full[i].need {
				kept = append(kept, w)
				continue
			}
		}
		resp, ok := s.decide(w, modeRetry)
		if !ok {
			if !s.held { // a hold says nothing of the pool's room
				full = setNeed(full, w.pool, s.need)
			}
			kept = append(kept, w)
			continue
		}
		s.finish(w, resp, now)
	}
	s.fullBuf = full[:0]
	s.shrinkQueue(kept)
}

// poolNeed is a pool with no room in this pass of drainQueue, and the
// shortest predicted wait among its candidates held back by their wait
// (+Inf when none was: no budget helps).
type poolNeed struct {
	pool string
	need float64
}

func setNeed(full []poolNeed, pool string, need float64) []poolNeed {
	for i := range full {
		if full[i].pool == pool {
			full[i].need = need
			return full
		}
	}
	return append(full, poolNeed{pool, need})
}

// expireQueue answers requests that waited out wait_schedule_timeout: an
// unsaturated instance still takes one (a pass of drainQueue may not have
// run since it freed up), otherwise it is shed with 429 and a Retry-After
// (503 when no instance is left), never forced onto a saturated engine.
func (s *Scheduler) expireQueue(now time.Time) {
	if len(s.queue) == 0 {
		return
	}
	kept := s.queue[:0]
	for _, w := range s.queue {
		if now.Before(w.deadline) {
			kept = append(kept, w)
			continue
		}
		resp, _ := s.decide(w, modeExpire)
		s.finish(w, resp, now)
	}
	s.shrinkQueue(kept)
}

func (s *Scheduler) shrinkQueue(kept []*waiter) {
	clear(s.queue[len(kept):])
	s.queue = kept
	s.m.queueLength.Set(float64(len(s.queue)))
}

func (s *Scheduler) finish(w *waiter, resp *llmrouterv1.PickResponse, now time.Time) {
	w.done = true
	s.m.queueWait.Observe(now.Sub(w.enqueued).Seconds())
	deliver := w.deliver
	s.fired = append(s.fired, func() { deliver(resp) })
}
