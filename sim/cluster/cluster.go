package cluster

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/prompthash"
	"github.com/llmrouter/llmrouter/scheduler"
	"github.com/llmrouter/llmrouter/sim/engine"
	"github.com/llmrouter/llmrouter/sim/workload"
)

// DefaultModel is the model of requests whose workload names none.
const DefaultModel = "sim-model"

// Options configure one simulated cluster.
type Options struct {
	// Instances is the number of engine instances (1 or more).
	Instances int
	// Engine is every instance's model (engine.ProfileConfig).
	Engine engine.Config
	// Speeds, when set, holds one speed per instance, in instance order: the
	// instance runs Engine.WithSpeed(speed), every time cost divided by it
	// (0.5 is half as fast), with the same KV capacity, as a fleet that
	// mixes GPU generations does. Empty means every instance at speed 1.
	Speeds []float64
	// Config holds the gateway and scheduler settings (block_chars,
	// max_prefix_chars, queue, saturation, cost model); the policy is
	// chosen per run.
	Config config.Config
	// Plan is the workload and its pacing; its DefaultModel defaults to
	// DefaultModel.
	Plan workload.Plan
	// Seed drives the scheduler's tie-breaking.
	Seed uint64
	// ReportInterval is the agents' report period (default
	// Config.Agent.ReportInterval, 200 ms).
	ReportInterval time.Duration
	// TickInterval is how often the scheduler's Tick runs (default 50 ms).
	TickInterval time.Duration
	// MaxVirtual aborts a run that simulates longer than this (default:
	// 4 × the plan's duration + 1 h, or 24 h without a duration).
	MaxVirtual time.Duration
	// Progress, when set, is called now and then with the fraction of the
	// plan's duration simulated so far (or of its requests sent).
	Progress func(frac float64)
	// Log receives the scheduler's logs; nil discards them.
	Log *zap.Logger
	// OnReport, when set, sees every agent report just before the scheduler
	// does, with the index of its instance (tests, tracing). It must not
	// keep or change rep.
	OnReport func(instance int, rep *llmrouterv1.Report)
	// Roles, when set, holds one role per instance (both, prefill or
	// decode), registered as its agent would; empty means all both. A pick
	// that names a prefill instance runs the vLLM disaggregated exchange
	// (pd.go).
	Roles []string
	// KVTransferPerBlock is what moving one prompt KV block from a prefill
	// instance to a decode instance costs.
	KVTransferPerBlock time.Duration
	// Metrics, when set, receives the scheduler's and the policies'
	// metrics (tests read them).
	Metrics prometheus.Registerer
	// FlushAt, when positive, empties instance FlushInstance's prefix cache
	// at that time behind the scheduler's back (vLLM's
	// /reset_prefix_cache), as an operator or a restart of the engine's
	// cache would.
	FlushAt       time.Duration
	FlushInstance int
	// Explain, when positive, records per pick what the policy predicted
	// against what the engines did, keeps the Explain worst decisions, and
	// returns it all in Result.Explain (explain.go).
	Explain int
	// ExplainCSV, when set, receives one CSV row per pick (ExplainCSVHeader's
	// columns; with or without Explain), for analysis the summary does not
	// do: the diagnosis of shared-prefix in docs/policies.md was done so.
	ExplainCSV io.Writer
	// RestartAt, when positive, replaces the scheduler with a fresh one at
	// that time, the agents re-registering over RestartGap (default
	// 1.5 s); Window, the length of Result.Series' windows (default 5 s with
	// a restart). restart.go.
	RestartAt, RestartGap, Window time.Duration
}

func (o *Options) defaults() error {
	if o.Instances < 1 {
		return fmt.Errorf("instances = %d: want 1 or more", o.Instances)
	}
	if o.Instances > 1<<16 {
		return fmt.Errorf("instances = %d: want at most %d", o.Instances, 1<<16)
	}
	if err := o.Engine.Validate(); err != nil {
		return err
	}
	if len(o.Speeds) > 0 && len(o.Speeds) != o.Instances {
		return fmt.Errorf("speeds: %d values for %d instances: want one per instance, or none (all at speed 1)", len(o.Speeds), o.Instances)
	}
	for i, sp := range o.Speeds {
		if _, err := o.Engine.WithSpeed(sp); err != nil {
			return fmt.Errorf("speeds[%d]: %w", i, err)
		}
	}
	if err := o.checkRoles(); err != nil {
		return err
	}
	if o.FlushAt > 0 && (o.FlushInstance < 0 || o.FlushInstance >= o.Instances) {
		return fmt.Errorf("flush instance %d: want 0 to %d (one of the %d instances)", o.FlushInstance, o.Instances-1, o.Instances)
	}
	if err := o.checkRestart(); err != nil {
		return err
	}
	if o.Plan.DefaultModel == "" {
		o.Plan.DefaultModel = DefaultModel
	}
	if o.ReportInterval <= 0 {
		o.ReportInterval = o.Config.Agent.ReportInterval
		if o.ReportInterval <= 0 {
			o.ReportInterval = 200 * time.Millisecond
		}
	}
	if o.TickInterval <= 0 {
		o.TickInterval = 50 * time.Millisecond
	}
	if o.MaxVirtual <= 0 {
		o.MaxVirtual = 24 * time.Hour
		if o.Plan.Duration > 0 {
			o.MaxVirtual = 4*o.Plan.Duration + time.Hour
		}
	}
	g := &o.Config.Gateway
	if g.BlockChars < 1 || g.MaxPrefixChars < g.BlockChars || !(g.CharsPerToken > 0) {
		return fmt.Errorf("llm_gateway: block_chars %d, max_prefix_chars %d, chars_per_token %g: want block_chars >= 1, max_prefix_chars >= block_chars, chars_per_token > 0 (start from config.Default())",
			g.BlockChars, g.MaxPrefixChars, g.CharsPerToken)
	}
	return nil
}

// virtualClock is the scheduler's clock: a fixed epoch plus virtual time.
type virtualClock struct {
	epoch time.Time
	now   time.Duration
}

func (c *virtualClock) Now() time.Time { return c.epoch.Add(c.now) }

// instance is one simulated engine and its agent.
type instance struct {
	idx      int
	addr     string
	eng      *engine.Engine
	heapIdx  int
	at       time.Duration // next step, or never
	requests int
	// agent report state
	last   engine.Stats
	lastAt time.Duration
	seq    uint64
}

const never = time.Duration(math.MaxInt64)

type instanceHeap []*instance

func (h instanceHeap) Len() int { return len(h) }
func (h instanceHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].idx < h[j].idx
}
func (h instanceHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *instanceHeap) Push(x any) {
	in := x.(*instance)
	in.heapIdx = len(*h)
	*h = append(*h, in)
}
func (h *instanceHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// flight is one request between its arrival and its completion.
type flight struct {
	req      *workload.Request
	id       string
	engID    uint64
	inst     *instance
	prompt   int
	reply    string
	hashes   []uint64
	first    time.Duration
	hasFirst bool
	cached   int
	explain  *Decision
	// pre is the prefill instance of a disaggregated request (pd.go).
	pre *instance
}

type sim struct {
	o       Options
	clock   *virtualClock
	sched   *scheduler.Scheduler
	driver  *workload.Driver
	insts   []*instance
	byAddr  map[string]*instance
	heap    instanceHeap
	flights map[uint64]*flight
	rec     workload.Recorder
	nextID  uint64
	queued  int
	// agent reports are staggered: one instance every interval/N.
	nextReport     time.Duration
	nextReportInst int
	reportStep     time.Duration
	nextTick       time.Duration
	textBuf        []byte
	// home is the instance of each conversation's previous turn, to count
	// how often a follow-up turn returns to it (where its history is cached).
	home              map[*workload.Conversation]*instance
	followUps, atHome int
	// The working set: distinct prompt and reply tokens of the live
	// conversations (shared system prompts counted once).
	convTokens map[*workload.Conversation]int
	systems    map[string]int
	ws, peakWS int64
	// Load balance, sampled every second: the largest ratio of one
	// instance's requests (running + waiting) to the mean.
	nextSample    time.Duration
	peakLoadRatio float64
	// KV usage (blocks held by requests over all blocks), the fleet's mean,
	// sampled every second before the plan's duration ends.
	kvSum     float64
	kvSamples int
	explain   *explainer
	flushed   bool
	pd        pdState
	restart   *restarter
}

// Result is one policy's run: the benchmark summary plus what the
// simulator alone can see.
type Result struct {
	workload.Summary
	// PeakWorkingSet is the most distinct tokens (prompts and replies, shared
	// system prompts once) that conversations still alive held before the
	// plan's duration ended; KVCapacity is one instance's KV cache in tokens.
	PeakWorkingSet, KVCapacity int64
	Preemptions                int64
	// FollowUps is the turns after a conversation's first; AtHome those
	// routed to the instance of the conversation's previous turn.
	FollowUps, AtHome int
	// PeakLoadRatio is the largest ratio, sampled every simulated second
	// while the mean is at least minLoadForRatio requests, of one instance's
	// running plus waiting requests to the mean over the instances.
	PeakLoadRatio float64
	// MeanKVUsage is the fleet's KV cache usage (blocks held by requests
	// over all blocks), averaged over one sample a simulated second while
	// new requests arrive: how full the caches ran.
	MeanKVUsage float64
	// Explain is the per-pick diagnosis when Options.Explain is set.
	Explain *Explanation `json:"-"`
	// Series is the windowed hit ratio and TTFT when Options.Window or
	// RestartAt is set (restart.go).
	Series *Series `json:"-"`
}

// Run simulates the plan under one policy and summarises it.
func Run(ctx context.Context, o Options, policyName string) (Result, error) {
	if err := o.defaults(); err != nil {
		return Result{}, err
	}
	cfg := o.Config
	cfg.Scheduler.Policy = policyName
	clock := &virtualClock{epoch: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	log := o.Log
	if log == nil {
		log = zap.NewNop()
	}
	var x *explainer
	if o.Explain > 0 || o.ExplainCSV != nil {
		x = newExplainer(o.Explain, policyName, o.ExplainCSV)
		log = explainLogger(log, x.record)
	}
	deps := scheduler.Deps{Clock: clock, Log: log, Rand: rand.New(rand.NewPCG(o.Seed, 0x73696d)), Metrics: o.Metrics}
	sched, err := scheduler.New(cfg, deps)
	if err != nil {
		return Result{}, err
	}
	driver, err := workload.NewDriver(o.Plan)
	if err != nil {
		return Result{}, err
	}
	s := &sim{
		o: o, clock: clock, sched: sched, driver: driver,
		byAddr: map[string]*instance{}, flights: map[uint64]*flight{}, home: map[*workload.Conversation]*instance{},
		convTokens: map[*workload.Conversation]int{}, systems: map[string]int{},
		reportStep: max(o.ReportInterval/time.Duration(o.Instances), time.Microsecond),
		explain:    x, restart: newRestarter(o, cfg, deps),
	}
	if err := s.register(); err != nil {
		return Result{}, err
	}
	if err := s.loop(ctx); err != nil {
		return Result{}, err
	}
	if err := x.flushCSV(); err != nil {
		return Result{}, err
	}
	return s.result(policyName), nil
}

// register starts every instance and registers it as its agent would.
func (s *sim) register() error {
	names := s.modelNames()
	base := netip.MustParseAddr("10.0.0.0").As4()
	for i := 0; i < s.o.Instances; i++ {
		ec := s.o.Engine
		if len(s.o.Speeds) > 0 {
			var err error
			if ec, err = ec.WithSpeed(s.o.Speeds[i]); err != nil {
				return err
			}
		}
		eng, err := engine.New(ec)
		if err != nil {
			return err
		}
		n := i + 1
		a := base
		a[2], a[3] = byte(n>>8), byte(n)
		addr := netip.AddrPortFrom(netip.AddrFrom4(a), 8000).String()
		in := &instance{idx: i, addr: addr, eng: eng, at: never}
		s.insts = append(s.insts, in)
		s.byAddr[addr] = in
		heap.Push(&s.heap, in)
		if err := s.registerAgent(in, names); err != nil {
			return fmt.Errorf("registering simulated instance %s: %w", addr, err)
		}
	}
	return nil
}

// registerAgent registers in as its agent does, serving the models names.
func (s *sim) registerAgent(in *instance, names []string) error {
	_, err := s.sched.Register(&llmrouterv1.Register{
		Address: in.addr, Engine: "vllm", EngineVersion: "sim", Models: names, Role: s.o.role(in.idx),
		NumGpuBlocks: int64(s.o.Engine.NumBlocks), BlockSize: int64(s.o.Engine.BlockSize),
		ReportInterval: durationpb.New(s.o.ReportInterval), AgentVersion: "sim",
		Initial: &llmrouterv1.Report{Healthy: true},
	})
	return err
}

// loop runs the events in time order; at equal times arrivals come first
// (an engine schedules what has arrived by the end of its step), then agent
// reports, scheduler ticks and engine steps.
func (s *sim) loop(ctx context.Context) error {
	s.nextReport = s.reportStep
	s.nextTick = s.o.TickInterval
	for iter := 0; ; iter++ {
		if iter&4095 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			s.progress()
		}
		if s.driver.Finished() && len(s.flights) == 0 {
			return nil
		}
		tA, okA := s.driver.Next()
		if !okA {
			tA = never
		}
		tE := s.heap[0].at
		tL := s.pd.next()
		tR := s.restartNext()
		t := min(tA, tE, s.nextReport, s.nextTick, tL, tR)
		if t > s.o.MaxVirtual {
			return fmt.Errorf("simulation passed %s of virtual time with %d requests still in flight: the load is far beyond the cluster's capacity", s.o.MaxVirtual, len(s.flights))
		}
		s.clock.now = t
		switch t {
		case tA:
			s.arrive(s.driver.Pop())
		case tL:
			s.handoff()
		case tR:
			if err := s.restartStep(); err != nil {
				return err
			}
		case s.nextReport:
			s.report(s.insts[s.nextReportInst])
			s.nextReportInst++
			if s.nextReportInst == len(s.insts) {
				s.nextReportInst = 0
			}
			s.nextReport += s.reportStep
		case s.nextTick:
			s.sched.Tick()
			s.nextTick += s.o.TickInterval
			if t >= s.nextSample {
				s.sampleLoad()
				s.nextSample = t + time.Second
			}
		default:
			s.step(s.heap[0])
		}
	}
}

func (s *sim) progress() {
	if s.o.Progress == nil {
		return
	}
	switch p := s.o.Plan; {
	case p.Duration > 0:
		s.o.Progress(min(float64(s.clock.now)/float64(p.Duration), 1))
	case p.MaxRequests > 0:
		s.o.Progress(float64(s.driver.Issued()) / float64(p.MaxRequests))
	}
}

// arrive is a request reaching the gateway: render and hash its prompt as
// the gateway does, and ask the scheduler for a pick.
func (s *sim) arrive(r *workload.Request) {
	if r == nil {
		return
	}
	s.nextID++
	f := &flight{req: r, id: fmt.Sprintf("sim-%d", s.nextID), engID: s.nextID, reply: r.SimulatedReply()}
	text := workload.Render(r.Messages)
	var gw []uint64
	var head int
	f.hashes, gw, head = s.hashes(r.Model, text, f.reply)
	f.prompt = s.o.Engine.PromptTokens(len(text))
	g := s.o.Config.Gateway
	s.flights[f.engID] = f
	s.track(r, f.prompt+r.MaxTokens)
	pr := &llmrouterv1.PickRequest{
		RequestId: f.id, Model: r.Model, PromptBlockHashes: gw, BlockChars: int32(g.BlockChars),
		PromptTokens: prompthash.EstimateTokens(len(text), g.CharsPerToken),
		MaxTokens:    int64(r.MaxTokens), Stream: true,
	}
	if head < len(gw) {
		pr.HeadBlocks, pr.TailBlockChars = int32(head), int32(g.TailBlockChars)
	}
	resp, ticket := s.sched.TryPick(pr, func(resp *llmrouterv1.PickResponse) {
		s.queued--
		s.dispatch(f, resp)
	})
	if ticket != nil {
		s.queued++
		return
	}
	s.dispatch(f, resp)
}

// hashes returns the engine's block hashes of the prompt and the reply that
// follows it (as the next turn renders them: an engine caches the blocks it
// generates) and the gateway's hashes of the prompt alone, of which the
// first head are fine blocks (llm_gateway block_chars, max_prefix_chars,
// tail_block_chars and max_hashed_chars: prompthash.Tiered).
func (s *sim) hashes(model, text, reply string) (eng, gw []uint64, head int) {
	seed := prompthash.Seed(model, "")
	ebc := s.o.Engine.BlockChars()
	eng = prompthash.Blocks(nil, seed, s.render(text, reply), ebc, 0)
	g := s.o.Config.Gateway
	headEnd := g.MaxPrefixChars / g.BlockChars * g.BlockChars
	if g.BlockChars == ebc && (g.TailBlockChars <= 0 || len(text) < headEnd+g.TailBlockChars) {
		// Hash i covers blocks 0..i only, so the prompt's chain is a prefix of
		// the longer one: no need to hash twice.
		gw = eng[:min(len(text)/ebc, g.MaxPrefixChars/ebc, len(eng))]
		return eng, gw, len(gw)
	}
	gw, head = prompthash.Tiered(nil, seed, text, g.BlockChars, g.MaxPrefixChars, g.TailBlockChars, g.MaxHashedChars)
	return eng, gw, head
}

// render is text followed by the assistant's reply as RenderChat renders it.
func (s *sim) render(text, reply string) string {
	b := s.textBuf[:0]
	b = append(b, text...)
	b = append(b, "assistant\n"...)
	b = append(b, reply...)
	b = append(b, '\n')
	s.textBuf = b
	return string(b)
}

// dispatch sends a picked request to its primary endpoint, or fails it.
func (s *sim) dispatch(f *flight, resp *llmrouterv1.PickResponse) {
	if s.passThrough(f, resp) {
		return
	}
	if resp.GetStatus() != llmrouterv1.PickResponse_ROUTED || len(resp.GetEndpoints()) == 0 {
		reason := resp.GetReason()
		if i := strings.IndexAny(reason, "(:;"); i > 0 {
			reason = strings.TrimSpace(reason[:i])
		}
		why := fmt.Sprintf("scheduler %s %d: %s", resp.GetStatus(), resp.GetHttpStatus(), reason)
		if c := resp.GetHttpStatus(); resp.GetStatus() == llmrouterv1.PickResponse_REJECTED && (c == 429 || c == 503) {
			s.reject(f, why)
			return
		}
		s.fail(f, why, false)
		return
	}
	in := s.byAddr[resp.GetEndpoints()[0]]
	if in == nil {
		s.fail(f, "scheduler picked an unknown endpoint "+resp.GetEndpoints()[0], true)
		return
	}
	f.inst = in
	if s.explain != nil {
		f.explain = s.explain.picked(s, f, in)
	}
	if s.prefillRemotely(f, resp.GetPrefillEndpoint()) {
		s.arrived(f, in)
		return
	}
	err := in.eng.Add(s.clock.now, engine.Request{ID: f.engID, PromptTokens: f.prompt, MaxTokens: f.req.MaxTokens, BlockHashes: f.hashes})
	if err != nil {
		s.fail(f, "engine: "+stripID(err.Error()), true)
		return
	}
	s.arrived(f, in)
	s.fix(in)
}

// arrived counts a request its decode instance took.
func (s *sim) arrived(f *flight, in *instance) {
	in.requests++
	if f.req.Turn > 0 {
		s.followUps++
		if s.home[f.req.Conversation] == in {
			s.atHome++
		}
	}
	s.home[f.req.Conversation] = in
}

func stripID(msg string) string {
	if i := strings.Index(msg, ": "); i > 0 && strings.HasPrefix(msg, "request ") {
		return msg[i+2:]
	}
	return msg
}

// minLoadForRatio is the mean load (requests per instance) below which the
// load-balance ratio is not sampled: at lower loads it says nothing (two
// requests on one of five otherwise idle instances is "five times the mean").
const minLoadForRatio = 4

func (s *sim) sampleLoad() {
	var total, peak int
	kv := 0.0
	for _, in := range s.insts {
		st := in.eng.Stats()
		l := st.Running + st.Waiting
		total += l
		peak = max(peak, l)
		kv += st.KVUsage
	}
	if s.o.Plan.Duration == 0 || s.clock.now < s.o.Plan.Duration {
		s.kvSum += kv / float64(len(s.insts))
		s.kvSamples++
	}
	mean := float64(total) / float64(len(s.insts))
	if mean >= minLoadForRatio {
		s.peakLoadRatio = max(s.peakLoadRatio, float64(peak)/mean)
	}
}

// track updates the working set as a conversation's turn arrives.
func (s *sim) track(r *workload.Request, tokens int) {
	c := r.Conversation
	sys := int64(len(c.System) / workload.CharsPerToken)
	old, live := s.convTokens[c]
	if !live && c.System != "" {
		s.systems[c.System]++
		if s.systems[c.System] == 1 {
			s.ws += sys
		}
	}
	n := max(tokens-int(sys), 0)
	s.convTokens[c] = n
	s.ws += int64(n - old)
	if s.o.Plan.Duration == 0 || s.clock.now < s.o.Plan.Duration {
		s.peakWS = max(s.peakWS, s.ws)
	}
}

// untrack drops a conversation that ended (its last turn, or a failure).
func (s *sim) untrack(c *workload.Conversation) {
	n, live := s.convTokens[c]
	if !live {
		return
	}
	delete(s.convTokens, c)
	delete(s.home, c)
	s.ws -= int64(n)
	if c.System != "" {
		s.systems[c.System]--
		if s.systems[c.System] == 0 {
			delete(s.systems, c.System)
			s.ws -= int64(len(c.System) / workload.CharsPerToken)
		}
	}
}

// reject ends a request the scheduler shed (429, or 503): counted as
// rejected, not failed.
func (s *sim) reject(f *flight, why string) {
	now := s.clock.now
	delete(s.flights, f.engID)
	s.untrack(f.req.Conversation)
	s.rec.Add(workload.Outcome{Rejected: true, Err: why, Latency: now - f.req.Arrival, End: now})
	s.driver.Done(now, f.req, "", false)
}

func (s *sim) fail(f *flight, why string, picked bool) {
	now := s.clock.now
	delete(s.flights, f.engID)
	s.untrack(f.req.Conversation)
	s.rec.Add(workload.Outcome{OK: false, Err: why, End: now})
	if picked {
		_ = s.sched.Report(context.Background(), &llmrouterv1.OutcomeReport{RequestId: f.id, Model: f.req.Model, HttpStatus: 500, Error: why})
	}
	s.driver.Done(now, f.req, "", false)
}

// fix re-reads an instance's next step time after its engine changed.
func (s *sim) fix(in *instance) {
	at, ok := in.eng.NextStepAt()
	if !ok {
		at = never
	}
	if at != in.at {
		in.at = at
		heap.Fix(&s.heap, in.heapIdx)
	}
}

// step runs one engine step and handles its events.
func (s *sim) step(in *instance) {
	now := s.clock.now
	evs := in.eng.Step(now)
	s.fix(in)
	for _, ev := range evs {
		f := s.flights[ev.ID]
		if f == nil {
			continue
		}
		if ev.ID&prefillStage != 0 {
			s.prefilled(f, ev)
			continue
		}
		switch ev.Kind {
		case engine.FirstToken:
			f.first, f.hasFirst, f.cached = ev.At, true, ev.CachedTokens
			if f.explain != nil {
				s.explain.firstToken(f.explain, ev.At, ev.CachedTokens, ev.Scheduled)
				f.explain = nil
			}
		case engine.Finished:
			s.complete(f, ev)
		}
	}
}

func (s *sim) complete(f *flight, ev engine.Event) {
	delete(s.flights, f.engID)
	arrival := f.req.Arrival
	first := f.first
	if !f.hasFirst {
		first = ev.At
	}
	o := workload.Outcome{
		OK: true, InputTokens: f.prompt, OutputTokens: ev.Tokens, CachedTokens: f.cached,
		TTFT: first - arrival, Latency: ev.At - arrival, End: ev.At,
	}
	s.rec.Add(o)
	s.observe(f, o)
	rep := &llmrouterv1.OutcomeReport{
		RequestId: f.id, Endpoint: f.inst.addr, Model: f.req.Model, Success: true, HttpStatus: 200,
		Ttft: durationpb.New(o.TTFT), Duration: durationpb.New(o.Latency),
		PromptTokens: int64(f.prompt), CompletionTokens: int64(ev.Tokens), CachedTokens: int64(f.cached),
	}
	if tpot, ok := o.TPOT(); ok {
		rep.Tpot = durationpb.New(tpot)
	}
	_ = s.sched.Report(context.Background(), rep)
	if f.req.Turn+1 >= len(f.req.Conversation.Turns) {
		s.untrack(f.req.Conversation)
	}
	s.driver.Done(ev.At, f.req, f.reply, true)
}

// report is one agent report from the engine's true state.
func (s *sim) report(in *instance) {
	if !s.agentUp(in) {
		return
	}
	now := s.clock.now
	if s.o.FlushAt > 0 && !s.flushed && now >= s.o.FlushAt && in.idx == s.o.FlushInstance {
		in.eng.FlushPrefixCache()
		s.flushed = true
	}
	st := in.eng.Stats()
	dt := (now - in.lastAt).Seconds()
	rep := &llmrouterv1.Report{
		Healthy: true, Running: int64(st.Running), Waiting: int64(st.Waiting), KvCacheUsage: st.KVUsage,
		PromptTokensTotal: float64(st.PromptTokens), GenerationTokensTotal: float64(st.GenerationTokens),
		PrefixCacheHitRatio: -1,
	}
	if dt > 0 {
		rep.PromptTokensPerSecond = float64(st.PromptTokens-in.last.PromptTokens) / dt
		rep.GenerationTokensPerSecond = float64(st.GenerationTokens-in.last.GenerationTokens) / dt
	}
	if q := st.PrefixQueries; q > 0 {
		rep.PrefixCacheHitRatio = float64(st.PrefixHits) / float64(q)
	}
	in.seq++
	rep.Sequence = in.seq
	in.last, in.lastAt = st, now
	if s.o.OnReport != nil {
		s.o.OnReport(in.idx, rep)
	}
	if err := s.sched.InstanceReport(in.addr, 0, rep); err != nil {
		// The registry forgets an instance only when its reports stop, which
		// the simulator never lets happen; anything else is a bug.
		panic(errors.Join(errors.New("cluster: scheduler refused a simulated report"), err))
	}
}

func (s *sim) result(policy string) Result {
	var hits, queries int64
	r := Result{
		KVCapacity: int64(s.o.Engine.NumBlocks) * int64(s.o.Engine.BlockSize), PeakWorkingSet: s.peakWS,
		FollowUps: s.followUps, AtHome: s.atHome, PeakLoadRatio: s.peakLoadRatio,
	}
	if s.kvSamples > 0 {
		r.MeanKVUsage = s.kvSum / float64(s.kvSamples)
	}
	for _, in := range s.insts {
		st := in.eng.Stats()
		hits += st.PrefixHits
		queries += st.PrefixQueries
		r.Preemptions += st.Preemptions
	}
	s.rec.SetPrefixCache(hits, queries)
	r.Summary = s.rec.Summary(policy)
	if s.explain != nil {
		r.Explain = s.explain.result(policy)
	}
	r.Series = s.series()
	for _, in := range s.insts {
		r.PerInstance = append(r.PerInstance, workload.InstanceCount{Instance: in.addr, Requests: in.requests})
	}
	r.Extra = append(r.Extra,
		workload.KV{Key: "Preemptions", Value: fmt.Sprint(r.Preemptions)},
		workload.KV{Key: "Peak working set (tokens)", Value: fmt.Sprintf("%d (%.1f× one instance's KV cache of %d)",
			r.PeakWorkingSet, float64(r.PeakWorkingSet)/float64(r.KVCapacity), r.KVCapacity)})
	if s.heterogeneous() {
		parts := make([]string, len(s.o.Speeds))
		for i, sp := range s.o.Speeds {
			parts[i] = fmt.Sprintf("%s=%g", s.insts[i].addr, sp)
		}
		r.Extra = append(r.Extra, workload.KV{Key: "Instance speeds", Value: strings.Join(parts, " ")})
	}
	r.Extra = append(r.Extra, s.pdExtra()...)
	r.Extra = append(r.Extra, workload.KV{Key: "Mean KV cache usage", Value: fmt.Sprintf("%.2f (blocks held by requests, sampled every second)", r.MeanKVUsage)})
	r.Extra = append(r.Extra, workload.KV{Key: "Peak load / mean load", Value: fmt.Sprintf("%.2f (running+waiting, sampled every second while the mean is >= 4)", r.PeakLoadRatio)})
	if r.FollowUps > 0 {
		r.Extra = append(r.Extra, workload.KV{Key: "Follow-up turns on their last instance",
			Value: fmt.Sprintf("%d of %d (%.1f%%)", r.AtHome, r.FollowUps, 100*float64(r.AtHome)/float64(r.FollowUps))})
	}
	return r
}

// heterogeneous reports whether any instance runs at a speed other than 1.
func (s *sim) heterogeneous() bool {
	for _, sp := range s.o.Speeds {
		if sp != 1 {
			return true
		}
	}
	return false
}

// RunAll runs the plan under each policy in turn, on identical arrivals.
func RunAll(ctx context.Context, o Options, policies []string) ([]Result, error) {
	out := make([]Result, 0, len(policies))
	for _, p := range policies {
		s, err := Run(ctx, o, p)
		if err != nil {
			return out, fmt.Errorf("policy %s: %w", p, err)
		}
		out = append(out, s)
	}
	return out, nil
}
