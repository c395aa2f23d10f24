package prefixcache

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/llmrouter/llmrouter/scheduler/costmodel"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	// Imported for Instance.Load's inline body (see leastrequest).
	_ "github.com/llmrouter/llmrouter/scheduler/fleet"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	"github.com/llmrouter/llmrouter/scheduler/policy/internal/bypos"
	"github.com/llmrouter/llmrouter/scheduler/policy/internal/rank"
	"github.com/llmrouter/llmrouter/scheduler/prefixindex"
)

// Name is the policy's configuration name.
const Name = "prefix-cache"

// overloaded is added to the cost of a candidate over the load cap: larger
// than any real prediction, so such candidates rank after all others while
// keeping their order among themselves.
const overloaded = 1e6

// debugCandidates bounds the candidates listed in the debug line.
const debugCandidates = 32

func init() {
	framework.RegisterPolicy(Name, DefaultParams, func(d policy.Deps, p Params) (policy.Policy, error) { return New(d, p) })
}

// Model is the cost model, in seconds (docs/policies.md): the engine model
// shared with admission (scheduler/costmodel) and this policy's weights.
type Model struct {
	costmodel.Model
	DecodeWeight float64
	MaxLoadRatio float64
	MaxKV        float64 // KV cache fraction at which admission holds an instance back
}

// Policy is prefix-cache. It keeps its prefix index and estimates; the
// scheduler calls it serially.
type Policy struct {
	m    Model
	rand *rand.Rand
	log  *zap.Logger
	idx  *prefixindex.Index
	size prefixindex.Sizing
	keep int // candidates ranked exactly

	clock policy.Clock

	avgPrompt   float64 // EWMA of prompt tokens
	avgUncached float64 // EWMA of the uncached prompt tokens of our picks: a waiting request's prefill
	uncachedFr  float64 // EWMA of uncached / prompt tokens of our picks, for in-flight picks owed does not know
	avgOut      float64 // EWMA of completion tokens

	// backlog is, per index slot + 1, the prefill our picks brought the
	// instance that it has not worked off yet, as a fluid queue (see owed).
	backlog []queued
	// speed is, per index slot + 1, the instance's speed measured against
	// the cost model (see calibrate; 1 until measured), and sampledAt the
	// report it was last measured from.
	speed      []float64
	sampledAt  []int64
	calibrated bool    // parameter speedCalibration
	minHold    float64 // seconds of prefill a hold must save (Hold)

	// heldBySlot is per-pick scratch by index slot + 1: the blocks each matched
	// instance holds; all zero between picks.
	heldBySlot []int32

	// tails remembers, per instance, where the prompts we sent it ended, so
	// the next turn of a conversation is credited with the previous answer's
	// blocks (see heldTail).
	tails []tail

	// The last Pick's request, so Picked reads the chosen instance's held
	// blocks from match (by its position in pos) instead of a second index
	// lookup.
	lastReq *policy.Request
	lastHit bool
	lastN   int

	// The candidates' index slots by position (see slots).
	pos bypos.Cache[int32]
	// posSlot is the last pick's slots, by candidate position.
	posSlot []int32

	hitBlocks, missBlocks prometheus.Counter // see blockCounter

	// windows is, per index slot + 1, the interval over which measure
	// compares the index's predicted prefix hits with the engine's.
	windows []window
	predErr *prometheus.GaugeVec // llmrouter_prefix_prediction_error

	// priceAll turns selectBest's passing over off: tests compare the two.
	priceAll bool

	// Per-pick scratch, indexed like the candidates.
	scores  []float64
	loads   []int64
	running []int64
	bounds  []bound
	// home is the last pick's homeLoads when it priced a new prefix by
	// them (nil otherwise), by candidate position.
	home    []float64
	homeBuf []float64
	match   []int32
	ranker  rank.Ranker
}

// tail is one prompt end: the hash of the last block of a prompt the index
// was taught (see insert), the index slot of the instance it was sent to,
// and the prompt's tokens (more than its hashed blocks when the gateway
// hashed only its first max_prefix_chars).
type tail struct {
	hash   uint64
	slot   int32
	tokens int32
	// blocks is the prompt's hashed blocks: more than hash's position + 1
	// when the pick taught the index only their start (insertBudget).
	// marks are the low 32 bits of the prompt's hashes at tailMarks points
	// evenly spaced after hash's, the last at its last hashed block (see
	// markAt): a request whose hashes pass through one shares the prompt up
	// to there.
	blocks int32
	marks  [tailMarks]uint32
	// shared: prompts with this hashed start went to several instances, or
	// one did not continue the last (a system prompt longer than the hashed
	// window, shared by many conversations): which of them an instance
	// holds is unknown, so only what they share is credited, and tokens is
	// the shortest prompt seen with this start.
	shared bool
}

// tailSlots sizes the prompt-end table: direct-mapped by hash, a newer end
// overwrites an older one in its place. 64k entries (3.5 MB) keep the
// latest turn of tens of thousands of conversations; a lost entry costs
// the credit for one answer, or for the blocks of a long prompt the index
// was not taught, until its next pick teaches it more.
const tailSlots = 1 << 16

// tailMarks is how many of a prompt's hashes past what the index was
// taught its tail keeps: a request that leaves the prompt between two
// marks is credited up to the earlier one, so with 8 at most an eighth of
// the untaught blocks goes uncredited.
const tailMarks = 8

// taughtTail is where the tail of a prompt the index was taught only the
// start of (its first blocks through h) is kept for slot: apart from the
// other tails, and per instance, because instances reach the same block
// of a long prompt's start: one overwriting another's would take from it
// the credit for the whole rest of its prompt.
func (p *Policy) taughtTail(h uint64, slot int32) *tail {
	return &p.tails[(h^uint64(slot+1)*0x9E3779B97F4A7C15)&(tailSlots-1)]
}

// markAt is the position (in blocks, from the prompt's start) of mark j of
// a prompt of n hashed blocks whose first k the index was taught.
func markAt(j, k, n int) int { return k + (n-k)*(j+1)/tailMarks }

// queued is an instance's backlog of uncached prompt tokens at time at
// (UnixNano of the policy's clock).
type queued struct {
	at     int64
	tokens float64
	known  bool // false: no pick of ours recorded (owed falls back to the reports)
	// rep is the instance's report (UnixNano) the backlog was last held
	// to, and fresh the uncached tokens our picks added since (see
	// drained).
	rep   int64
	fresh float64
}

// New builds the policy with parameters pr (checked: Params.Validate).
func New(d policy.Deps, pr Params) (*Policy, error) {
	c := pr.config(d.Config)
	p := &Policy{
		clock: d.Clock,
		m: Model{
			Model:        costmodel.FromConfig(c.Scheduler.CostModel),
			DecodeWeight: pr.DecodeWeight,
			MaxLoadRatio: pr.MaxLoadRatio,
			MaxKV:        pr.MaxKVCacheUsage,
		},
		rand:        d.Rand,
		log:         d.Log,
		idx:         prefixindex.New(c.Scheduler.PrefixIndex.MaxBlocks),
		size:        prefixindex.NewSizing(c),
		keep:        max(c.Gateway.RetryCount+3, 4),
		avgPrompt:   512,
		avgUncached: 512,
		uncachedFr:  1,
		avgOut:      float64(c.Scheduler.CostModel.DefaultOutputTokens),
		tails:       make([]tail, tailSlots),
		calibrated:  pr.SpeedCalibration,
		minHold:     c.Agent.ReportInterval.Seconds(),
	}
	for i := range p.tails {
		p.tails[i].slot = -1
	}
	if p.rand == nil {
		p.rand = rand.New(rand.NewPCG(1, 2))
	}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	if p.clock == nil {
		p.clock = policy.SystemClock{}
	}
	if err := prefixindex.Register(d.Metrics, p.idx); err != nil {
		return nil, err
	}
	blocks, err := blockCounter(d.Metrics)
	if err != nil {
		return nil, err
	}
	p.hitBlocks, p.missBlocks = blocks.WithLabelValues("hit"), blocks.WithLabelValues("miss")
	if p.predErr, err = predictionGauge(d.Metrics); err != nil {
		return nil, err
	}
	return p, nil
}

// Name returns "prefix-cache".
func (*Policy) Name() string { return Name }

// Index exposes the prefix index (for tests and the simulator's reports).
func (p *Policy) Index() *prefixindex.Index { return p.idx }

// Pick ranks candidates by predicted cost, cheapest first, and returns the
// best keep of them (all when there are fewer than rank.FullBelow): the
// scheduler uses the first 1+retry_count.
//
// It allocates only the returned slice: scores, loads, matches and slot
// numbers live in buffers the policy keeps, which is safe because the
// scheduler calls it serially. One pass over the candidates reads each
// instance once.
func (p *Policy) Pick(req *policy.Request, cands []*policy.Instance) policy.Decision {
	n := len(cands)
	if n == 0 {
		return policy.Decision{}
	}
	if cap(p.scores) < n {
		p.scores = make([]float64, n)
		p.loads = make([]int64, n)
		p.match = make([]int32, n)
	}
	scores, loads, match := p.scores[:n], p.loads[:n], p.match[:n]
	p.match = match
	// The gateway's hashes are chained (internal/prompthash), so the index
	// may bisect the chain instead of looking up every block.
	hit := p.idx.MatchChain(req.BlockHashes) > 0
	in := p.inputs(req)
	in.newPrefix = !hit
	p.growSlots()
	// held gets the blocks each matched instance holds, by slot+1, so the
	// loop below reads one number per candidate whether it matched or not
	// (held[0], for instances without a slot, stays 0).
	held := p.heldBySlot
	if hit {
		for _, s := range p.idx.MatchedSlots() {
			m := p.idx.Matched(s)
			held[s+1] = int32(req.Blocks(m) + p.heldTail(req, m, s, &in))
		}
	}
	slots := p.slots(cands)
	if hit {
		for i, s := range slots {
			match[i] = held[s+1]
		}
		for _, s := range p.idx.MatchedSlots() {
			held[s+1] = 0
		}
	} else {
		clear(match) // nobody holds any of it: the copy would read zeros slot by slot
	}
	now := p.clock.Now().UnixNano()
	var ranked []*policy.Instance
	p.home = nil
	big := n >= rank.FullBelow && p.keep < n && !p.priceAll
	if big && in.newPrefix {
		ranked = p.selectHomes(cands, slots, &in, now)
	}
	switch {
	case ranked != nil:
	case big: // selectHomes' nil too: without home loads selectBest's bound holds
		ranked = p.selectBest(cands, slots, match, &in, now, max(in.hashed, in.promptBlocks))
	default:
		total := p.costs(cands, slots, match, scores, loads, &in, now)
		if in.newPrefix {
			p.priceHomes(cands, slots, scores, &in)
		}
		if p.m.MaxLoadRatio > 0 {
			limit := p.m.MaxLoadRatio * max((float64(total)+1)/float64(n), 1)
			for i, l := range loads {
				if float64(l+1) > limit {
					scores[i] += overloaded
				}
			}
		}
		ranked = p.ranker.Top(p.rand, cands, scores, p.keep)
	}
	p.lastReq, p.lastHit, p.lastN = req, hit, n
	if ce := p.log.Check(zap.DebugLevel, "prefix-cache decision"); ce != nil {
		ce.Write(p.explain(req, cands, ranked, scores, in, now)...)
	}
	return policy.Decision{Ranked: ranked}
}

// selectBest is Pick's ranking when only the best keep of many candidates
// are wanted. It returns what ranking every candidate's cost would (the
// same candidates, the same random tie-breaks), but prices only those that
// can still make the cut: a candidate's cost is at least its bound — the
// cost with nothing queued ahead — which grows with its running count, so
// once keep candidates are held, one whose running count is above the
// bound's limit for its held blocks (see inputs.bound) is passed over
// without reading more of it. On a fleet of a thousand most candidates are
// passed over.
func (p *Policy) selectBest(cands []*policy.Instance, slots, match []int32, in *inputs, now int64, blocks int) []*policy.Instance {
	n := len(cands)
	scores, loads := p.scores[:n], p.loads[:n]
	if cap(p.running) < n {
		p.running = make([]int64, n)
	}
	running := p.running[:n]
	// The load cap needs the mean load before any cost is final.
	var total int64
	for i, c := range cands {
		r := c.Running + c.InflightRequests
		running[i] = r
		l := r + c.Waiting
		loads[i] = l
		total += l
	}
	limit := math.Inf(1)
	if p.m.MaxLoadRatio > 0 {
		limit = p.m.MaxLoadRatio * max((float64(total)+1)/float64(n), 1)
	}
	bounds := slices.Grow(p.bounds[:0], blocks+1)[:blocks+1]
	for i := range bounds {
		bounds[i] = bound{tau: -1}
	}
	p.bounds = bounds
	backlog := p.backlog
	st := p.ranker.Stream(p.rand, p.keep)
	// tau is the threshold the limits are checked against; a limit computed
	// for a larger threshold is still sound (it passes over fewer) and is
	// refreshed once the threshold has fallen by a sixteenth (stale).
	full, tau, stale := false, 0.0, 0.0
	for i, c := range cands {
		if full {
			b := &bounds[match[i]]
			if b.tau > stale || b.tau < 0 {
				*b = in.bound(match[i], tau)
			}
			if running[i] > b.maxRunning {
				continue
			}
		}
		k := slots[i] + 1
		s := in.cost(c, match[i], p.owedFrom(c, backlog[k], p.speed[k], now))
		if c.NumGPUBlocks > 0 { // the capacity is two cache lines further
			s += in.kvAt(c, match[i])
		}
		if float64(loads[i]+1) > limit {
			s += overloaded
		}
		scores[i] = s
		st.Offer(int32(i), s)
		if full = st.Full(); full && st.Threshold() != tau {
			tau = st.Threshold()
			stale = tau + tau*(1.0/16)
		}
	}
	return p.ranker.Ranked(st, cands)
}

// selectHomes is selectBest for a prefix nobody holds, priced at its
// candidates' home loads (priceHomes); nil when the index holds none of
// their blocks, so that there are no home loads. selectBest's bound is by
// the running count, which the home load takes the prefill's delay off:
// here a candidate running many may cost less than one running few. So
// each candidate is bounded by its floor, its cost with nothing owed at its
// home load, from numbers read once in a first pass: no priced cost
// undercuts it (ahead only grows with owed ≥ 0, and the KV term is ≥ 0),
// and being the expressions the pricing evaluates, in its order, with a
// smaller ahead, it does not round above it either; the margin is bound's,
// for a compiler that fuses one and not the other. On 1,024 candidates this
// prices about one in eight (BenchmarkPick1024/loads=spread/prefix=new).
func (p *Policy) selectHomes(cands []*policy.Instance, slots []int32, in *inputs, now int64) []*policy.Instance {
	n := len(cands)
	if cap(p.running) < n {
		p.running = make([]int64, n)
	}
	if cap(p.homeBuf) < n {
		p.homeBuf = make([]float64, n)
	}
	// scores holds each candidate's floor, without its home part, until the
	// candidate is priced.
	floor, running, loads, home := p.scores[:n], p.running[:n], p.loads[:n], p.homeBuf[:n]
	var total int64
	var sum, blocks float64
	u := max(in.prompt, 0) // nothing held
	for i, c := range cands {
		r := c.Running + c.InflightRequests
		running[i] = r
		l := r + c.Waiting
		loads[i] = l
		total += l
		// cost's ahead with nothing owed, without cost's max: waiting ≥ 0.
		floor[i] = in.costOf(float64(c.Waiting)*in.avgUncached, u, float64(r))
		sum += float64(r)
		home[i] = float64(p.idx.HeldAt(slots[i]))
		blocks += home[i]
	}
	if !(blocks > 0) {
		return nil
	}
	p.home = home
	limit := math.Inf(1)
	if p.m.MaxLoadRatio > 0 {
		limit = p.m.MaxLoadRatio * max((float64(total)+1)/float64(n), 1)
	}
	backlog := p.backlog
	st := p.ranker.Stream(p.rand, p.keep)
	full, tau, t := false, 0.0, 0.0 // t: tau with bound's margin
	for i, c := range cands {
		home[i] = homeLoad(sum, home[i], blocks)
		d := in.homeDelta(running[i], home[i])
		if full && floor[i]+d > t {
			continue
		}
		k := slots[i] + 1
		// Summed in Pick's order (costs, then priceHomes), for the same roundings.
		s := in.cost(c, 0, p.owedFrom(c, backlog[k], p.speed[k], now))
		if c.NumGPUBlocks > 0 {
			s += in.kvAt(c, 0)
		}
		s += d
		if float64(loads[i]+1) > limit {
			s += overloaded
		}
		floor[i] = s
		st.Offer(int32(i), s)
		if full = st.Full(); full && st.Threshold() != tau {
			tau = st.Threshold()
			t = tau + math.Abs(tau)*0x1p-40
		}
	}
	return p.ranker.Ranked(st, cands)
}

// bound is, for candidates holding a given number of blocks, the largest
// running count whose cost bound stays within tau.
type bound struct {
	tau        float64 // the threshold it was computed for; < 0: not yet
	maxRunning int64
}

// bound computes the bound for candidates holding held blocks: lb(r) is
// cost with nothing queued ahead (ahead = 0) and r running, which no
// candidate's cost undercuts (every term of cost grows with ahead ≥ 0), and
// grows with r. A relative margin of 2^-40 absorbs rounding differences
// between the two expressions (a compiler may fuse multiply-adds).
func (in *inputs) bound(held int32, tau float64) bound {
	u := max(in.prompt-float64(held)*in.tokensPerBlock, 0)
	a, b := in.step+u*in.q0, in.c1+u*in.c2
	lb := func(r int64) float64 { return a + float64(r)*b }
	t := tau + math.Abs(tau)*0x1p-40
	const most = 1 << 40 // no engine runs more; candidates above are priced
	switch {
	case !(lb(0) <= t): // NaN too: price everyone
		if math.IsNaN(lb(0)) || math.IsNaN(t) {
			return bound{tau: tau, maxRunning: most}
		}
		return bound{tau: tau, maxRunning: -1}
	case !(b > 0):
		return bound{tau: tau, maxRunning: most}
	}
	r := int64(min((t-a)/b, most))
	for r < most && lb(r+1) <= t {
		r++
	}
	for r > 0 && lb(r) > t {
		r--
	}
	return bound{tau: tau, maxRunning: r}
}

// slots returns the index slot of each candidate, by position, cached
// while no slot is handed out or freed (the index's slot generation).
func (p *Policy) slots(cands []*policy.Instance) []int32 {
	p.posSlot = p.pos.Get(cands, p.idx.SlotGen(), func(c *policy.Instance) int32 { return p.idx.Slot(c.ID) })
	return p.posSlot
}

// costs writes each candidate's cost (see parts) and load, and returns the
// loads' total. It is the loop over every candidate of every pick, kept
// apart with few live values so that they stay in registers.
func (p *Policy) costs(cands []*policy.Instance, slots, match []int32, scores []float64, loads []int64, in *inputs, now int64) (total int64) {
	backlog := p.backlog
	slots, match, scores, loads = slots[:len(cands)], match[:len(cands)], scores[:len(cands)], loads[:len(cands)]
	for i, c := range cands {
		l := c.Load()
		loads[i] = l
		total += l
		k := slots[i] + 1
		scores[i] = in.cost(c, match[i], p.owedFrom(c, backlog[k], p.speed[k], now))
		if c.NumGPUBlocks > 0 {
			scores[i] += in.kvAt(c, match[i])
		}
	}
	return total
}

// priceHomes reprices a prefix nobody holds: the delay its prefill adds to
// the requests running where it goes is priced at the candidate's home
// load (homeLoads) instead of its running count of the moment. The
// instance it goes to becomes the prefix's home, and every later request
// under it follows, so the choice is one of the long run: priced at the
// running count of the moment, the instance that happened to run two
// fewer won even while another new prefix waited there for the same step
// (both first tokens waited for both prefills), and the homes of 64 system
// prompts came out 11 to 16 an instance where the load's even share is 13
// (shared-prefix, docs/policies.md). Everything else in the cost — its
// own wait, the KV it takes — stays at the moment's numbers.
func (p *Policy) priceHomes(cands []*policy.Instance, slots []int32, scores []float64, in *inputs) {
	home := p.homeLoads(cands, slots)
	if home == nil {
		return
	}
	for i, c := range cands {
		scores[i] += in.homeDelta(c.Running+c.InflightRequests, home[i])
	}
	p.home = home
}

// homeLoads is each candidate's home load: the candidates' running
// requests, shared out by each one's share of the blocks the index
// believes they hold — what an instance carries in the long run follows
// the prefixes it is home to. nil while the index holds nothing of them
// (every share is unknown, and the moment's count is all there is).
func (p *Policy) homeLoads(cands []*policy.Instance, slots []int32) []float64 {
	if cap(p.homeBuf) < len(cands) {
		p.homeBuf = make([]float64, len(cands))
	}
	home := p.homeBuf[:len(cands)]
	var running, blocks float64
	for i, c := range cands {
		running += float64(c.Running + c.InflightRequests)
		home[i] = float64(p.idx.HeldAt(slots[i]))
		blocks += home[i]
	}
	if !(blocks > 0) {
		return nil
	}
	for i, held := range home {
		home[i] = homeLoad(running, held, blocks)
	}
	return home
}

// homeLoad is the home load of a candidate holding held of the blocks the
// candidates hold, given their running requests; apart so that
// selectHomes' home loads are homeLoads' to the last bit.
func homeLoad(running, held, blocks float64) float64 { return running * held / blocks }

// owed is the prefill, in uncached tokens, that our picks brought c and c
// has not done yet. The engine's reports lag (and count a waiting request,
// not its size); the scheduler's InflightPromptTokens counts whole prompts,
// most of which a conversation's home already holds. So the policy keeps
// its own estimate: each pick adds its uncached tokens, and the backlog
// drains at the engine's prefill rate — a full chunk of max batched tokens
// per step of step + chunk × prefill + running × decode cost.
func (p *Policy) owed(c *policy.Instance, slot int32, now int64) float64 {
	q, speed := queued{}, 1.0
	if int(slot+1) < len(p.backlog) {
		q, speed = p.backlog[slot+1], p.speed[slot+1]
	}
	return p.owedFrom(c, q, speed, now)
}

// owedFrom is owed given c's backlog entry and speed; small enough to
// inline into Pick's loop, which reads them itself.
func (p *Policy) owedFrom(c *policy.Instance, q queued, speed float64, now int64) float64 {
	if !q.known {
		// Picks we did not make (before a restart of the policy): assume
		// the typical share of a prompt is uncached.
		return float64(c.InflightPromptTokens) * p.uncachedFr
	}
	if q.tokens <= 0 {
		return 0
	}
	return p.drained(c, q, speed, now)
}

// drained is what is left of backlog q at now; apart so that owedFrom stays
// small enough to inline.
//
// The backlog is the policy's own estimate, and a wrong one compounds: a
// pick whose uncached prefill it overestimates (the unhashed rest of a
// long prompt, a prefix the engine had already evicted or still held)
// adds tokens the engine never has to compute, the instance looks busier,
// and nothing ever takes them back but the drain. So a report newer than
// the backlog's last correction bounds it by what the engine says it holds:
// its waiting requests at the typical uncached prompt and one chunk in
// prefill, plus what our picks sent it since that correction (some of which
// the report already counts).
func (p *Policy) drained(c *policy.Instance, q queued, speed float64, now int64) float64 {
	left := max(q.tokens-float64(now-q.at)*1e-9*p.drainRate(c)*speed, 0)
	if r := c.LastReport.UnixNano(); r > q.rep && !c.LastReport.IsZero() {
		left = min(left, p.reported(c)+q.fresh)
	}
	return left
}

// reported is the prefill an instance's report says it has queued, at
// most: its waiting requests at the typical uncached prompt, and one chunk
// in prefill.
func (p *Policy) reported(c *policy.Instance) float64 {
	return float64(c.Waiting)*p.avgUncached + p.m.MaxBatchedTokens
}

// growSlots sizes the per-slot tables (held, backlog, speed), indexed by slot+1 so
// that an instance without a slot (-1) reads entry 0, to cover every slot
// the index has handed out.
func (p *Policy) growSlots() {
	if n := p.idx.SlotCount() + 1; len(p.heldBySlot) < n {
		p.heldBySlot = append(p.heldBySlot, make([]int32, n-len(p.heldBySlot))...)
		p.backlog = append(p.backlog, make([]queued, n-len(p.backlog))...)
		p.sampledAt = append(p.sampledAt, make([]int64, n-len(p.sampledAt))...)
		p.windows = append(p.windows, make([]window, n-len(p.windows))...)
		for len(p.speed) < n {
			p.speed = append(p.speed, 1)
		}
	}
}

// drainRate is c's prefill throughput while backlogged, in tokens per second.
func (p *Policy) drainRate(c *policy.Instance) float64 {
	return p.m.PrefillRate(float64(c.Running + c.InflightRequests))
}

// heldTail is the credit, in blocks, for what an instance holds beyond the
// blocks the index can see, when the blocks it holds end exactly where a
// prompt we sent it ended:
//
//   - the previous answer: the instance also holds the blocks of the answer
//     it generated (engines cache generated tokens), and a follow-up turn's
//     prompt continues with that answer. The gateway hashes prompts only,
//     so the index cannot know those blocks until the next pick inserts
//     them; without the credit a conversation's home looks about one
//     answer worse than it is.
//   - the unhashed rest of a long prompt: the gateway hashes only the first
//     max_prefix_chars of a prompt, so every turn of a conversation longer
//     than that ends its hashes at the same block. An instance holding all
//     of them, where the last prompt with this hashed start went, holds that
//     prompt and its answer. Without the credit the rest of the prompt
//     counted as uncached on every candidate — tens of thousands of tokens
//     a pick for 40k-character prompts — so the home looked no better than
//     a stranger, and the backlog the policy keeps for each instance grew
//     by the whole rest at every pick and ranked the homes last
//     (docs/policies.md, "What --explain found").
//   - the blocks the index was not taught: a pick teaches it at most
//     insertBudget new blocks of a prompt (see insert), and the instance
//     holds the rest of the prompt all the same. When the index holds
//     exactly the start of a prompt we sent the instance, the request is
//     credited as far as its hashes run along that prompt (tail.marks);
//     when they run through its last hashed block, the two cases above
//     apply from there.
func (p *Policy) heldTail(req *policy.Request, m int, slot int32, in *inputs) int {
	if m == 0 {
		return 0
	}
	hashes := req.BlockHashes
	h := hashes[m-1]
	k := req.Blocks(m) // the blocks the index matched
	t := p.tails[h&(tailSlots-1)]
	if v, u, ok := p.untaught(hashes, m, slot); ok {
		if v < int(u.blocks) {
			return req.Blocks(v) - k
		}
		t, m = u, v
	} else if t.hash != h {
		return 0
	}
	b := req.Blocks(m)
	if m < len(hashes) {
		if in.answerBlocks <= 0 || t.slot != slot {
			return b - k
		}
		return b - k + min(in.answerBlocks, in.hashed-b)
	}
	if in.promptBlocks <= b {
		return b - k
	}
	switch {
	case t.shared:
		// Many conversations share this hashed start: an instance holding
		// all of it holds, as far as anyone can tell, what they share — at
		// least the start, at most the shortest prompt seen with it, which
		// over many first turns is their system prompt.
		return b - k + max(min(int(float64(t.tokens)/in.tokensPerBlock), in.promptBlocks)-b, 0)
	case t.slot != slot || float64(t.tokens) >= in.prompt:
		return b - k
	}
	return b - k + max(min(int(float64(t.tokens)/in.tokensPerBlock)+in.answerBlocks, in.promptBlocks)-b, 0)
}

// untaught is how many leading blocks of hashes the instance in slot holds
// when the index matched its first m and was taught only the start of a
// prompt sent there (ok; u is that prompt's tail): as far as hashes run
// along that prompt, to within its marks (hashes are chained, so sharing a
// block means sharing every block before it).
func (p *Policy) untaught(hashes []uint64, m int, slot int32) (v int, u tail, ok bool) {
	h := hashes[m-1]
	u = *p.taughtTail(h, slot)
	if u.hash != h || u.slot != slot || int(u.blocks) <= m {
		return m, u, false
	}
	n := int(u.blocks)
	for j := tailMarks - 1; j >= 0; j-- {
		if q := markAt(j, m, n); q <= len(hashes) && uint32(hashes[q-1]) == u.marks[j] {
			return q, u, true
		}
	}
	return m, u, true
}

// inputs are the numbers the cost needs besides the candidate's: the
// request's, and the model's copied in so the per-candidate loop reads one
// small struct.
type inputs struct {
	prompt, out, tokensPerBlock float64
	invBatch                    float64 // 1 / max batched tokens
	decodeOut                   float64 // expected output × decode cost: the request's decode work per running neighbour
	promptBlocks                int     // full blocks of the whole prompt: more than hashed when the gateway hashed only its start
	hashed                      int     // the blocks its hashes cover (more than the hashes past a tiered prompt's head)
	answerBlocks                int     // full blocks of a typical answer (heldTail)

	avgUncached                     float64
	prefillToken, step, decodeToken float64
	weight                          float64
	q0, q1, c1, c2                  float64 // cost's constants

	maxKV     float64 // the KV fraction admission holds an instance back at
	spill     float64 // the scale of KV arrivals: a typical prompt, in tokens (kv)
	newPrefix bool    // no instance holds any of the request's blocks (kv)
}

func (p *Policy) inputs(req *policy.Request) inputs {
	tpb := p.size.TokensPerBlock(req.BlockChars)
	hashed := req.Blocks(len(req.BlockHashes))
	prompt := p.size.PromptTokens(req.PromptTokens, hashed, req.BlockChars)
	out := p.avgOut
	if req.MaxTokens > 0 {
		out = min(out, float64(req.MaxTokens))
	}
	invBatch := 1 / p.m.MaxBatchedTokens
	q1 := p.m.DecodeToken * invBatch
	return inputs{
		q0: p.m.PrefillToken + p.m.Step*invBatch,
		q1: q1,
		c1: p.m.DecodeToken + p.m.DecodeWeight*out*p.m.DecodeToken,
		c2: q1 + p.m.DecodeWeight*p.m.PrefillToken,

		prompt: prompt, out: out, tokensPerBlock: tpb, hashed: hashed,
		promptBlocks: int(prompt / tpb),
		invBatch:     invBatch,
		decodeOut:    out * p.m.DecodeToken,
		answerBlocks: int(p.avgOut / tpb),
		avgUncached:  p.avgUncached,
		prefillToken: p.m.PrefillToken,
		step:         p.m.Step,
		decodeToken:  p.m.DecodeToken,
		weight:       p.m.DecodeWeight,
		maxKV:        p.m.MaxKV,
		spill:        max(p.avgPrompt, 1),
	}
}

// uncached is the prompt tokens c must prefill given the blocks it holds.
func (in *inputs) uncached(held int) float64 {
	return max(in.prompt-float64(held)*in.tokensPerBlock, 0)
}

// parts predicts, in seconds, the request's time to first token on c, the
// delay it adds to the requests already running there and the price of the
// KV it takes (kv) (docs/policies.md); its cost is ttft + weight × batch + kv:
//
//	uncached = prompt tokens not held in c's cache
//	ahead    = prefill work queued before it: in-flight prompt tokens × uncached share + waiting × mean uncached prompt
//	steps    = 1 + (ahead + uncached) / max batched tokens
//	ttft     = (ahead + uncached) × prefill cost + steps × (step + decode cost × running)
//	batch    = home × uncached × prefill cost + running × expected output × decode cost
//	cost     = ttft + weight × batch + kv
//
// home is the running count the prefill's delay is priced at: running,
// but c's home load for a prefix nobody holds (priceHomes). Pick's loops
// price with cost, kvAt and homeDelta, which it equals
// (TestCostMatchesParts).
func (in *inputs) parts(c *policy.Instance, held int, owed, home float64) (ttft, batch, kv float64) {
	u := in.uncached(held)
	ahead := max(owed, float64(c.Waiting)*in.avgUncached)
	running := float64(c.Running + c.InflightRequests)
	steps := 1 + (ahead+u)*in.invBatch
	return (ahead+u)*in.prefillToken + steps*(in.step+in.decodeToken*running), home*u*in.prefillToken + running*in.decodeOut, in.kv(c, u, running)
}

// homeDelta is what pricing a new prefix's prefill delay at home load home
// instead of the candidate's running count (in-flight picks included) adds
// to its cost (priceHomes).
func (in *inputs) homeDelta(running int64, home float64) float64 {
	return in.weight * in.prefillToken * in.prompt * (home - float64(running))
}

// cost is parts' ttft + weight × batch regrouped into fewer operations on
// the candidate's numbers (ahead, uncached u, running) and constants of the
// request (see inputs.costConsts); this runs for every candidate of every
// pick, a thousand at a time, and the regrouping is a fifth of that loop.
//
//	cost = step + (ahead + u) × q0 + running × (c1 + ahead × q1 + u × c2)
//	q0   = prefill cost + step / max batched tokens
//	q1   = decode cost / max batched tokens
//	c1   = decode cost + weight × expected output × decode cost
//	c2   = q1 + weight × prefill cost
//
// TestCostMatchesParts holds the two forms equal. It is small enough for
// the compiler to inline into Pick's loops (keep it so: a call per
// candidate was a tenth of a pick).
func (in *inputs) cost(c *policy.Instance, held int32, owed float64) float64 {
	u := max(in.prompt-float64(held)*in.tokensPerBlock, 0)
	ahead := max(owed, float64(c.Waiting)*in.avgUncached)
	return in.costOf(ahead, u, float64(c.Running+c.InflightRequests))
}

// costOf is cost given ahead, u and running; apart so that selectHomes'
// floor is the very expression cost is.
func (in *inputs) costOf(ahead, u, running float64) float64 {
	return in.step + (ahead+u)*in.q0 + running*(in.c1+ahead*in.q1+u*in.c2)
}

// kvAt is kv for c holding held blocks; Pick's loops add it to cost when c
// reports its capacity (most fleets do), apart so that cost stays small
// enough to inline.
func (in *inputs) kvAt(c *policy.Instance, held int32) float64 {
	u := max(in.prompt-float64(held)*in.tokensPerBlock, 0)
	return in.kv(c, u, float64(c.Running+c.InflightRequests))
}

// maxScarcity bounds kv's scarcity factor ρ/(1−ρ): from ρ = 20/21 on, a
// new prefix's KV is priced 20 times over.
const maxScarcity = 20

// kv is the cost, in seconds, of the KV cache the request takes on c
// (docs/policies.md, "KV pressure"): 0 when c's capacity is unknown.
//
//	used  = c's reported KV usage + its unreported picks' prompts at its miss rate + waiting × mean uncached prompt
//	need  = uncached + expected output: the KV the request takes there
//	room  = max KV usage × capacity − used
//	a prefix nobody holds:  k = ρ/(1−ρ) × need, ρ = (used + need) / (max KV usage × capacity)
//	otherwise:              k = spill(room − need) − spill(room), spill(h) = μ·e^(−h/μ) (μ − h below 0), μ = mean prompt
//	kv    = k × prefill cost × (1 + weight × running)
//
// KV beyond the threshold is recomputed prefill: admission holds the
// instance back and its residents' next turns go where their history is
// not (each recomputing it, and filling that instance in turn), or the
// engine preempts and recomputes a running request. A prefix nobody holds
// gets its home here, and its conversations' histories will fill this KV
// for as long as it lives: with system prompts 50 times apart in size (one
// of 77k tokens, 40 % of a cache), two large ones on one home filled it and
// collapsed a fleet whose peers never reached the threshold
// (lognormal-kvfull, seed 1). So its KV is priced by how scarce KV is there,
// as a queue's wait grows with ρ/(1−ρ). Any other pick is priced by the KV
// it pushes past the threshold, with what arrives after it of random size
// around the mean prompt (the expected overflow of an exponential
// headroom): nothing while the room is many prompts, its whole need once
// there is none.
func (in *inputs) kv(c *policy.Instance, u, running float64) float64 {
	n := float64(c.NumGPUBlocks * c.BlockSize)
	if !(n > 0) {
		return 0
	}
	limit := in.maxKV * n
	// Unreported picks' prompts at the engine's miss rate, as admission charges them.
	used := c.KVCacheUsage*n + float64(c.InflightPromptTokens)*c.UncachedShare() + float64(c.Waiting)*in.avgUncached
	need := u + in.out
	var k float64
	if in.newPrefix {
		f := float64(maxScarcity)
		if rho := (used + need) / limit; rho < maxScarcity/(maxScarcity+1.0) {
			f = rho / (1 - rho)
		}
		k = f * need
	} else {
		room := limit - used
		if room-need > 30*in.spill { // e^-30: nothing to price
			return 0
		}
		k = in.overflow(room-need) - in.overflow(room)
	}
	return k * in.prefillToken * (1 + in.weight*running)
}

// overflow is the expected KV beyond the threshold of arrivals of
// exponential size with mean spill, given room tokens of room (kv).
func (in *inputs) overflow(room float64) float64 {
	if room < 0 {
		return in.spill - room
	}
	return in.spill * math.Exp(-room/in.spill)
}

// Picked teaches the index that the chosen instance (and a pd-split prefill
// instance) now holds the request's blocks, and learns how much of a prompt
// its picks typically had to prefill.
func (p *Policy) Picked(req *policy.Request, d policy.Decision) {
	if len(d.Ranked) > 0 {
		held := p.held(req, d.Ranked[0])
		if n := req.Blocks(len(req.BlockHashes)); n > 0 {
			h := min(held, n)
			p.hitBlocks.Add(float64(h))
			p.missBlocks.Add(float64(n - h))
		}
		slot := p.insert(req, d.Ranked[0])
		p.growSlots()
		p.learn(req, d.Ranked[0], held, slot)
		p.calibrate(d.Ranked[0], slot)
		p.measure(d.Ranked[0], slot)
	}
	if d.Prefill != nil {
		p.insert(req, d.Prefill)
	}
	p.lastReq = nil
}

// held is the blocks c held of req before the pick: from the last Pick
// when req was its request, else looked up.
func (p *Policy) held(req *policy.Request, c *policy.Instance) int {
	held := -1
	if req == p.lastReq {
		if !p.lastHit {
			held = 0
		}
		if i := p.pos.Index(c); held < 0 && i >= 0 && i < p.lastN {
			held = int(p.match[i])
		}
	}
	if held < 0 { // not a candidate of the last Pick: look it up
		held = 0
		if p.idx.MatchChain(req.BlockHashes) > 0 {
			s := p.idx.Slot(c.ID)
			if m := p.idx.Matched(s); m > 0 {
				in := p.inputs(req)
				held = req.Blocks(m) + p.heldTail(req, m, s, &in)
			}
		}
	}
	return held
}

// learn records the uncached prompt of a committed pick on c (index slot
// s): the prefill it owes its instance until the next report, and the
// running means.
func (p *Policy) learn(req *policy.Request, c *policy.Instance, held int, s int32) {
	in := p.inputs(req)
	if in.prompt <= 0 {
		return
	}
	u := in.uncached(held)
	if s >= 0 {
		now := p.clock.Now().UnixNano()
		// The first record starts from this pick alone: the fallback
		// owed would read InflightPromptTokens, which the scheduler has
		// already raised by this very request.
		var prev, fresh float64
		q := p.backlog[s+1]
		if q.known {
			prev, fresh = p.owedFrom(c, q, p.speed[s+1], now), q.fresh
		}
		rep := q.rep
		if r := c.LastReport.UnixNano(); r > rep && !c.LastReport.IsZero() {
			rep, fresh = r, 0 // prev is already held to this report
		}
		p.backlog[s+1] = queued{at: now, tokens: prev + u, known: true, rep: rep, fresh: fresh + u}
		w := &p.windows[s+1]
		w.pred += max(in.prompt-u, 0)
		w.sent += in.prompt
	}
	p.avgPrompt += ewma * (in.prompt - p.avgPrompt)
	p.avgUncached += ewma * (u - p.avgUncached)
	p.uncachedFr += ewma * (u/in.prompt - p.uncachedFr)
}

// Speed calibration (see calibrate).
const (
	calibrateMinRunning = 4      // below, the engine may idle within a report interval
	speedEWMA           = 0.1    // weight of one report: about 2 s of reports at 200 ms
	minSpeed, maxSpeed  = 0.2, 5 // a sample outside is clamped: a bad report moves little
)

// calibrate measures c's speed against the cost model from its latest
// report: an engine with requests running steps without pause, so the
// work the model says its reported throughput takes —
//
//	generated / running × (step + decode cost × running) + uncached prompt tokens × prefill cost
//
// seconds of model time per second — is its speed (1: as the model says;
// 0.5: a GPU half as fast). Uncached prompt tokens are the reported prompt
// throughput times the engine's prefix-cache miss ratio (ours when it does
// not report one). It samples the instance chosen by each pick, once per
// report.
//
// The speed sets how fast the prefill this policy sent an instance drains
// (owed): that estimate is the policy's own and sees nothing of the
// engine. The costs themselves are not scaled by it: the engine's running
// and waiting counts already show a slow instance's longer queues, and on a
// fleet of three full-speed and two half-speed engines dividing costs by
// speed as well doubled mean TTFT (75.8 against 38.0 ms) by moving
// conversations off their homes (83 % of follow-ups at home against 99 %).
func (p *Policy) calibrate(c *policy.Instance, s int32) {
	if !p.calibrated || s < 0 || c.Running < calibrateMinRunning || !(c.GenTPS > 0) {
		return
	}
	at := c.LastReport.UnixNano()
	if at == p.sampledAt[s+1] {
		return
	}
	p.sampledAt[s+1] = at
	hit := c.PrefixCacheHitRatio
	if !(hit >= 0 && hit <= 1) {
		hit = 1 - p.uncachedFr
	}
	work := p.m.Work(float64(c.Running), c.GenTPS, c.PromptTPS, 1-hit)
	if !(work > 0) || math.IsInf(work, 0) {
		return
	}
	v := p.speed[s+1]
	p.speed[s+1] = v + speedEWMA*(min(max(work, minSpeed), maxSpeed)-v)
}

// heldBeyondLRU scales an instance's KV capacity into the index's: the
// index ages a prompt's blocks from its pick, the engine from its
// release, and never evicts a block a running request holds. Under KV
// pressure an index of exactly the KV capacity forgot conversations their
// home still held (--explain: cached tokens predicted 2,400 too few at
// p1, the turn moved and recomputed its history); at 1.5× that p1 is
// -448, and the issue-7 run's p99 TTFT falls from 103 to 86 ms
// (docs/policies.md, "What --explain found").
const heldBeyondLRU = 1.5

// window is one interval of measure's comparison for an instance.
type window struct {
	rep        int64   // the report (UnixNano) it began at
	q, h       float64 // the engine's cumulative prompt tokens and prefix hits then
	pred, sent float64 // our picks' predicted cached tokens and prompt tokens since
	started    bool
}

// minWindowTokens is the fewest prompt tokens, sent and reported, an
// interval of measure needs: a handful of requests says little.
const minWindowTokens = 16384

// measure compares, for c (index slot s), what the index predicted of the
// prompts our picks sent it with what its engine reports it served from
// its prefix cache, over the interval since the last comparison, and
// exports the difference of the two hit ratios
// (llmrouter_prefix_prediction_error). The agent reports the engine's
// cumulative prompt tokens and hit ratio, so its hits are their product
// and an interval's hit ratio the ratio of the differences; a fall of the
// prompt count (the engine restarted) begins a new interval. Like
// calibrate it samples the instance each pick chooses, once per report.
// The engine's count includes prompts other schedulers sent it, and lags
// ours by the time to first token; over an interval of 16k tokens or more
// that is noise, while an engine that lost its cache behind the router's
// back shows at once as the index's predicted hits it no longer finds.
func (p *Policy) measure(c *policy.Instance, s int32) {
	if s < 0 || c.LastReport.IsZero() {
		return
	}
	w := &p.windows[s+1]
	at := c.LastReport.UnixNano()
	ratio, q := c.PrefixCacheHitRatio, c.PromptTokensTotal
	if at == w.rep || !(ratio >= 0 && ratio <= 1) || !(q > 0) {
		return
	}
	h := ratio * q
	dq := q - w.q
	if !w.started || dq < 0 {
		*w = window{rep: at, q: q, h: h, started: true}
		return
	}
	w.rep = at
	if dq < minWindowTokens || w.sent < minWindowTokens {
		return
	}
	measured := min(max((h-w.h)/dq, 0), 1)
	p.predErr.WithLabelValues(c.ID).Set(w.pred/w.sent - measured)
	*w = window{rep: at, q: q, h: h, started: true}
}

// ewma is the weight of one observation in the policy's running means.
const ewma = 0.05

// insertBudget bounds the blocks one pick teaches the index that the
// chosen instance did not hold (prefixindex.InsertBounded): each costs
// about 0.4-0.6 µs under the scheduler's lock. 1,024 is the default hashed
// window's (64 KiB of 64-character blocks), so at the default nothing
// changes, and a larger max_prefix_chars (a 256 KiB window is 4,096
// blocks) cannot make a pick teach the index more than the default's worst
// case. A prompt longer than the budget gets the rest of its blocks in
// over its next picks, and meanwhile its tail credits them (heldTail).
// With 128, a 256 KiB window kept the log-normal suite classes' gains but
// not make bench's overhead run (docs/policies.md, "The hashed window,
// looked at again").
const insertBudget = 1024

// insert teaches the index that c now holds req's blocks — their first
// insertBudget new ones, the rest left to heldTail — and returns c's index
// slot (-1: it has none).
func (p *Policy) insert(req *policy.Request, c *policy.Instance) int32 {
	hs := req.BlockHashes
	if len(hs) == 0 {
		return p.idx.Slot(c.ID)
	}
	capacity := p.size.Capacity(c.NumGPUBlocks, c.BlockSize, req.BlockChars)
	was, k := p.idx.InsertBounded(c.ID, int(min(float64(capacity)*heldBeyondLRU, 1<<30)), hs, insertBudget)
	promptF := p.size.PromptTokens(req.PromptTokens, req.Blocks(len(hs)), req.BlockChars)
	s := p.idx.Slot(c.ID)
	if k == 0 {
		return s
	}
	end, n := uint32(hs[len(hs)-1]), int32(len(hs))
	prompt := int32(min(promptF, math.MaxInt32))
	// The entry for this prompt on c is where the index's part of it ended
	// before this pick (at was), or where it ends now (at k). A taught
	// tail at was of a prompt this one continues (an earlier turn, or this
	// prompt again) is superseded by the one written here: it goes, so
	// that c forgetting the newer blocks does not bring back a credit for
	// that prompt's whole rest. One of another prompt through the same
	// start stays: c still holds that prompt, and its next turn will
	// match exactly was blocks there again.
	prev := tail{slot: -1}
	if was > 0 && was < k {
		w := hs[was-1]
		if pt := p.taughtTail(w, s); pt.hash == w && pt.slot == s && int(pt.blocks) > was && int(pt.blocks) <= len(hs) &&
			uint32(hs[pt.blocks-1]) == pt.marks[tailMarks-1] {
			if pt.blocks == n {
				prev = *pt
			}
			*pt = tail{slot: -1}
		}
	}
	last := hs[k-1]
	t := &p.tails[last&(tailSlots-1)]
	if k < len(hs) {
		t = p.taughtTail(last, s)
	}
	if t.hash == last && t.slot >= 0 && t.blocks == n && t.marks[tailMarks-1] == end {
		prev = *t
	}
	shared := prev.slot >= 0 && (prev.shared || prev.slot != s || prev.tokens >= prompt)
	if shared {
		prompt = min(prompt, prev.tokens) // the shortest prompt with this start (see heldTail)
	}
	*t = tail{hash: last, slot: s, tokens: prompt, blocks: n, shared: shared}
	for j := range t.marks {
		t.marks[j] = uint32(hs[markAt(j, k, int(n))-1])
	}
	return s
}

// Completed learns the typical output length.
func (p *Policy) Completed(_ string, _ string, _, completionTokens int64) {
	if completionTokens > 0 {
		p.avgOut += ewma * (float64(completionTokens) - p.avgOut)
	}
}

// Removed forgets an instance: its blocks and the prompt ends it held, so a
// newcomer reusing its index slot inherits nothing.
func (p *Policy) Removed(id string) {
	if s := p.idx.Slot(id); s >= 0 {
		if int(s)+1 < len(p.backlog) {
			p.backlog[s+1] = queued{}
			p.windows[s+1] = window{}
			p.sampledAt[s+1] = 0
			p.speed[s+1] = 1 // a newcomer in the slot is measured afresh
		}
		for i := range p.tails {
			if p.tails[i].slot == s {
				p.tails[i] = tail{slot: -1}
			}
		}
	}
	p.idx.Remove(id)
	p.predErr.DeleteLabelValues(id)
}

// explain is the debug line's fields: each candidate's predicted cost and
// its parts, best first, up to debugCandidates of them.
func (p *Policy) explain(req *policy.Request, cands, ranked []*policy.Instance, scores []float64, in inputs, now int64) []zap.Field {
	pos := make(map[*policy.Instance]int, len(cands))
	for i, c := range cands {
		pos[c] = i
	}
	n := min(len(ranked), debugCandidates)
	list := zapcore.ArrayMarshalerFunc(func(a zapcore.ArrayEncoder) error {
		for _, c := range ranked[:n] {
			i := pos[c]
			_ = a.AppendObject(zapcore.ObjectMarshalerFunc(func(o zapcore.ObjectEncoder) error {
				held := int(p.match[i])
				owed := p.owed(c, p.posSlot[i], now)
				home := float64(c.Running + c.InflightRequests)
				if p.home != nil {
					home = p.home[i]
				}
				ttft, batch, kv := in.parts(c, held, owed, home)
				o.AddString("id", c.ID)
				o.AddFloat64("cost_ms", scores[i]*1e3)
				o.AddFloat64("ttft_ms", ttft*1e3)
				o.AddFloat64("batch_ms", batch*1e3)
				o.AddFloat64("kv_ms", kv*1e3)
				o.AddInt("held_blocks", held)
				o.AddFloat64("uncached_tokens", in.uncached(held))
				o.AddFloat64("backlog_tokens", owed)
				o.AddFloat64("ahead_tokens", max(owed, float64(c.Waiting)*in.avgUncached))
				if k := int(p.posSlot[i]) + 1; k < len(p.speed) {
					o.AddFloat64("speed", p.speed[k]) // how fast its backlog drains
				}
				o.AddInt64("load", c.Load())
				o.AddBool("over_load_cap", scores[i] >= overloaded)
				return nil
			}))
		}
		return nil
	})
	return []zap.Field{
		zap.String("request_id", req.ID),
		zap.String("pick", ranked[0].ID),
		zap.Int("blocks", len(req.BlockHashes)),
		zap.Int("candidates", len(cands)),
		zap.Array("costs", list),
	}
}

var _ policy.Observer = (*Policy)(nil)

// Hold asks the scheduler to keep req queued (policy.Holder) while an
// instance held back as saturated holds more of its prompt than any
// candidate, by more prefill than req has waited so far. Under KV pressure
// the home of a long prompt is the first to saturate; its conversations'
// next turns then went to strangers, each computing the whole prompt and
// holding it in its KV, which saturated those in turn — the collapse of
// lognormal-kvfull (docs/policies.md, "The hashed window, looked at
// again"). Bounding the hold by the prefill it saves keeps a prefix from
// waiting longer than computing it would take; the deadline and a full
// queue bound it too (the scheduler's). A prefix that saves less than an
// agent's report interval is not held at all: saturation changes with the
// home's reports, so a shorter hold could not see it end, and an ordinary
// conversation spills off its saturated home at once, as every policy's
// does (TestConformancePrefixHomeSaturated).
func (p *Policy) Hold(req *policy.Request, cands []*policy.Instance, waited time.Duration) bool {
	perBlock := p.size.TokensPerBlock(req.BlockChars) * p.m.PrefillToken
	// Most prompts are too short for any difference to reach minHold: they
	// cost the pick path no index lookup.
	if float64(req.Blocks(len(req.BlockHashes)))*perBlock < p.minHold || p.idx.MatchChain(req.BlockHashes) == 0 {
		return false
	}
	home, best := 0, 0 // the most blocks a saturated instance, an unsaturated one holds
	for _, c := range cands {
		s := p.idx.Slot(c.ID)
		if s < 0 {
			continue
		}
		m := p.idx.Matched(s)
		if m > 0 {
			// The index holds at most insertBudget new blocks of a long
			// prompt's last pick; what the instance holds past them counts.
			m, _, _ = p.untaught(req.BlockHashes, m, s)
			m = req.Blocks(m)
		}
		if c.Saturated {
			home = max(home, m)
		} else {
			best = max(best, m)
		}
	}
	saved := float64(home-best) * perBlock
	return saved >= p.minHold && saved > waited.Seconds()
}

var _ policy.Holder = (*Policy)(nil)
