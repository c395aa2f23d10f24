package prefixcache

import (
	"math/rand/v2"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/policy"
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
	policy.Register(Name, func(d policy.Deps) (policy.Policy, error) { return New(d) })
}

// Model is the cost model, in seconds (docs/policies.md).
type Model struct {
	Step, PrefillToken, DecodeToken float64
	MaxBatchedTokens                float64
	DecodeWeight                    float64
	MaxLoadRatio                    float64
}

// Policy is prefix-cache. It keeps its prefix index and estimates; the
// scheduler calls it serially.
type Policy struct {
	m             Model
	rand          *rand.Rand
	log           *zap.Logger
	idx           *prefixindex.Index
	charsPerToken float64
	blockChars    int
	defBlocks     int
	keep          int // candidates ranked exactly

	avgPrompt float64 // EWMA of prompt tokens: the size of a waiting request
	avgOut    float64 // EWMA of completion tokens

	// Per-pick scratch, indexed like the candidates.
	pos    []slotRef
	scores []float64
	loads  []int64
	match  []int32
	ranker rank.Ranker
}

type slotRef struct {
	ptr  *policy.Instance
	id   string
	gen  uint64
	slot int32
}

// New builds the policy from d.Config.
func New(d policy.Deps) (*Policy, error) {
	c := d.Config
	pc := c.Scheduler.Policies
	if pc.MaxBatchedTokens == 0 { // a zero Config (tests): take the defaults
		pc = config.DefaultPolicies()
	}
	cpt := c.Gateway.CharsPerToken
	if cpt <= 0 {
		cpt = 4
	}
	bc := c.Gateway.BlockChars
	if bc <= 0 {
		bc = 64
	}
	p := &Policy{
		m: Model{
			Step:             pc.StepTime.Seconds(),
			PrefillToken:     pc.PrefillTokenTime.Seconds(),
			DecodeToken:      pc.DecodeTokenTime.Seconds(),
			MaxBatchedTokens: float64(pc.MaxBatchedTokens),
			DecodeWeight:     pc.DecodeWeight,
			MaxLoadRatio:     pc.MaxLoadRatio,
		},
		rand:          d.Rand,
		log:           d.Log,
		idx:           prefixindex.New(pc.PrefixIndexMaxBlocks),
		charsPerToken: cpt,
		blockChars:    bc,
		defBlocks:     pc.PrefixIndexDefaultBlocks,
		keep:          max(c.Gateway.RetryCount+3, 4),
		avgPrompt:     512,
		avgOut:        float64(pc.DefaultOutputTokens),
	}
	if p.rand == nil {
		p.rand = rand.New(rand.NewPCG(1, 2))
	}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	if err := prefixindex.Register(d.Metrics, p.idx); err != nil {
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
	if req.PromptTokens > 0 {
		p.avgPrompt += 0.05 * (float64(req.PromptTokens) - p.avgPrompt)
	}
	if cap(p.scores) < n {
		p.scores = make([]float64, n)
		p.loads = make([]int64, n)
		p.match = make([]int32, n)
	}
	scores, loads, match := p.scores[:n], p.loads[:n], p.match[:n]
	p.match = match
	hit := p.idx.Match(req.BlockHashes) > 0
	if hit && len(p.pos) != n {
		p.pos = make([]slotRef, n)
	}
	gen := p.idx.SlotGen()
	in := p.inputs(req)
	var total float64
	for i, c := range cands {
		m := 0
		if hit {
			// The scheduler passes its candidates in a stable order, so a
			// cache by position avoids a map lookup per candidate; an
			// entry is trusted only for the same instance pointer and ID
			// and while no slot changed.
			e := &p.pos[i]
			if e.ptr != c || e.gen != gen || e.id != c.ID {
				*e = slotRef{ptr: c, id: c.ID, gen: gen, slot: p.idx.Slot(c.ID)}
			}
			m = p.idx.Matched(e.slot)
		}
		match[i] = int32(m)
		l := c.Load()
		loads[i] = l
		total += float64(l)
		scores[i] = in.cost(c, m)
	}
	limit := p.m.MaxLoadRatio * max((total+1)/float64(n), 1)
	if p.m.MaxLoadRatio > 0 {
		for i, l := range loads {
			if float64(l+1) > limit {
				scores[i] += overloaded
			}
		}
	}
	ranked := p.ranker.Top(p.rand, cands, scores, p.keep)
	if ce := p.log.Check(zap.DebugLevel, "prefix-cache decision"); ce != nil {
		ce.Write(p.explain(req, cands, ranked, scores)...)
	}
	return policy.Decision{Ranked: ranked}
}

// inputs are the numbers the cost needs besides the candidate's: the
// request's, and the model's copied in so the per-candidate loop reads one
// small struct.
type inputs struct {
	prompt, out, tokensPerBlock float64
	invBatch                    float64 // 1 / max batched tokens
	decodePerRunning            float64 // decode weight × output × decode cost
	blocks                      int

	avgPrompt                       float64
	prefillToken, step, decodeToken float64
	backlogMin, backlogMax          float64 // bounds of the measured prefill cost per token
}

func (p *Policy) inputs(req *policy.Request) inputs {
	bc := req.BlockChars
	if bc <= 0 {
		bc = p.blockChars
	}
	tpb := float64(bc) / p.charsPerToken
	prompt := float64(req.PromptTokens)
	if prompt <= 0 {
		prompt = float64(len(req.BlockHashes)) * tpb
	}
	out := p.avgOut
	if req.MaxTokens > 0 {
		out = min(out, float64(req.MaxTokens))
	}
	return inputs{
		prompt: prompt, out: out, tokensPerBlock: tpb, blocks: len(req.BlockHashes),
		invBatch:         1 / p.m.MaxBatchedTokens,
		decodePerRunning: p.m.DecodeWeight * out * p.m.DecodeToken,
		avgPrompt:        p.avgPrompt,
		prefillToken:     p.m.PrefillToken,
		step:             p.m.Step,
		decodeToken:      p.m.DecodeToken,
		backlogMin:       p.m.PrefillToken / 4,
		backlogMax:       8 * p.m.PrefillToken,
	}
}

// cost predicts, in seconds, the request's time to first token on c plus
// the decode slow-down of sharing c's batch (docs/policies.md):
//
//	queue   = pending prefill tokens × prefill cost per token (measured when backlogged)
//	prefill = uncached prompt tokens × prefill cost per token
//	steps   = 1 + (pending + uncached) / max batched tokens
//	ttft    = queue + prefill + steps × (step + decode per seq × running)
//	cost    = ttft + decode weight × expected output × decode per seq × running
func (in *inputs) cost(c *policy.Instance, matched int) float64 {
	uncached := max(in.prompt-float64(matched)*in.tokensPerBlock, 0)
	pending := float64(c.InflightPromptTokens) + float64(c.Waiting)*in.avgPrompt
	bq := in.prefillToken
	if c.Waiting > 0 && c.PromptTPS > 0 {
		// Backlogged: the queue drains at the rate the engine measured.
		bq = min(max(1/c.PromptTPS, in.backlogMin), in.backlogMax)
	}
	running := float64(c.Running + c.InflightRequests)
	steps := 1 + (pending+uncached)*in.invBatch
	return pending*bq + uncached*in.prefillToken + steps*(in.step+in.decodeToken*running) + in.decodePerRunning*running
}

// Picked teaches the index that the chosen instance (and a pd-split prefill
// instance) now holds the request's blocks.
func (p *Policy) Picked(req *policy.Request, d policy.Decision) {
	if len(d.Ranked) > 0 {
		p.insert(req, d.Ranked[0])
	}
	if d.Prefill != nil {
		p.insert(req, d.Prefill)
	}
}

func (p *Policy) insert(req *policy.Request, c *policy.Instance) {
	if len(req.BlockHashes) == 0 {
		return
	}
	bc := req.BlockChars
	if bc <= 0 {
		bc = p.blockChars
	}
	capacity := prefixindex.CapacityBlocks(c.NumGPUBlocks, c.BlockSize, p.charsPerToken, bc, p.defBlocks)
	p.idx.Insert(c.ID, capacity, req.BlockHashes)
}

// Completed learns the typical output length.
func (p *Policy) Completed(_ string, _ string, _, completionTokens int64) {
	if completionTokens > 0 {
		p.avgOut += 0.05 * (float64(completionTokens) - p.avgOut)
	}
}

// Removed forgets an instance.
func (p *Policy) Removed(id string) {
	p.idx.Remove(id)
}

// explain is the debug line's fields: each candidate's predicted cost, best
// first, up to debugCandidates of them.
func (p *Policy) explain(req *policy.Request, cands, ranked []*policy.Instance, scores []float64) []zap.Field {
	pos := make(map[*policy.Instance]int, len(cands))
	for i, c := range cands {
		pos[c] = i
	}
	n := min(len(ranked), debugCandidates)
	list := zapcore.ArrayMarshalerFunc(func(a zapcore.ArrayEncoder) error {
		for _, c := range ranked[:n] {
			i := pos[c]
			_ = a.AppendObject(zapcore.ObjectMarshalerFunc(func(o zapcore.ObjectEncoder) error {
				o.AddString("id", c.ID)
				o.AddFloat64("cost_ms", scores[i]*1e3)
				o.AddInt32("matched_blocks", p.match[i])
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
