package scheduler

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/admission"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	"github.com/llmrouter/llmrouter/scheduler/policy/affinity"
	"github.com/llmrouter/llmrouter/scheduler/policy/plugins/filters"
	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// Deps are the scheduler's collaborators; every field is optional.
type Deps struct {
	// Clock drives all housekeeping; the simulator passes a virtual one.
	Clock policy.Clock
	Log   *zap.Logger
	// Metrics receives the scheduler's metrics; nil registers none.
	Metrics prometheus.Registerer
	// Rand breaks policy ties; seed it for reproducible simulations.
	Rand *rand.Rand
	// Verify, when set, checks that a new registration's address answers
	// as the engine its agent described before the instance is picked or
	// published (scheduler/verify); nil admits registrations as they are
	// (the simulator, tests, llm_scheduler.verify_engines false).
	Verify Verifier
	// Probe, when set, asks a silent instance's address whether its engine
	// still answers; an error confirms it down. nil leaves silent instances
	// to llm_scheduler.silent_grace.
	Probe Prober
}

// defaultDecodeTokens estimates a request's output when it names no
// max_tokens, for the in-flight decode-token estimate.
const defaultDecodeTokens = 256

// inst is the scheduler's mirror of one registry instance, plus its
// in-flight bookkeeping. Guarded by Scheduler.mu.
type inst struct {
	view policy.Instance // handed to policies; Inflight* maintained here
	// bootstrapPort goes with the pick when the instance prefills (SGLang).
	bootstrapPort int32
	gen           uint64 // the registration's lease generation
	healthy       bool
	draining      bool
	verified      bool
	silent        bool
	// probing: a probe of this silent instance is running; the next one
	// starts at nextProbe.
	probing   bool
	nextProbe time.Time
	// unseen holds picks no report has shown yet (markSeen; some may have been
	// released since; they are skipped).
	unseen []*pick
	// picks counts this instance's unreleased picks.
	picks int
	// adapters are the LoRA adapters it serves under their own model
	// names (registry.Instance.Adapters): a pool each, besides the base
	// models of view.Models.
	adapters []string
}

// routable: the scheduler may pick it. published: it is in Envoy's
// endpoint set (registry.Instance.Routable and Published).
func (i *inst) routable() bool  { return i.published() && !i.silent }
func (i *inst) published() bool { return i.healthy && !i.draining && i.verified }

// serves: pool names a base model or an adapter of the instance.
func (i *inst) serves(pool string) bool {
	return slices.Contains(i.view.Models, pool) || slices.Contains(i.adapters, pool)
}

// Scheduler is the registry, the policy, the in-flight bookkeeping and the
// admission queue. All of its methods are safe for concurrent use; calls
// into the policy are serialised by one mutex.
type Scheduler struct {
	cfg      config.Config
	clock    policy.Clock
	log      *zap.Logger
	reg      *registry.Registry
	pol      policy.Policy
	observer policy.Observer // nil when the policy keeps no state
	m        *metrics
	mm       *memberMetrics
	verify   Verifier
	probe    Prober

	// The stage every decision runs ahead of the policy: routable-filter,
	// then saturation-filter (scheduler/policy/plugins/filters).
	routable framework.Filter
	sat      saturation
	stageCS  framework.CycleState
	retries  int

	mu       sync.Mutex
	insts    map[string]*inst
	pools    map[string][]*inst // model → instances serving it, sorted by ID
	inflight map[string]*pick   // request id → pick
	fifo     []*pick            // picks in pick order, for inflight_timeout
	fifoHead int
	queue    []*waiter // admission queue, priority desc then arrival
	seq      uint64
	nextTry  time.Time
	// tickEvery is Run's period (0 when the simulator calls Tick) and
	// lastTick when the last Tick began: a Tick beginning stallTicks
	// periods after the last one finds this scheduler stalled meanwhile.
	tickEvery time.Duration
	lastTick  time.Time
	fired     []func() // callbacks to run once mu is released
	// poolViews is pools as views, the stage's input: read-only (the
	// stage's filters and the policy never write to it), rebuilt on a
	// membership change.
	poolViews map[string][]*policy.Instance
	fullBuf   []poolNeed // drainQueue's pools without room
	// sglang names the pools reached only by SGLang's "base:adapter"
	// model syntax (sglang.go), nil when none; rebuilt with pools.
	sglang map[string]sglangName
	// need is, after a decision that found no room, the shortest predicted
	// wait among the candidates held back by it (+Inf: none was).
	need float64
	// holder is the policy's policy.Holder, nil when it is none; held
	// says the last decision kept its request for an instance the stage
	// held back (a hold, not a pool without room).
	holder policy.Holder
	held   bool
}

// New builds a scheduler running cfg.Scheduler.Policy.
func New(cfg config.Config, d Deps) (*Scheduler, error) {
	if d.Clock == nil {
		d.Clock = policy.SystemClock{}
	}
	if d.Log == nil {
		d.Log = zap.NewNop()
	}
	if d.Rand == nil {
		d.Rand = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x736368))
	}
	cidrs, err := registry.ParseCIDRs(cfg.Scheduler.AllowedCIDRs)
	if err != nil {
		return nil, err
	}
	// Values given under deprecated keys are checked whether or not a
	// plugin of their type runs.
	if err := framework.CheckDeprecated(cfg); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	// Session and LoRA affinity wrap whichever policy is configured.
	pd := policy.Deps{Config: cfg, Clock: d.Clock, Log: d.Log.Named("policy"), Rand: d.Rand, Metrics: d.Metrics}
	res, err := resolver(cfg, pd)
	if err != nil {
		return nil, err
	}
	inner, err := res.New(cfg.Scheduler.Policy, pd)
	if err != nil {
		return nil, fmt.Errorf("llm_scheduler.policy: %w", err)
	}
	routable, sat, err := stage(inner, pd)
	if err != nil {
		return nil, err
	}
	pol := affinity.Wrap(inner, pd)
	holder, _ := inner.(policy.Holder)
	for _, m := range cfg.Deprecated {
		d.Log.Warn(m)
	}
	s := &Scheduler{
		cfg: cfg, clock: d.Clock, log: d.Log, pol: pol, holder: holder, m: newMetrics(d.Metrics, cfg.Gateway.MaxQueueSize), mm: newMemberMetrics(d.Metrics),
		verify: d.Verify, probe: d.Probe,
		// An agent API listening on loopback only means every agent runs on
		// this host: an advertised 127.0.0.1 is the same machine to Envoy.
		reg: registry.New(registry.Options{Clock: d.Clock, AllowedCIDRs: cidrs,
			AllowLoopback: config.Loopback(cfg.Scheduler.Listen), MissedReports: cfg.Scheduler.MissedReports,
			SilentGrace: cfg.Scheduler.SilentGrace, PanicThreshold: cfg.Scheduler.PanicThreshold,
			Verify: d.Verify != nil, Log: d.Log.Named("registry"), Metrics: d.Metrics}),
		routable: routable, sat: sat,
		retries: max(cfg.Gateway.RetryCount, 0),
		insts:   map[string]*inst{}, pools: map[string][]*inst{}, inflight: map[string]*pick{},
	}
	s.observer, _ = pol.(policy.Observer)
	return s, nil
}

// saturation is what the scheduler asks of saturation-filter besides
// filtering: what it learns from, and what a request it holds back or
// sheds is told.
type saturation interface {
	framework.Filter
	HeldBackWait(req *policy.Request, cands []*policy.Instance) float64
	Saturated(c *policy.Instance) bool
	Observe(req *policy.Request)
	Completed(completionTokens int64)
	Reported(c *policy.Instance)
	PredictedWait(c *policy.Instance) time.Duration
	RetryAfter(cands []*policy.Instance, most time.Duration) int32
	Target() time.Duration
}

// stage builds the filters every decision runs ahead of pol: the
// routable-filter and saturation-filter pol's EndpointPickerConfig
// declared, else ones with their default parameters (llm_scheduler's
// max_waiting, max_kv_cache_usage, max_predicted_wait).
func stage(pol policy.Policy, d policy.Deps) (framework.Filter, saturation, error) {
	r, err := framework.StagePlugin(pol, filters.Routable, d)
	if err != nil {
		return nil, nil, fmt.Errorf("llm_scheduler.policy: %w", err)
	}
	s, err := framework.StagePlugin(pol, filters.Saturation, d)
	if err != nil {
		return nil, nil, fmt.Errorf("llm_scheduler.policy: %w", err)
	}
	rf, ok := r.(framework.Filter)
	if !ok {
		return nil, nil, fmt.Errorf("plugin %s is not a filter", filters.Routable)
	}
	sf, ok := s.(saturation)
	if !ok {
		return nil, nil, fmt.Errorf("plugin %s does not judge saturation", filters.Saturation)
	}
	return rf, sf, nil
}

// resolver finds policies by name: the profiles of
// llm_scheduler.endpoint_picker_config, when set, then the built-in ones.
// Every profile of the file is built once here, so a bad plugin or
// parameter stops startup whichever profile is chosen.
func resolver(cfg config.Config, d policy.Deps) (framework.Resolver, error) {
	path := cfg.Scheduler.EndpointPickerConfig
	if path == "" {
		return framework.Resolver{}, nil
	}
	spec, err := framework.LoadEndpointPickerConfig(path)
	if err == nil {
		d.Metrics = nil // a trial build: the real one registers
		err = framework.Check(spec, d)
	}
	if err != nil {
		return framework.Resolver{}, fmt.Errorf("llm_scheduler.endpoint_picker_config: %w", err)
	}
	if m := spec.Deprecation(); m != "" && d.Log != nil {
		d.Log.Warn(m, zap.String("file", path))
	}
	return framework.Resolver{File: &spec}, nil
}

// CheckPolicies checks llm_scheduler.policy (and, for pd-split, the
// prefill and decode policies) against the names the scheduling framework
// accepts, after loading and checking llm_scheduler.endpoint_picker_config.
// New does the same; this lets a command refuse a bad configuration before
// it starts anything.
func CheckPolicies(cfg config.Config) error {
	if err := framework.CheckDeprecated(cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	res, err := resolver(cfg, policy.Deps{Config: cfg})
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	names := res.Names()
	keys := [][2]string{{"llm_scheduler.policy", cfg.Scheduler.Policy}}
	if strings.HasSuffix(cfg.Scheduler.Policy, "pd-split") {
		keys = append(keys, [2]string{"llm_scheduler.prefill_policy", cfg.Scheduler.PrefillPolicy}, [2]string{"llm_scheduler.decode_policy", cfg.Scheduler.DecodePolicy})
	}
	for _, k := range keys {
		if !slices.Contains(names, k[1]) {
			return fmt.Errorf("config: %s = %q: accepted: %s", k[0], k[1], strings.Join(names, ", "))
		}
	}
	return nil
}

// Registry is a read-only view of the live fleet, for xDS, the admin API
// and metrics to follow; changes go through the scheduler.
func (s *Scheduler) Registry() registry.View { return s.reg }

// PolicyName names the running policy.
func (s *Scheduler) PolicyName() string { return s.pol.Name() }

// unlock releases mu and runs the callbacks queued while it was held, so a
// callback may call back into the scheduler.
func (s *Scheduler) unlock() {
	fired := s.fired
	s.fired = nil
	s.mu.Unlock()
	for _, f := range fired {
		f()
	}
}

// ---------------------------------------------------------------- instances

// Register adds an instance. The agent stream server and the simulator both
// call it; the lease identifies this registration in later calls and
// carries the agent's commands. An address another live registration holds
// is refused (registry.ErrTaken); RegisterAs lets that registration's holder
// replace it.
func (s *Scheduler) Register(reg *llmrouterv1.Register) (*registry.Lease, error) {
	return s.RegisterAs(reg, nil)
}

// RegisterAs is Register by the holder of a current lease (nil: none), as
// when an agent re-registers on its open stream after its engine restarted.
func (s *Scheduler) RegisterAs(reg *llmrouterv1.Register, holder *registry.Lease) (*registry.Lease, error) {
	s.mu.Lock()
	defer s.unlock()
	lease, err := s.reg.Register(reg, holder)
	if err != nil {
		return nil, err
	}
	ri, _ := s.reg.Get(lease.ID)
	in := s.insts[lease.ID]
	// The same engine, still running, re-registering over its stream
	// because what it serves changed (a LoRA adapter loaded or unloaded):
	// its KV cache and speed are what they were.
	same := in != nil && reg.GetEngineUnchanged() && holder != nil && holder.ID == lease.ID &&
		holder.Gen == in.gen && in.view.Engine == ri.Engine && slices.Equal(in.view.Models, ri.Models)
	switch {
	case in == nil:
		in = &inst{}
		s.insts[lease.ID] = in
	case same:
	case s.observer != nil:
		// A registered instance registers again when its engine came back
		// (restarted, so its KV cache is empty) or changed: what the policy
		// learnt about it, cached prefixes above all, no longer holds.
		s.observer.Removed(lease.ID)
	}
	in.gen, in.probing = lease.Gen, false
	if !same {
		in.view.BatchLimit, in.view.BatchHeld, in.view.Speed = 0, 0, 0 // a new or restarted engine is measured afresh
	}
	s.mirror(in, &ri)
	s.sat.Reported(&in.view)
	s.rebuildPools()
	s.instanceStates()
	s.m.instanceReport(&ri)
	s.capacityChanged()
	if !ri.Verified {
		go s.verifyLoop(lease, ri)
	}
	return lease, nil
}

// InstanceReport applies an agent report. gen is the lease generation (0
// accepts any, for in-process callers that never re-register concurrently).
func (s *Scheduler) InstanceReport(id string, gen uint64, rep *llmrouterv1.Report) error {
	if rep == nil {
		return errors.New("empty report")
	}
	s.mu.Lock()
	defer s.unlock()
	ri, err := s.reg.Report(id, gen, rep)
	if err != nil {
		return err
	}
	in := s.insts[id]
	if in == nil { // cannot happen: the mirror follows every registry change under mu
		return fmt.Errorf("%w: %s", registry.ErrUnknown, id)
	}
	stateChanged := in.healthy != ri.Healthy || in.silent != ri.Silent
	s.mirror(in, &ri)
	s.sat.Reported(&in.view)
	s.markSeen(in)
	s.m.instanceReport(&ri)
	if stateChanged {
		s.instanceStates()
	}
	s.capacityChanged()
	return nil
}

// Deregister removes an instance (its stream closed). gen 0 removes whatever
// registration holds id; otherwise only the matching one.
func (s *Scheduler) Deregister(id string, gen uint64, reason string) bool {
	s.mu.Lock()
	defer s.unlock()
	if _, ok := s.reg.Remove(id, gen, reason); !ok {
		return false
	}
	s.forget(id)
	return true
}

// Orphan keeps an instance whose agent's stream ended (gen must match) as
// silent rather than removing it: only a confirmed dead engine leaves the
// endpoint set (registry.Registry.Orphan).
func (s *Scheduler) Orphan(id string, gen uint64, reason string) bool {
	s.mu.Lock()
	defer s.unlock()
	ri, ok := s.reg.Orphan(id, gen, reason)
	if !ok {
		return false
	}
	if in := s.insts[id]; in != nil {
		s.mirror(in, &ri)
	}
	s.instanceStates()
	s.capacityChanged()
	return true
}

// Drain stops new picks to instance id and tells its agent; requests in
// flight finish.
func (s *Scheduler) Drain(id, reason string) error { return s.setDraining(id, true, reason) }

// Resume undoes Drain.
func (s *Scheduler) Resume(id, reason string) error { return s.setDraining(id, false, reason) }

func (s *Scheduler) setDraining(id string, draining bool, reason string) error {
	s.mu.Lock()
	defer s.unlock()
	if _, err := s.reg.SetDraining(id, draining, reason); err != nil {
		return err
	}
	in := s.insts[id]
	in.draining = draining
	in.view.Routable = in.routable()
	s.instanceStates()
	if !draining {
		s.capacityChanged()
	}
	return nil
}

// mirror copies a registry instance into the scheduler's view.
func (s *Scheduler) mirror(in *inst, ri *registry.Instance) {
	v := &in.view
	v.ID, v.Address, v.Engine, v.Role = ri.ID, ri.Address, ri.Engine, ri.Role
	v.Models, v.LoRAs, v.WaitingLoRAs, v.MaxLoRA = ri.Models, ri.LoRAs, ri.WaitingLoRAs, ri.MaxLoRA
	v.Running, v.Waiting, v.KVCacheUsage = ri.Running, ri.Waiting, ri.KVCacheUsage
	v.PromptTPS, v.GenTPS, v.PrefixCacheHitRatio = ri.PromptTPS, ri.GenTPS, ri.PrefixCacheHitRatio
	v.PromptTokensTotal = ri.PromptTokensTotal
	v.NumGPUBlocks, v.BlockSize, v.LastReport = ri.NumGPUBlocks, ri.BlockSize, ri.LastReport
	in.healthy, in.draining, in.verified, in.silent = ri.Healthy, ri.Draining, ri.Verified, ri.Silent
	v.Routable = in.routable()
	in.bootstrapPort, in.adapters = ri.BootstrapPort, ri.Adapters
	admission.Remember(v) // (Reported, which follows, changes it too)
}

// forget drops a removed instance: its in-flight picks, its metrics, the
// policy's state about it.
func (s *Scheduler) forget(id string) {
	in := s.insts[id]
	if in == nil {
		return
	}
	delete(s.insts, id)
	for _, p := range s.inflight {
		if p.inst == in {
			s.release(p)
		}
	}
	s.rebuildPools()
	s.instanceStates()
	s.m.instanceGone(id)
	if s.observer != nil {
		s.observer.Removed(id)
	}
}

// rebuildPools recomputes model → instances. A model is a base model or a
// LoRA adapter: vLLM and SGLang serve each adapter under its own model
// name, and a request naming one may go only to the instances serving it.
// SGLang also takes "base:adapter" (addSGLangPools): those names get a
// pool of their own unless served literally. Membership changes are rare
// next to picks, so picks read a ready list.
func (s *Scheduler) rebuildPools() {
	pools := make(map[string][]*inst, len(s.pools))
	for _, in := range s.insts {
		for _, m := range in.view.Models {
			pools[m] = append(pools[m], in)
		}
		for _, m := range in.adapters {
			if !slices.Contains(in.view.Models, m) {
				pools[m] = append(pools[m], in)
			}
		}
	}
	sglang := s.addSGLangPools(pools)
	views := make(map[string][]*policy.Instance, len(pools))
	for m, l := range pools {
		sort.Slice(l, func(a, b int) bool { return l[a].view.ID < l[b].view.ID })
		vs := make([]*policy.Instance, len(l))
		for i, in := range l {
			vs[i] = &in.view
		}
		views[m] = vs
	}
	s.pools, s.poolViews, s.sglang = pools, views, sglang
}

func (s *Scheduler) instanceStates() {
	counts := make(map[string]float64, len(registry.States))
	for _, in := range s.insts {
		ri := registry.Instance{Healthy: in.healthy, Draining: in.draining, Verified: in.verified, Silent: in.silent}
		counts[ri.State()]++
	}
	for _, st := range registry.States {
		s.m.instances.WithLabelValues(st).Set(counts[st])
	}
}

// Models lists the models the fleet serves, sorted: base models and the
// LoRA adapters instances serve under their own names, as /v1/models lists
// them (not SGLang's "base:adapter" names for them).
func (s *Scheduler) Models() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.servedNames()
}

// servedNames is Models under mu.
func (s *Scheduler) servedNames() []string {
	out := make([]string, 0, len(s.pools))
	for m := range s.pools {
		if _, ok := s.sglang[m]; !ok {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out
}

// ---------------------------------------------------------------- housekeeping

// Tick does all time-based housekeeping at the clock's now: marks silent
// the instances that missed their reports (and probes them, removing those
// whose engine is confirmed down or whose silence outlasted silent_grace),
// releases picks never reported back,
// routes queued requests that waited out wait_schedule_timeout, and
// re-evaluates the queue every wait_schedule_try_period. The server calls it
// from a ticker; the simulator calls it as virtual time advances.
func (s *Scheduler) Tick() {
	s.mu.Lock()
	defer s.unlock()
	now := s.clock.Now()
	if s.tickEvery > 0 && !s.lastTick.IsZero() && now.Sub(s.lastTick) > stallTicks*s.tickEvery {
		s.reg.Resumed(now)
	}
	s.lastTick = now
	// A remembered saturation verdict lives at most a tick: a change of a
	// view that bypassed Remember (a test reaching in) is seen by the next.
	for _, in := range s.insts {
		admission.Remember(&in.view)
	}
	s.sweep(now)
	freed := s.expireInflight(now)
	s.expireQueue(now)
	if len(s.queue) > 0 && (freed || !now.Before(s.nextTry)) {
		s.drainQueue()
	}
}

// Stats is a point-in-time summary, for tests, logs and the simulator.
type Stats struct {
	Instances int
	Inflight  int
	Queued    int
}

// Stats returns the current counts.
func (s *Scheduler) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Instances: len(s.insts), Inflight: len(s.inflight), Queued: len(s.queue)}
}

// InstanceView returns the policy's view of instance id (with in-flight
// counts), for tests and debugging.
func (s *Scheduler) InstanceView(id string) (policy.Instance, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.insts[id]
	if in == nil {
		return policy.Instance{}, false
	}
	v := in.view
	v.Saturated = s.sat.Saturated(&v)
	return v, true
}

// joinModels lists the served models for an error message, the first ten.
func (s *Scheduler) joinModels() string {
	ms := s.servedNames()
	if len(ms) > 10 {
		ms = append(ms[:10], "...")
	}
	return strings.Join(ms, ", ")
}

// TickPeriod is how often a live scheduler runs Tick: fine enough that
// missed reports (3 × 200 ms) and queue deadlines are noticed within a
// twentieth of a second.
const TickPeriod = 50 * time.Millisecond

// Run calls Tick every period on the wall clock until ctx ends; the live
// server runs it, the simulator calls Tick itself. A Tick of Run's that
// comes late by stallTicks periods counts silence afresh.
func (s *Scheduler) Run(ctx context.Context, period time.Duration) {
	if period <= 0 {
		period = TickPeriod
	}
	s.mu.Lock()
	s.tickEvery = period
	s.mu.Unlock()
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Tick()
		}
	}
}

// stallTicks: a Tick of Run's beginning this many periods after the last
// one finds this scheduler did not run meanwhile (CPU starvation or
// throttling, a long pause, the lock held), and silence is counted afresh
// from then (registry.Resumed). The reports agents sent meanwhile are not
// read yet; judged at once, every instance fell silent in one sweep and
// reported again 1-2 ms later, and while all were silent the admission
// queue passed through to the engines (faults Overload on a starved
// machine: engine queues of over 100).
const stallTicks = 5
