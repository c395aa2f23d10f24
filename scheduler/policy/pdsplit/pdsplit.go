package pdsplit

import (
	"errors"
	"fmt"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	"github.com/llmrouter/llmrouter/scheduler/prefixindex"
)

// Names of the policies.
const (
	Name        = "pd-split"
	DynamicName = "dynamic-pd-split"
)

func init() {
	policy.Register(Name, func(d policy.Deps) (policy.Policy, error) { return New(d, nil) })
	framework.RegisterPolicy(DynamicName, DefaultParams, func(d policy.Deps, p Params) (policy.Policy, error) { return New(d, &p) })
}

// Params are dynamic-pd-split's parameters (pd-split has none): plugin
// type dynamic-pd-split; the built-in profile runs with DefaultParams.
type Params struct {
	// Disaggregate when at least PDMinPrefillTokens prompt tokens are
	// uncached on the decode instance and it runs at least
	// PDDecodeBusyLoad requests.
	PDMinPrefillTokens int `json:"pdMinPrefillTokens"`
	PDDecodeBusyLoad   int `json:"pdDecodeBusyLoad"`
	// The size of the index kept when the decode profile keeps none;
	// defaults llm_scheduler.prefix_index.
	PrefixIndexMaxBlocks     int `json:"prefixIndexMaxBlocks" default:"llm_scheduler.prefix_index.max_blocks"`
	PrefixIndexDefaultBlocks int `json:"prefixIndexDefaultBlocks" default:"llm_scheduler.prefix_index.default_blocks"`
}

// DefaultParams are the parameters with c's prefix index sizes.
func DefaultParams(c config.Config) Params {
	return Params{PDMinPrefillTokens: 512, PDDecodeBusyLoad: 4,
		PrefixIndexMaxBlocks: c.Scheduler.PrefixIndex.MaxBlocks, PrefixIndexDefaultBlocks: c.Scheduler.PrefixIndex.DefaultBlocks}
}

// Validate checks every parameter, naming the first bad one.
func (p Params) Validate() error {
	switch {
	case p.PDMinPrefillTokens < 0:
		return fmt.Errorf("parameter pdMinPrefillTokens %d: accepted: 0 or more", p.PDMinPrefillTokens)
	case p.PDDecodeBusyLoad < 0:
		return fmt.Errorf("parameter pdDecodeBusyLoad %d: accepted: 0 or more", p.PDDecodeBusyLoad)
	case p.PrefixIndexMaxBlocks < 1024:
		return fmt.Errorf("parameter prefixIndexMaxBlocks %d: accepted: 1024 or more", p.PrefixIndexMaxBlocks)
	case p.PrefixIndexDefaultBlocks < 1:
		return fmt.Errorf("parameter prefixIndexDefaultBlocks %d: accepted: 1 or more", p.PrefixIndexDefaultBlocks)
	}
	return nil
}

// Split is pd-split, or dynamic-pd-split when dynamic. The scheduler calls
// it serially.
type Split struct {
	dynamic         bool
	prefill, decode policy.Policy
	preObs, decObs  policy.Observer

	// dynamic only. idx tells which blocks each destination holds: the
	// decode policy's own index when it keeps one (shared, read only here),
	// else one this policy keeps (own).
	idx       *prefixindex.Index
	own       bool
	minTokens float64
	busyLoad  int64
	size      prefixindex.Sizing

	pre, dec []*policy.Instance // scratch

	// decisions counts each pick by what the rule decided (the
	// decision* labels).
	decisions *prometheus.CounterVec
}

// Labels of llmrouter_scheduler_pd_decisions_total.
const (
	DecisionDisaggregated = "disaggregated"
	DecisionShortPrompt   = "short_prompt"    // dynamic: fewer than pd_min_prefill_tokens uncached
	DecisionCached        = "cached_prompt"   // dynamic: long, but the destination holds enough of it
	DecisionDecodeIdle    = "decode_not_busy" // dynamic: the destination runs fewer than pd_decode_busy_load
	DecisionNoPrefill     = "no_prefill_instance"
)

// decisionCounter is one series set per registry, shared by the policies
// built on it.
func decisionCounter(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_scheduler_pd_decisions_total",
		Help: "pd-split and dynamic-pd-split picks by decision: disaggregated, or why the destination prefills for itself."}, []string{"policy", "decision"})
	if reg != nil {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				if prev, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
					return prev
				}
			}
		}
	}
	return c
}

// New builds pd-split, or with dynamic's parameters (checked:
// Params.Validate) dynamic-pd-split, over the sub-policies named by
// llm_scheduler.prefill_policy and decode_policy.
func New(d policy.Deps, dynamic *Params) (*Split, error) {
	c := d.Config
	build := func(key, name string) (policy.Policy, error) {
		if name == "" || strings.HasSuffix(name, "pd-split") {
			return nil, fmt.Errorf("llm_scheduler.%s = %q: want a single-phase policy such as prefix-cache or least-token", key, name)
		}
		if d.Build == nil {
			return nil, fmt.Errorf("pd-split: no policy builder in Deps")
		}
		p, err := d.Build(name)
		if err != nil {
			return nil, fmt.Errorf("llm_scheduler.%s: %w", key, err)
		}
		return p, nil
	}
	pre, err := build("prefill_policy", c.Scheduler.PrefillPolicy)
	if err != nil {
		return nil, err
	}
	dec, err := build("decode_policy", c.Scheduler.DecodePolicy)
	if err != nil {
		return nil, err
	}
	s := &Split{dynamic: dynamic != nil, prefill: pre, decode: dec, decisions: decisionCounter(d.Metrics)}
	for _, l := range []string{DecisionDisaggregated, DecisionShortPrompt, DecisionCached, DecisionDecodeIdle, DecisionNoPrefill} {
		s.decisions.WithLabelValues(s.Name(), l)
	}
	s.preObs, _ = pre.(policy.Observer)
	s.decObs, _ = dec.(policy.Observer)
	if dynamic != nil {
		pc := *dynamic
		c.Scheduler.PrefixIndex = config.PrefixIndex{MaxBlocks: pc.PrefixIndexMaxBlocks, DefaultBlocks: pc.PrefixIndexDefaultBlocks}
		if x, ok := framework.Find[indexer](dec); ok && s.decObs != nil && x.Index() != nil {
			// The decode profile learns every destination it ranks first
			// (Picked below): exactly what disaggregate asks. A second
			// index would double the memory and the insert work. The
			// framework finds the index (prefix-cache's, or a profile's
			// prefix-cache-scorer's); no knowledge of the decode side's
			// type is needed.
			s.idx = x.Index()
		} else {
			s.idx, s.own = prefixindex.New(c.Scheduler.PrefixIndex.MaxBlocks), true
			if err := prefixindex.Register(d.Metrics, s.idx); err != nil {
				return nil, err
			}
		}
		s.minTokens = float64(pc.PDMinPrefillTokens)
		s.busyLoad = int64(pc.PDDecodeBusyLoad)
		s.size = prefixindex.NewSizing(c)
	}
	return s, nil
}

// indexer is a plugin that keeps a prefix index of the instances its
// profile picked (prefix-cache, prefix-cache-scorer).
type indexer interface {
	Index() *prefixindex.Index
}

// Name returns the configured name.
func (s *Split) Name() string {
	if s.dynamic {
		return DynamicName
	}
	return Name
}

// Pick ranks the decode candidates and, when the request is disaggregated,
// names its prefill instance.
func (s *Split) Pick(req *policy.Request, cands []*policy.Instance) policy.Decision {
	if len(cands) == 0 {
		return policy.Decision{}
	}
	s.pre, s.dec = s.pre[:0], s.dec[:0]
	for _, c := range cands {
		if c.Role != policy.RoleDecode {
			s.pre = append(s.pre, c)
		}
		if c.Role != policy.RolePrefill {
			s.dec = append(s.dec, c)
		}
	}
	if len(s.dec) == 0 {
		// Only prefill instances are available: one of them serves the
		// whole request rather than none.
		return s.decode.Pick(req, cands)
	}
	d := s.decode.Pick(req, s.dec)
	if len(d.Ranked) == 0 {
		return d
	}
	dest := d.Ranked[0]
	if s.dynamic {
		if why := s.disaggregate(req, dest); why != DecisionDisaggregated {
			s.decisions.WithLabelValues(DynamicName, why).Inc()
			return d
		}
	}
	pre := s.pre[:0] // filtered in place: writes never pass reads
	for _, c := range s.pre {
		if c != dest {
			pre = append(pre, c)
		}
	}
	if len(pre) > 0 {
		if pd := s.prefill.Pick(req, pre); len(pd.Ranked) > 0 {
			d.Prefill = pd.Ranked[0]
			s.decisions.WithLabelValues(s.Name(), DecisionDisaggregated).Inc()
			return d
		}
	}
	s.decisions.WithLabelValues(s.Name(), DecisionNoPrefill).Inc() // the destination prefills for itself
	return d
}

// disaggregate is dynamic-pd-split's rule: prefill elsewhere when at least
// pd_min_prefill_tokens prompt tokens are uncached on dest and dest runs at
// least pd_decode_busy_load requests. It returns DecisionDisaggregated or
// the reason dest prefills for itself.
func (s *Split) disaggregate(req *policy.Request, dest *policy.Instance) string {
	if dest.Load() < s.busyLoad {
		return DecisionDecodeIdle
	}
	prompt := s.size.PromptTokens(req.PromptTokens, req.Blocks(len(req.BlockHashes)), req.BlockChars)
	if prompt < s.minTokens {
		return DecisionShortPrompt // too short even when nothing is cached: skip the lookup
	}
	cached := 0.0
	if s.match(req.BlockHashes) > 0 {
		cached = float64(req.Blocks(s.idx.Matched(s.idx.Slot(dest.ID)))) * s.size.TokensPerBlock(req.BlockChars)
	}
	if prompt-cached < s.minTokens {
		return DecisionCached
	}
	return DecisionDisaggregated
}

// match looks hashes up in idx. The decode policy's index is read the way
// that policy reads it (MatchChain: the gateway's hashes are chained), so
// both agree on what the destination holds. The lookup only overwrites the
// index's per-lookup scratch, which prefix-cache reads within its own Pick
// and not across to its Picked (it keeps its last Pick's matches itself),
// so reading between the two does not change its decisions or learning
// (TestDynamicSharedIndexKeepsDecodeDecisions).
func (s *Split) match(hashes []uint64) int {
	if s.own {
		return s.idx.Match(hashes)
	}
	return s.idx.MatchChain(hashes)
}

// Picked forwards the decision: the decode policy learns the destination,
// the prefill policy its prefill instance. dynamic-pd-split's own index,
// when it keeps one, learns that both now hold the prompt (the KV cache
// moved to the destination); a shared one learns the destination from the
// decode policy, before the next Pick reads it.
func (s *Split) Picked(req *policy.Request, d policy.Decision) {
	if s.decObs != nil {
		s.decObs.Picked(req, policy.Decision{Ranked: d.Ranked})
	}
	if s.preObs != nil && d.Prefill != nil {
		s.preObs.Picked(req, policy.Decision{Ranked: []*policy.Instance{d.Prefill}})
	}
	if s.own && len(req.BlockHashes) > 0 {
		for _, c := range []*policy.Instance{first(d.Ranked), d.Prefill} {
			if c != nil {
				s.idx.Insert(c.ID, s.size.Capacity(c.NumGPUBlocks, c.BlockSize, req.BlockChars), req.BlockHashes)
			}
		}
	}
}

func first(xs []*policy.Instance) *policy.Instance {
	if len(xs) == 0 {
		return nil
	}
	return xs[0]
}

// Completed forwards to both sub-policies.
func (s *Split) Completed(reqID, instanceID string, promptTokens, completionTokens int64) {
	if s.decObs != nil {
		s.decObs.Completed(reqID, instanceID, promptTokens, completionTokens)
	}
	if s.preObs != nil {
		s.preObs.Completed(reqID, instanceID, promptTokens, completionTokens)
	}
}

// Removed forwards to both sub-policies and forgets the instance.
func (s *Split) Removed(id string) {
	if s.decObs != nil {
		s.decObs.Removed(id)
	}
	if s.preObs != nil {
		s.preObs.Removed(id)
	}
	if s.own { // a shared index is the decode policy's to forget
		s.idx.Remove(id)
	}
}

var _ policy.Observer = (*Split)(nil)
