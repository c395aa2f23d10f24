package scheduler

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// Decision outcomes (llmrouter_scheduler_decisions_total{outcome}).
const (
	outcomeRouted   = "routed"
	outcomeQueued   = "queued"
	outcomeRejected = "rejected"
)

// Fallback reasons (llmrouter_scheduler_fallbacks_total{reason}): a decision
// that is not the policy's free choice among unsaturated instances.
const (
	fallbackDefaultPool = "default_pool" // unknown model served by llm_scheduler.default_pool
	fallbackPolicyEmpty = "policy_empty" // the policy ranked nothing usable; candidates taken in order
	fallbackReplaced    = "duplicate_request_id"
)

// Shed reasons (llmrouter_scheduler_shed_total{reason}): requests rejected
// with 429 for want of capacity.
const (
	shedQueueTimeout = "queue_timeout" // waited out wait_schedule_timeout with every instance saturated
	shedQueueFull    = "queue_full"    // every instance saturated and llm_gateway.max_queue_size reached
)

// labelEngine labels the per-engine series with the engine's ip:port. Not
// "instance": Prometheus sets that on every scraped series (the scrape
// target), renames a clashing label to exported_instance, and a
// `sum by (instance)` would then merge the engines.
const labelEngine = "engine"

// fallbackReasons are the known fallback reasons, exported at 0 from start so
// that a rate over them (dashboard, alerts) exists on a healthy system.
var fallbackReasons = []string{fallbackDefaultPool, fallbackPolicyEmpty, fallbackReplaced}

type metrics struct {
	pickDuration *prometheus.HistogramVec
	decisions    *prometheus.CounterVec
	fallbacks    *prometheus.CounterVec
	shed         *prometheus.CounterVec
	queueWait    prometheus.Histogram
	queueLength  prometheus.Gauge
	queueCap     prometheus.Gauge
	instances    *prometheus.GaugeVec
	inflight     prometheus.Gauge

	kvUsage   *prometheus.GaugeVec
	running   *prometheus.GaugeVec
	waiting   *prometheus.GaugeVec
	promptTPS *prometheus.GaugeVec
	genTPS    *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer, queueCapacity int) *metrics {
	m := &metrics{
		pickDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "llmrouter_scheduler_pick_duration_seconds",
			Help:    "Time the scheduler spends deciding one pick (queue waiting excluded).",
			Buckets: []float64{5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2},
		}, []string{"policy"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrouter_scheduler_decisions_total",
			Help: "Pick decisions by policy and outcome (routed, queued, rejected, passthrough).",
		}, []string{"policy", "outcome"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrouter_scheduler_fallbacks_total",
			Help: "Decisions that were not the policy's free choice, by reason.",
		}, []string{"reason"}),
		shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrouter_scheduler_shed_total",
			Help: "Requests rejected with 429 for want of capacity, by reason (queue_timeout: every instance stayed saturated for wait_schedule_timeout; queue_full: max_queue_size reached).",
		}, []string{"reason"}),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "llmrouter_scheduler_queue_wait_seconds",
			Help:    "Time requests spent in the admission queue, until routed, rejected or cancelled.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60},
		}),
		queueLength: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmrouter_scheduler_queue_length",
			Help: "Requests waiting in the admission queue.",
		}),
		queueCap: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmrouter_scheduler_queue_capacity",
			Help: "Requests the admission queue holds at most (llm_gateway.max_queue_size); an alert compares the length with it.",
		}),
		instances: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "llmrouter_scheduler_instances",
			Help: "Registered engine instances by state (healthy, unhealthy, draining, verifying, silent).",
		}, []string{"state"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmrouter_scheduler_inflight_requests",
			Help: "Picks not yet reported complete by a gateway (nor expired).",
		}),
		kvUsage: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "llmrouter_instance_kv_cache_usage_ratio",
			Help: "KV cache usage reported by the instance, 0..1.",
		}, []string{labelEngine}),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "llmrouter_instance_running_requests",
			Help: "Requests the engine reported running.",
		}, []string{labelEngine}),
		waiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "llmrouter_instance_waiting_requests",
			Help: "Requests the engine reported waiting.",
		}, []string{labelEngine}),
		promptTPS: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "llmrouter_instance_prompt_tokens_per_second",
			Help: "Prompt (prefill) tokens per second over the last report interval.",
		}, []string{labelEngine}),
		genTPS: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "llmrouter_instance_generation_tokens_per_second",
			Help: "Generated tokens per second over the last report interval.",
		}, []string{labelEngine}),
	}
	if reg != nil {
		reg.MustRegister(m.pickDuration, m.decisions, m.fallbacks, m.shed, m.queueWait, m.queueLength, m.queueCap, m.instances,
			m.inflight, m.kvUsage, m.running, m.waiting, m.promptTPS, m.genTPS)
	}
	for _, r := range []string{shedQueueTimeout, shedQueueFull} {
		m.shed.WithLabelValues(r)
	}
	for _, st := range registry.States {
		m.instances.WithLabelValues(st).Set(0)
	}
	m.queueCap.Set(float64(queueCapacity))
	for _, r := range fallbackReasons {
		m.fallbacks.WithLabelValues(r)
	}
	return m
}

func (m *metrics) instanceReport(i *registry.Instance) {
	m.kvUsage.WithLabelValues(i.ID).Set(i.KVCacheUsage)
	m.running.WithLabelValues(i.ID).Set(float64(i.Running))
	m.waiting.WithLabelValues(i.ID).Set(float64(i.Waiting))
	m.promptTPS.WithLabelValues(i.ID).Set(i.PromptTPS)
	m.genTPS.WithLabelValues(i.ID).Set(i.GenTPS)
}

func (m *metrics) instanceGone(id string) {
	for _, v := range []*prometheus.GaugeVec{m.kvUsage, m.running, m.waiting, m.promptTPS, m.genTPS} {
		v.DeleteLabelValues(id)
	}
}
