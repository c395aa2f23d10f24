package scheduler

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// Verifier checks that inst's advertised address answers as the engine its
// agent described; an error says why not (scheduler/verify implements it).
type Verifier func(ctx context.Context, inst registry.Instance) error

// Prober asks a silent instance's address whether its engine still answers;
// an error confirms the engine down.
type Prober func(ctx context.Context, address string) error

// ProbeInterval is how often a silent instance's address is probed.
const ProbeInterval = time.Second

// Verification retries: a registration whose address does not (yet) answer
// as its engine waits in StateVerifying and is checked again, backing off.
const (
	verifyBackoffMin = 250 * time.Millisecond
	verifyBackoffMax = 15 * time.Second
)

// outcomePassthrough: every candidate was silent, the gateway was told to
// let Envoy balance (llmrouter_scheduler_decisions_total{outcome}).
const outcomePassthrough = "passthrough"

// memberMetrics are the membership's own metrics.
type memberMetrics struct {
	panic         prometheus.Gauge
	episodes      prometheus.Counter
	verifications *prometheus.CounterVec
	probes        *prometheus.CounterVec
}

func newMemberMetrics(reg prometheus.Registerer) *memberMetrics {
	m := &memberMetrics{
		panic: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmrouter_scheduler_membership_panic",
			Help: "1 while more than llm_scheduler.panic_threshold of the published instances are silent: silence removes nobody. Alert on it.",
		}),
		episodes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llmrouter_scheduler_membership_panic_episodes_total",
			Help: "Times the membership entered panic (too much of the fleet silent at once).",
		}),
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrouter_scheduler_engine_verifications_total",
			Help: "Checks that a registration's address answers as the engine its agent described, by result (verified, failed).",
		}, []string{"result"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrouter_scheduler_silent_probes_total",
			Help: "Probes of silent instances' addresses, by result (alive, down).",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.panic, m.episodes, m.verifications, m.probes)
	}
	// Exported at 0 from start: an alert on a series that does not exist
	// yet never fires.
	for _, r := range []string{"verified", "failed"} {
		m.verifications.WithLabelValues(r)
	}
	for _, r := range []string{"alive", "down"} {
		m.probes.WithLabelValues(r)
	}
	return m
}

// sweep applies the registry's silence bookkeeping under mu and starts the
// probes of silent, published instances.
func (s *Scheduler) sweep(now time.Time) {
	res := s.reg.Sweep()
	for i := range res.Silenced {
		if in := s.insts[res.Silenced[i].ID]; in != nil {
			s.mirror(in, &res.Silenced[i])
		}
	}
	for _, ri := range res.Removed {
		s.forget(ri.ID)
	}
	if res.PanicChanged {
		if res.Panic {
			s.mm.panic.Set(1)
			s.mm.episodes.Inc()
		} else {
			s.mm.panic.Set(0)
		}
	}
	if len(res.Silenced) > 0 {
		s.instanceStates()
		// A queued request whose candidates all fell silent passes through
		// now rather than at its deadline.
		s.capacityChanged()
	}
	if s.probe == nil {
		return
	}
	for id, in := range s.insts {
		if !in.silent || !in.published() || in.probing || now.Before(in.nextProbe) {
			continue
		}
		in.probing = true
		go s.probeSilent(id, in.gen, in.view.Address)
	}
}

// probeSilent runs one probe of a silent instance outside the lock; a
// failure confirms the engine down and removes the instance (the registry
// refuses during a panic episode).
func (s *Scheduler) probeSilent(id string, gen uint64, addr string) {
	err := s.probe(context.Background(), addr)
	s.mu.Lock()
	defer s.unlock()
	in := s.insts[id]
	if in == nil || in.gen != gen {
		return
	}
	in.probing = false
	in.nextProbe = s.clock.Now().Add(ProbeInterval)
	if err == nil {
		s.mm.probes.WithLabelValues("alive").Inc()
		return
	}
	s.mm.probes.WithLabelValues("down").Inc()
	if _, ok := s.reg.ConfirmDown(id, gen, "probe of "+addr+": "+err.Error()); ok {
		s.forget(id)
	}
}

// verifyLoop checks a new registration until its address answers as the
// engine its agent described, or the registration ends. Until then the
// instance waits in StateVerifying: neither picked nor published, and not
// lost.
func (s *Scheduler) verifyLoop(lease *registry.Lease, ri registry.Instance) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-lease.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	backoff, said := verifyBackoffMin, ""
	for {
		err := s.verify(ctx, ri)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			s.mm.verifications.WithLabelValues("verified").Inc()
			s.verified(lease)
			return
		}
		s.mm.verifications.WithLabelValues("failed").Inc()
		if msg := err.Error(); msg != said {
			// Once per distinct reason: a rogue or misconfigured agent is
			// checked again and again, the log says it once.
			said = msg
			s.log.Warn("instance not verified: kept out of picks and EDS; checking again", zap.String("instance", ri.ID),
				zap.String("engine", ri.Engine), zap.Strings("models", ri.Models), zap.Error(err), zap.Duration("retry_in", backoff))
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, verifyBackoffMax)
	}
}

// verified admits a verified registration to picks (the registry's notify
// admits it to EDS).
func (s *Scheduler) verified(lease *registry.Lease) {
	s.mu.Lock()
	defer s.unlock()
	ri, ok := s.reg.MarkVerified(lease.ID, lease.Gen)
	in := s.insts[lease.ID]
	if !ok || in == nil || in.gen != lease.Gen {
		return
	}
	s.mirror(in, &ri)
	s.instanceStates()
	s.capacityChanged()
}

// passthrough answers a request whose candidates are all silent: they are
// still in Envoy's endpoint set and their engines are most likely fine, but
// the scheduler no longer knows their load, so Envoy balances.
func (s *Scheduler) passthrough(model string) *llmrouterv1.PickResponse {
	s.m.decisions.WithLabelValues(s.pol.Name(), outcomePassthrough).Inc()
	return &llmrouterv1.PickResponse{
		Status: llmrouterv1.PickResponse_PASSTHROUGH, Policy: s.pol.Name(),
		Reason: fmt.Sprintf("every instance serving model %q is silent (no report for llm_scheduler.missed_reports intervals); Envoy balances over the published endpoints", model),
	}
}
