package registry

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/clip"
	"github.com/llmrouter/llmrouter/internal/reglimits"
	"github.com/llmrouter/llmrouter/scheduler/fleet"
)

// Instance states, as the llmrouter_scheduler_instances{state} metric names them.
const (
	// StateHealthy: reporting, healthy, verified: picked and published.
	StateHealthy = "healthy"
	// StateUnhealthy: its agent reports the engine down (confirmed down):
	// neither picked nor published.
	StateUnhealthy = "unhealthy"
	// StateDraining: the operator stopped new picks: neither picked nor
	// published.
	StateDraining = "draining"
	// StateVerifying: registered, but the advertised address has not yet
	// answered as the engine the agent described: neither picked nor
	// published.
	StateVerifying = "verifying"
	// StateSilent: its reports stopped (missed_reports intervals): not
	// picked, still published, until its engine is confirmed down or
	// silent_grace passes.
	StateSilent = "silent"
)

// States lists every state, for metrics that export each one.
var States = []string{StateHealthy, StateUnhealthy, StateDraining, StateVerifying, StateSilent}

// Instance is everything the registry knows of one engine instance.
type Instance struct {
	ID            string // the advertised address today
	Address       string // ip:port Envoy reaches the engine at
	Engine        string
	EngineVersion string
	AgentVersion  string
	Models        []string
	// LoRAs are the adapters the engine runs when its reports say
	// (Report.lora_state_known), else those it serves (registration's
	// /v1/models list, or the last report naming any); a report's names
	// outside Adapters are dropped, as they are from WaitingLoRAs.
	LoRAs        []string
	Role         fleet.Role
	NumGPUBlocks int64
	BlockSize    int64
	// WaitingLoRAs are adapters whose requests wait for the engine to load
	// them; MaxLoRA is how many adapters it runs at once, 0 when unknown
	// (Report.waiting_lora_adapters, Report.max_lora: every report says
	// them afresh).
	WaitingLoRAs []string
	MaxLoRA      int64
	// BootstrapPort is an SGLang prefill instance's KV bootstrap port, 0
	// when none (Register.bootstrap_port).
	BootstrapPort int32
	// Adapters are the LoRA adapters the engine serves under their own
	// model names (Register.lora_adapters, from /v1/models): requests
	// naming one are routed among the instances listing it. Which of them
	// run is LoRAs.
	Adapters []string
	// ReportInterval is the agent's; silence for MissedReports of them makes
	// the instance silent.
	ReportInterval time.Duration

	Healthy         bool
	UnhealthyReason string
	Draining        bool
	// Verified: the advertised address answered as the engine the agent
	// described (or verification is off).
	Verified bool
	// Silent: no report for MissedReports intervals, since SilentSince.
	Silent      bool
	SilentSince time.Time
	Registered  time.Time
	LastReport  time.Time

	// From the last report.
	Running             int64
	Waiting             int64
	KVCacheUsage        float64
	PromptTokensTotal   float64
	GenTokensTotal      float64
	PromptTPS           float64
	GenTPS              float64
	PrefixCacheHitRatio float64 // -1 when unknown
	Sequence            uint64
}

// State is one of the State* constants: draining wins over verifying, which
// wins over unhealthy, which wins over silent.
func (i *Instance) State() string {
	switch {
	case i.Draining:
		return StateDraining
	case !i.Verified:
		return StateVerifying
	case !i.Healthy:
		return StateUnhealthy
	case i.Silent:
		return StateSilent
	}
	return StateHealthy
}

// Routable reports whether the scheduler may pick the instance: healthy,
// verified, reporting and not draining.
func (i *Instance) Routable() bool { return i.Published() && !i.Silent }

// Published reports whether the instance belongs in Envoy's endpoint set:
// verified, not draining and not confirmed down. A silent instance stays
// published: silence is not death.
func (i *Instance) Published() bool { return i.Healthy && !i.Draining && i.Verified }

// Serves reports whether the instance serves model: a base model or a LoRA
// adapter it registered.
func (i *Instance) Serves(model string) bool {
	return slices.Contains(i.Models, model) || slices.Contains(i.Adapters, model)
}

// RoutableInstance is what the data plane needs of a published instance.
type RoutableInstance struct {
	ID      string
	Address string
	Models  []string
	Role    fleet.Role
}

// Errors wrapped by Register; the gRPC server maps them to status codes.
var (
	// ErrInvalid: the registration is malformed (address not ip:port, no model).
	ErrInvalid = errors.New("invalid registration")
	// ErrNotAllowed: the address lies outside llm_scheduler.allowed_cidrs.
	ErrNotAllowed = errors.New("address not allowed")
	// ErrUnknown: no such instance (or its lease was superseded).
	ErrUnknown = errors.New("unknown instance")
	// ErrTaken: another live registration holds the address.
	ErrTaken = errors.New("address already registered")
)

// DefaultReportInterval is assumed when an agent does not say its own.
const DefaultReportInterval = 200 * time.Millisecond

// commandBuffer bounds commands queued for one agent stream; a stream that
// does not read them is broken and its commands are dropped.
const commandBuffer = 8

// DefaultSilentGrace is how long a silent instance stays published when
// nothing confirms its engine down (llm_scheduler.silent_grace).
const DefaultSilentGrace = 30 * time.Second

// DefaultPanicThreshold is the share of the published fleet that may be
// silent at once before silence stops removing anyone
// (llm_scheduler.panic_threshold).
const DefaultPanicThreshold = 0.5

// Options configure a Registry.
type Options struct {
	Clock fleet.Clock
	// AllowedCIDRs restricts advertised addresses; empty allows any IP.
	AllowedCIDRs []netip.Prefix
	// AllowLoopback admits loopback addresses: only sensible when the
	// agents' API itself listens on loopback, so every agent runs on this
	// host and 127.0.0.1 means the same machine to Envoy.
	AllowLoopback bool
	// MissedReports of silence make an instance silent
	// (llm_scheduler.missed_reports).
	MissedReports int
	// SilentGrace removes an instance silent that long even though nothing
	// confirmed its engine down (llm_scheduler.silent_grace); 0 means
	// DefaultSilentGrace.
	SilentGrace time.Duration
	// PanicThreshold: while more than this share of the published
	// instances is silent, silence removes nobody (llm_scheduler.
	// panic_threshold); 0 means DefaultPanicThreshold, 1 or more disables.
	PanicThreshold float64
	// Verify makes new registrations wait in StateVerifying until
	// MarkVerified; false admits them verified.
	Verify bool
	Log    *zap.Logger
	// Metrics registers the registry's metrics; nil registers none.
	Metrics prometheus.Registerer
}

// Lease is one registration. Its Done channel closes when the instance is
// removed or re-registered by another stream; Commands carries drain/resume
// for the agent.
type Lease struct {
	ID       string
	Gen      uint64
	done     chan struct{}
	commands chan *llmrouterv1.Command
	reason   string // why done closed; written before close
	end      sync.Once
}

// Done closes when this registration ends.
func (l *Lease) Done() <-chan struct{} { return l.done }

// Commands delivers commands for the agent holding this lease.
func (l *Lease) Commands() <-chan *llmrouterv1.Command { return l.commands }

// Reason says why the lease ended; valid after Done closed.
func (l *Lease) Reason() string { return l.reason }

type entry struct {
	inst  Instance
	lease *Lease
	// cut: the report fields the last report named more of than the
	// registry keeps (reportField bits), so a cut is logged once when it
	// begins, not with every report.
	cut reportField
	// unserved: a report of this registration named adapters it does not
	// serve, already logged (once per registration).
	unserved bool
}

// unservedAdapters are the adapters a report named running or waiting that
// the registration does not list as served, dropped: per field, how many
// (0 when none) and the first of them, for the log.
type unservedAdapters struct {
	running, waiting int
	first            string
}

// reportField names the report fields the registry may cut.
type reportField uint8

const (
	cutLoRAs reportField = 1 << iota
	cutWaitingLoRAs
	cutReason
)

// reportFields are the fields a report may be cut in, as
// llmrouter_scheduler_report_truncated_total{field} names them.
var reportFields = []struct {
	bit  reportField
	name string
}{{cutLoRAs, "lora_adapters"}, {cutWaitingLoRAs, "waiting_lora_adapters"}, {cutReason, "unhealthy_reason"}}

func (f reportField) names() []string {
	var out []string
	for _, rf := range reportFields {
		if f&rf.bit != 0 {
			out = append(out, rf.name)
		}
	}
	return out
}

// Registry is safe for concurrent use.
type Registry struct {
	clock     fleet.Clock
	allowed   []netip.Prefix
	loopback  bool
	missed    int
	grace     time.Duration
	threshold float64
	verify    bool
	log       *zap.Logger
	truncated *prometheus.CounterVec
	unserved  *prometheus.CounterVec

	mu       sync.RWMutex
	entries  map[string]*entry
	gen      uint64
	panic    bool   // silence is over the panic threshold
	episodes uint64 // panics entered so far
	// resumed is when the owner last came back from a stall (Resumed):
	// silence counts from then at the earliest.
	resumed time.Time

	wmu      sync.Mutex
	watchers map[int]chan struct{}
	nextW    int
}

// New returns an empty registry.
func New(o Options) *Registry {
	if o.Clock == nil {
		o.Clock = fleet.SystemClock{}
	}
	if o.MissedReports < 1 {
		o.MissedReports = 3
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.SilentGrace <= 0 {
		o.SilentGrace = DefaultSilentGrace
	}
	if o.PanicThreshold <= 0 {
		o.PanicThreshold = DefaultPanicThreshold
	}
	r := &Registry{
		clock: o.Clock, allowed: o.AllowedCIDRs, loopback: o.AllowLoopback, missed: o.MissedReports,
		grace: o.SilentGrace, threshold: o.PanicThreshold, verify: o.Verify, log: o.Log,
		entries: map[string]*entry{}, watchers: map[int]chan struct{}{},
		truncated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrouter_scheduler_report_truncated_total",
			Help: "Agent reports (initial ones in registrations included) that named more than the registry keeps, by field: lora_adapters and waiting_lora_adapters past 1,024 names or 256 KiB, or holding a name over 1 KiB; unhealthy_reason past 1 KiB. The rest of the report is applied.",
		}, []string{"field"}),
	}
	r.unserved = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "llmrouter_scheduler_report_unserved_adapters_total",
		Help: "Agent reports (initial ones in registrations included) naming, by field, LoRA adapters running or waiting that the instance's registration does not list as served (lora_adapters, from the engine's /v1/models): those names are dropped, never routed on; the rest of the report is applied.",
	}, []string{"field"})
	for _, f := range reportFields {
		r.truncated.WithLabelValues(f.name)
	}
	for _, f := range []string{"lora_adapters", "waiting_lora_adapters"} {
		r.unserved.WithLabelValues(f)
	}
	if o.Metrics != nil {
		o.Metrics.MustRegister(r.truncated, r.unserved)
	}
	return r
}

// ParseCIDRs parses llm_scheduler.allowed_cidrs.
func ParseCIDRs(cidrs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("llm_scheduler.allowed_cidrs: %q: want a CIDR prefix such as 10.0.0.0/8", c)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// ValidateAddress checks an advertised address: an IP literal and a non-zero
// port (Envoy keys override_host by ip:port, so a host name can never match);
// never unspecified, link-local (169.254.169.254 is a cloud metadata
// service), multicast or broadcast; loopback only with AllowLoopback; and
// inside the allowed CIDRs when any are set.
func (r *Registry) ValidateAddress(addr string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Port() == 0 {
		return ap, fmt.Errorf("%w: address %q: want ip:port such as 10.0.0.5:8000 (host names are not accepted: Envoy matches picks by ip:port)", ErrInvalid, clip.Input(addr))
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	ip := ap.Addr()
	switch {
	case ip.IsUnspecified():
		return ap, fmt.Errorf("%w: address %q: an unspecified IP cannot be reached; advertise the instance's own IP", ErrInvalid, addr)
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return ap, fmt.Errorf("%w: address %q is link-local (169.254.0.0/16, fe80::/10): not an engine's address; advertise the instance's routable IP", ErrNotAllowed, addr)
	case ip.IsMulticast(), ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return ap, fmt.Errorf("%w: address %q is multicast or broadcast: advertise the instance's own unicast IP", ErrNotAllowed, addr)
	case ip.IsLoopback() && !r.loopback:
		return ap, fmt.Errorf("%w: address %q is loopback, accepted only while the scheduler's agent API (llm_scheduler.listen) listens on loopback; advertise the instance's routable IP", ErrNotAllowed, addr)
	}
	if len(r.allowed) > 0 {
		ok := false
		for _, p := range r.allowed {
			if p.Contains(ap.Addr()) {
				ok = true
				break
			}
		}
		if !ok {
			return ap, fmt.Errorf("%w: address %q is outside llm_scheduler.allowed_cidrs %v", ErrNotAllowed, addr, r.allowed)
		}
	}
	return ap, nil
}

// Register adds the instance reg describes and returns its lease. An address
// already registered is refused (ErrTaken) unless holder is that
// registration's current lease (the same agent re-registering) or the
// registration is silent (its agent is gone or stalled). A replaced lease
// ends (reason "replaced"); its drain carries over, and so does its
// verification when the engine and models are unchanged.
func (r *Registry) Register(reg *llmrouterv1.Register, holder *Lease) (*Lease, error) {
	if reg == nil {
		return nil, fmt.Errorf("%w: empty registration", ErrInvalid)
	}
	ap, err := r.ValidateAddress(reg.GetAddress())
	if err != nil {
		return nil, err
	}
	// Bounded before anything is copied: only gRPC's message size bounded
	// a registration before, room for a million names.
	if err := reglimits.CheckRegistration(reg.GetModels(), reg.GetLoraAdapters()); err != nil {
		return nil, fmt.Errorf("%w: instance %s: %v", ErrInvalid, ap, err)
	}
	for _, l := range []struct{ field, v string }{
		{"engine", reg.GetEngine()}, {"engine_version", reg.GetEngineVersion()}, {"agent_version", reg.GetAgentVersion()},
	} {
		if err := reglimits.CheckLabel(l.field, l.v); err != nil {
			return nil, fmt.Errorf("%w: instance %s: %v", ErrInvalid, ap, err)
		}
	}
	models := dedupe(reg.GetModels())
	if len(models) == 0 {
		return nil, fmt.Errorf("%w: instance %s lists no models: register the names /v1/models returns", ErrInvalid, reg.GetAddress())
	}
	if bp := reg.GetBootstrapPort(); bp < 0 || bp > 65535 {
		return nil, fmt.Errorf("%w: instance %s bootstrap_port %d: want 0 (none) or a port 1-65535", ErrInvalid, reg.GetAddress(), bp)
	}
	now := r.clock.Now()
	interval := reg.GetReportInterval().AsDuration()
	if interval <= 0 {
		interval = DefaultReportInterval
	}
	id := ap.String()
	// What it serves is what it runs until a report says otherwise; both
	// lists are replaced whole, never written, so they may share.
	adapters := dedupe(reg.GetLoraAdapters())
	inst := Instance{
		ID: id, Address: id, Engine: reg.GetEngine(), EngineVersion: reg.GetEngineVersion(),
		AgentVersion: reg.GetAgentVersion(), Models: models, LoRAs: adapters,
		Role: RoleFromProto(reg.GetRole()), NumGPUBlocks: reg.GetNumGpuBlocks(), BlockSize: reg.GetBlockSize(),
		BootstrapPort:  reg.GetBootstrapPort(),
		Adapters:       adapters,
		ReportInterval: interval, Healthy: true, Verified: !r.verify, Registered: now, LastReport: now, PrefixCacheHitRatio: -1,
	}
	var (
		cut      reportField
		unserved unservedAdapters
	)
	if ini := reg.GetInitial(); ini != nil {
		cut, unserved = applyReport(&inst, ini, now)
	}

	r.mu.Lock()
	old := r.entries[id]
	if old != nil && !old.inst.Silent && (holder == nil || holder.ID != id || holder.Gen != old.lease.Gen) {
		r.mu.Unlock()
		return nil, fmt.Errorf("%w: %s is held by a live registration (instance IDs are the advertised ip:port; one agent per engine address)", ErrTaken, id)
	}
	r.gen++
	lease := &Lease{ID: id, Gen: r.gen, done: make(chan struct{}), commands: make(chan *llmrouterv1.Command, commandBuffer)}
	if old != nil {
		// A drain is the operator's decision about the instance, not about
		// one registration of it: the new registration starts drained, so
		// no pick can reach it in between.
		inst.Draining = old.inst.Draining
		// The address answered as this engine with these models already;
		// an engine that came back the same needs no second check.
		if old.inst.Verified && old.inst.Engine == inst.Engine && slices.Equal(old.inst.Models, inst.Models) {
			inst.Verified = true
		}
	}
	r.entries[id] = &entry{inst: inst, lease: lease, cut: cut, unserved: unserved.running+unserved.waiting > 0}
	r.mu.Unlock()
	r.reportCut(id, 0, cut)
	r.reportUnserved(id, unserved, true)

	if old != nil {
		endLease(old.lease, "replaced by a new registration of "+id)
		r.log.Info("instance re-registered", zap.String("instance", id), zap.Uint64("gen", lease.Gen),
			zap.Strings("models", models), zap.Strings("lora_adapters", inst.Adapters))
	} else {
		r.log.Info("instance registered", zap.String("instance", id), zap.String("engine", inst.Engine),
			zap.Strings("models", models), zap.Strings("lora_adapters", inst.Adapters),
			zap.String("role", inst.Role.String()), zap.Bool("healthy", inst.Healthy))
	}
	r.notify()
	return lease, nil
}

// Report applies an agent report to instance id. gen, when non-zero, must
// match the current lease, so a superseded stream cannot overwrite its
// successor. It returns the instance as updated.
func (r *Registry) Report(id string, gen uint64, rep *llmrouterv1.Report) (Instance, error) {
	now := r.clock.Now()
	r.mu.Lock()
	e := r.entries[id]
	if e == nil || (gen != 0 && e.lease.Gen != gen) {
		r.mu.Unlock()
		return Instance{}, fmt.Errorf("%w: %s", ErrUnknown, id)
	}
	wasHealthy, wasSilent, wasCut := e.inst.Healthy, e.inst.Silent, e.cut
	var unserved unservedAdapters
	e.cut, unserved = applyReport(&e.inst, rep, now)
	first := unserved.running+unserved.waiting > 0 && !e.unserved
	e.unserved = e.unserved || first
	e.inst.Silent, e.inst.SilentSince = false, time.Time{}
	inst, cut := e.inst, e.cut
	r.mu.Unlock()
	r.reportCut(id, wasCut, cut)
	r.reportUnserved(id, unserved, first)
	if wasSilent {
		r.log.Info("instance reporting again", zap.String("instance", id))
		if wasHealthy == inst.Healthy {
			r.notify()
		}
	}
	if wasHealthy != inst.Healthy {
		if inst.Healthy {
			r.log.Info("instance healthy again", zap.String("instance", id))
		} else {
			r.log.Warn("instance unhealthy", zap.String("instance", id), zap.String("reason", inst.UnhealthyReason))
		}
		r.notify()
	}
	return inst, nil
}

// reportCut counts the fields a report of instance id was cut in, and logs
// when the cut fields change (was: the previous report's).
func (r *Registry) reportCut(id string, was, cut reportField) {
	for _, f := range reportFields {
		if cut&f.bit != 0 {
			r.truncated.WithLabelValues(f.name).Inc()
		}
	}
	switch {
	case cut == was:
	case cut != 0:
		r.log.Warn("agent report names more than the scheduler keeps; the rest is applied",
			zap.String("instance", id), zap.Strings("truncated", cut.names()),
			zap.Int("max_names", reglimits.MaxNames), zap.Int("max_names_bytes", reglimits.MaxNamesBytes),
			zap.Int("max_name_bytes", reglimits.MaxNameBytes), zap.Int("max_reason_bytes", reglimits.MaxReasonBytes))
	default:
		r.log.Info("agent reports within the scheduler's bounds again", zap.String("instance", id))
	}
}

// reportUnserved counts a report that named adapters its registration does
// not serve, and logs it when log (the registration's first such report).
func (r *Registry) reportUnserved(id string, u unservedAdapters, log bool) {
	if u.running > 0 {
		r.unserved.WithLabelValues("lora_adapters").Inc()
	}
	if u.waiting > 0 {
		r.unserved.WithLabelValues("waiting_lora_adapters").Inc()
	}
	if log && u.running+u.waiting > 0 {
		r.log.Warn("agent report names LoRA adapters the instance did not register as served; they are dropped, not routed on (logged once per registration)",
			zap.String("instance", id), zap.Int("running_dropped", u.running), zap.Int("waiting_dropped", u.waiting),
			zap.String("first", clip.Input(u.first)))
	}
}

// applyReport applies rep to i. Reports are not refused for naming too
// much: that would make a healthy engine unroutable (degrade, never fail).
// Each name list keeps its leading names within reglimits' bounds (names
// over MaxNameBytes are skipped, never shortened into another name), the
// reason is cut; the fields cut are returned. The adapters it names running
// or waiting must be ones the registration serves (i.Adapters); others are
// dropped and returned. What routing and the policies see of an instance's
// adapters is then only what its registration vouched for: vLLM's newest
// lora_requests_info series naming an adapter, which the agent reads, may still
// name one unloaded at runtime, and an agent's report may name anything.
func applyReport(i *Instance, rep *llmrouterv1.Report, now time.Time) (cut reportField, u unservedAdapters) {
	lora, dropped := reglimits.Names(rep.GetLoraAdapters(), 0, 0)
	if dropped > 0 {
		cut |= cutLoRAs
	}
	waiting, dropped := reglimits.Names(rep.GetWaitingLoraAdapters(), 0, 0)
	if dropped > 0 {
		cut |= cutWaitingLoRAs
	}
	lora, u.running, u.first = servedOnly(lora, i.Adapters)
	var firstWaiting string
	if waiting, u.waiting, firstWaiting = servedOnly(waiting, i.Adapters); u.first == "" {
		u.first = firstWaiting
	}
	reason := rep.GetUnhealthyReason()
	if len(reason) > reglimits.MaxReasonBytes {
		reason, cut = clip.Prefix(reason, reglimits.MaxReasonBytes), cut|cutReason
	}
	i.Healthy = rep.GetHealthy()
	i.UnhealthyReason = reason
	i.Running = max(rep.GetRunning(), 0)
	i.Waiting = max(rep.GetWaiting(), 0)
	i.KVCacheUsage = min(max(rep.GetKvCacheUsage(), 0), 1)
	i.PromptTokensTotal = rep.GetPromptTokensTotal()
	i.GenTokensTotal = rep.GetGenerationTokensTotal()
	i.PromptTPS = rep.GetPromptTokensPerSecond()
	i.GenTPS = rep.GetGenerationTokensPerSecond()
	i.PrefixCacheHitRatio = rep.GetPrefixCacheHitRatio()
	// An engine that says which adapters it runs is taken at its word, none
	// included. One that does not (every engine but vLLM) names, if
	// anything, the adapters it serves, which registration already gave:
	// an empty list keeps them.
	if rep.GetLoraStateKnown() || len(lora) > 0 {
		i.LoRAs = dedupe(lora)
	}
	i.WaitingLoRAs = dedupe(waiting)
	i.MaxLoRA = max(rep.GetMaxLora(), 0)
	i.Sequence = rep.GetSequence()
	i.LastReport = now
	return cut, u
}

// servedOnly returns the names of names that served holds, in order, how
// many it left out and the first of those. names and served are bounded
// (reglimits: 1,024 each): a set replaces the scan when both are long.
func servedOnly(names, served []string) (kept []string, dropped int, first string) {
	var set map[string]struct{}
	if len(names)*len(served) > 1024 {
		set = make(map[string]struct{}, len(served))
		for _, s := range served {
			set[s] = struct{}{}
		}
	}
	for k, n := range names {
		ok := false
		if set != nil {
			_, ok = set[n]
		} else {
			ok = slices.Contains(served, n)
		}
		switch {
		case ok && dropped > 0:
			kept = append(kept, n)
		case ok:
		case dropped == 0:
			first, kept = n, append(make([]string, 0, len(names)-1), names[:k]...)
			dropped++
		default:
			dropped++
		}
	}
	if dropped == 0 {
		return names, 0, ""
	}
	return kept, dropped, first
}

// Remove takes instance id out of the registry. gen, when non-zero, must
// match the current lease (a closed, superseded stream removes nothing).
func (r *Registry) Remove(id string, gen uint64, reason string) (Instance, bool) {
	r.mu.Lock()
	e := r.entries[id]
	if e == nil || (gen != 0 && e.lease.Gen != gen) {
		r.mu.Unlock()
		return Instance{}, false
	}
	delete(r.entries, id)
	r.mu.Unlock()
	endLease(e.lease, reason)
	r.log.Info("instance removed", zap.String("instance", id), zap.String("reason", reason))
	r.notify()
	return e.inst, true
}

// Resumed tells the registry its owner has just come back from a stall: it
// did not run for a while (CPU starvation, CPU throttling, a long pause), so
// the reports agents sent meanwhile still wait on its sockets, unread. An
// instance's silence counts from at onwards: judged at once, every
// instance looked silent together the moment the owner ran again.
func (r *Registry) Resumed(at time.Time) {
	r.mu.Lock()
	r.resumed = at
	r.mu.Unlock()
}

// Sweep is the registry's housekeeping at the clock's now. An instance
// that missed MissedReports of its report intervals turns silent: no longer
// picked, still published. A silent instance is removed after SilentGrace,
// unless more than PanicThreshold of the published instances are silent at
// once: then silence removes nobody, since a stall of the agents (or of
// this scheduler) is far likelier than that many engines dying together.
// Sweep returns the instances that turned silent and those removed.
func (r *Registry) Sweep() SweepResult {
	now := r.clock.Now()
	var res SweepResult
	var gone []*entry
	r.mu.Lock()
	published, silent := 0, 0
	for _, e := range r.entries {
		quiet := min(now.Sub(e.inst.LastReport), now.Sub(r.resumed))
		if !e.inst.Silent && quiet >= time.Duration(r.missed)*e.inst.ReportInterval {
			e.inst.Silent, e.inst.SilentSince = true, now
			res.Silenced = append(res.Silenced, e.inst)
		}
		if e.inst.Published() {
			published++
			if e.inst.Silent {
				silent++
			}
		}
	}
	wasPanic := r.panic
	r.panic = published > 0 && float64(silent) > r.threshold*float64(published)
	if r.panic && !wasPanic {
		r.episodes++
	}
	res.Panic, res.PanicChanged, res.SilentPublished, res.Published = r.panic, r.panic != wasPanic, silent, published
	if !r.panic {
		for id, e := range r.entries {
			if e.inst.Silent && now.Sub(e.inst.SilentSince) >= r.grace {
				gone = append(gone, e)
				delete(r.entries, id)
			}
		}
	}
	r.mu.Unlock()

	switch {
	case res.PanicChanged && res.Panic:
		r.log.Warn("membership panic: most of the fleet went silent at once; keeping every instance published until they report again or their engines are confirmed down",
			zap.Int("silent", silent), zap.Int("published", published), zap.Float64("panic_threshold", r.threshold))
	case res.PanicChanged:
		r.log.Info("membership panic over", zap.Int("silent", silent), zap.Int("published", published))
	}
	for _, i := range res.Silenced {
		r.log.Warn("instance silent: not picked until it reports again; still published", zap.String("instance", i.ID),
			zap.Int("missed_reports", r.missed), zap.Duration("since_last_report", now.Sub(i.LastReport)))
	}
	sort.Slice(res.Silenced, func(a, b int) bool { return res.Silenced[a].ID < res.Silenced[b].ID })
	for _, e := range gone {
		reason := fmt.Sprintf("silent for %s (llm_scheduler.silent_grace) and not confirmed alive", now.Sub(e.inst.SilentSince))
		endLease(e.lease, reason)
		r.log.Warn("instance removed", zap.String("instance", e.inst.ID), zap.String("reason", reason))
		res.Removed = append(res.Removed, e.inst)
	}
	sort.Slice(res.Removed, func(a, b int) bool { return res.Removed[a].ID < res.Removed[b].ID })
	if len(res.Silenced) > 0 || len(res.Removed) > 0 {
		r.notify()
	}
	return res
}

// SweepResult is what one Sweep changed.
type SweepResult struct {
	Silenced []Instance // turned silent in this sweep
	Removed  []Instance // silent past SilentGrace, removed
	// Panic: more than PanicThreshold of the published instances are
	// silent; PanicChanged: this sweep entered or left that state.
	Panic, PanicChanged bool
	// SilentPublished of Published instances are silent.
	SilentPublished, Published int
}

// Panic reports whether the registry is in a panic episode, and how many
// episodes began so far.
func (r *Registry) Panic() (active bool, episodes uint64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.panic, r.episodes
}

// ConfirmDown removes a silent instance whose engine the scheduler's own
// probe found down. gen must match the current lease. During a panic episode
// it removes nothing: when most of the fleet looks dead at once the probe's
// own path (this host, its network) is the likelier culprit.
func (r *Registry) ConfirmDown(id string, gen uint64, reason string) (Instance, bool) {
	r.mu.Lock()
	e := r.entries[id]
	if e == nil || e.lease.Gen != gen || !e.inst.Silent || r.panic {
		inPanic := r.panic
		r.mu.Unlock()
		if inPanic && e != nil {
			r.log.Warn("instance probe failed during membership panic; kept published", zap.String("instance", id), zap.String("reason", reason))
		}
		return Instance{}, false
	}
	delete(r.entries, id)
	r.mu.Unlock()
	reason = "engine confirmed down: " + reason
	endLease(e.lease, reason)
	r.log.Warn("instance removed", zap.String("instance", id), zap.String("reason", reason))
	r.notify()
	return e.inst, true
}

// Orphan ends registration id's lease (gen must match) without removing the
// instance: its agent's stream ended — the agent was stopped, killed or cut
// off — which says nothing about the engine. The instance turns silent at
// once: not picked, still published if it was, until its engine is
// confirmed down, silent_grace passes, or an agent registers the address
// again (a silent registration may be replaced).
func (r *Registry) Orphan(id string, gen uint64, reason string) (Instance, bool) {
	now := r.clock.Now()
	r.mu.Lock()
	e := r.entries[id]
	if e == nil || e.lease.Gen != gen {
		r.mu.Unlock()
		return Instance{}, false
	}
	if !e.inst.Silent {
		e.inst.Silent, e.inst.SilentSince = true, now
	}
	inst := e.inst
	r.mu.Unlock()
	endLease(e.lease, reason)
	r.log.Info("instance's agent stream ended: silent until it registers again or its engine is confirmed down",
		zap.String("instance", id), zap.String("reason", reason))
	r.notify()
	return inst, true
}

// MarkVerified admits a verifying instance: its address answered as the
// engine its agent described. gen must match the current lease.
func (r *Registry) MarkVerified(id string, gen uint64) (Instance, bool) {
	r.mu.Lock()
	e := r.entries[id]
	if e == nil || e.lease.Gen != gen || e.inst.Verified {
		r.mu.Unlock()
		return Instance{}, false
	}
	e.inst.Verified = true
	inst := e.inst
	r.mu.Unlock()
	r.log.Info("instance verified", zap.String("instance", id), zap.String("engine", inst.Engine), zap.Strings("models", inst.Models))
	r.notify()
	return inst, true
}

// SetDraining marks instance id draining (no new picks) or not, and sends
// the matching command to its agent. It reports whether the state changed.
func (r *Registry) SetDraining(id string, draining bool, reason string) (bool, error) {
	r.mu.Lock()
	e := r.entries[id]
	if e == nil {
		r.mu.Unlock()
		return false, fmt.Errorf("%w: %s", ErrUnknown, id)
	}
	changed := e.inst.Draining != draining
	e.inst.Draining = draining
	lease := e.lease
	r.mu.Unlock()
	kind := llmrouterv1.Command_KIND_RESUME
	if draining {
		kind = llmrouterv1.Command_KIND_DRAIN
	}
	r.send(lease, &llmrouterv1.Command{Kind: kind, Reason: reason})
	if changed {
		r.log.Info("instance drain state", zap.String("instance", id), zap.Bool("draining", draining), zap.String("reason", reason))
		r.notify()
	}
	return changed, nil
}

// Send queues a command for instance id's agent without blocking.
func (r *Registry) Send(id string, cmd *llmrouterv1.Command) error {
	r.mu.RLock()
	e := r.entries[id]
	r.mu.RUnlock()
	if e == nil {
		return fmt.Errorf("%w: %s", ErrUnknown, id)
	}
	r.send(e.lease, cmd)
	return nil
}

func (r *Registry) send(l *Lease, cmd *llmrouterv1.Command) {
	select {
	case l.commands <- cmd:
	default:
		r.log.Warn("agent command dropped: stream not reading", zap.String("instance", l.ID), zap.String("command", cmd.GetKind().String()))
	}
}

// endLease ends l once: an orphaned registration's lease ended with its
// stream and ends again, as a no-op, when the instance is removed.
func endLease(l *Lease, reason string) {
	l.end.Do(func() {
		l.reason = reason
		close(l.done)
	})
}

// Get returns instance id.
func (r *Registry) Get(id string) (Instance, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e := r.entries[id]
	if e == nil {
		return Instance{}, false
	}
	return e.inst, true
}

// Len is the number of registered instances.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.entries)
}

// List returns every registered instance, sorted by ID.
func (r *Registry) List() []Instance {
	r.mu.RLock()
	out := make([]Instance, 0, len(r.entries))
	for _, e := range r.entries {
		out = append(out, e.inst)
	}
	r.mu.RUnlock()
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// Published returns the instances that belong in Envoy's endpoint set
// (Instance.Published: silent ones included), sorted by ID.
func (r *Registry) Published() []RoutableInstance {
	r.mu.RLock()
	out := make([]RoutableInstance, 0, len(r.entries))
	for _, e := range r.entries {
		if e.inst.Published() {
			out = append(out, RoutableInstance{ID: e.inst.ID, Address: e.inst.Address, Models: e.inst.Models, Role: e.inst.Role})
		}
	}
	r.mu.RUnlock()
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// Watch returns a channel that receives a (coalesced) signal after every
// change of membership or of an instance's state (health, draining,
// verified, silent) — the changes that alter the published set. Load reports alone do not signal. The
// registry never blocks on a watcher: a signal not yet consumed absorbs the
// next ones. cancel stops the signals.
func (r *Registry) Watch() (changed <-chan struct{}, cancel func()) {
	ch := make(chan struct{}, 1)
	r.wmu.Lock()
	id := r.nextW
	r.nextW++
	r.watchers[id] = ch
	r.wmu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			r.wmu.Lock()
			delete(r.watchers, id)
			r.wmu.Unlock()
		})
	}
}

func (r *Registry) notify() {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	for _, ch := range r.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// RoleFromProto maps the wire role; unspecified means both.
func RoleFromProto(r llmrouterv1.Role) fleet.Role {
	switch r {
	case llmrouterv1.Role_ROLE_PREFILL:
		return fleet.RolePrefill
	case llmrouterv1.Role_ROLE_DECODE:
		return fleet.RoleDecode
	}
	return fleet.RoleBoth
}

// dedupe drops empty and repeated names, keeping the order. Lists are
// bounded (reglimits.MaxNames) before they get here; past a few names a set
// keeps it linear.
func dedupe(xs []string) []string {
	out := make([]string, 0, len(xs))
	var seen map[string]struct{}
	if len(xs) > 16 {
		seen = make(map[string]struct{}, len(xs))
	}
	for _, x := range xs {
		if x == "" {
			continue
		}
		if seen != nil {
			if _, ok := seen[x]; ok {
				continue
			}
			seen[x] = struct{}{}
		} else if slices.Contains(out, x) {
			continue
		}
		out = append(out, x)
	}
	return out
}
