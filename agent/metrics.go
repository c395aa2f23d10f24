package agent

import (
	"github.com/prometheus/client_golang/prometheus"
)

// agentMetrics are the agent's own Prometheus series (ARCHITECTURE §7).
type agentMetrics struct {
	scrapeErrors   *prometheus.CounterVec
	scrapeDuration prometheus.Histogram
	connected      prometheus.Gauge
	engineHealthy  prometheus.Gauge
	draining       prometheus.Gauge
	registrations  prometheus.Counter
	reports        prometheus.Counter
	reconnects     prometheus.Counter
	engineRequests *prometheus.GaugeVec
	engineKV       prometheus.Gauge
}

func newAgentMetrics(reg prometheus.Registerer) *agentMetrics {
	m := &agentMetrics{
		scrapeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrouter_agent_scrape_errors_total",
			Help: "Failed engine probes by kind: health (health endpoint), metrics (fetching /metrics), parse (not Prometheus text), models (/v1/models).",
		}, []string{"kind"}),
		scrapeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "llmrouter_agent_scrape_duration_seconds",
			Help:    "Time to probe the engine's health and scrape its metrics once.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmrouter_agent_scheduler_connected",
			Help: "1 while the agent holds a registered stream to the scheduler.",
		}),
		engineHealthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmrouter_agent_engine_healthy",
			Help: "1 while the engine answers its health check and serves parsable metrics.",
		}),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmrouter_agent_draining",
			Help: "1 after the scheduler told this instance to drain, until it resumes it.",
		}),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llmrouter_agent_registrations_total",
			Help: "Register messages sent to the scheduler (first connection, reconnects, engine recoveries, scheduler requests).",
		}),
		reports: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llmrouter_agent_reports_total",
			Help: "Reports sent to the scheduler.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llmrouter_agent_scheduler_reconnects_total",
			Help: "Scheduler streams that ended and were dialled again.",
		}),
		engineRequests: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "llmrouter_agent_engine_requests",
			Help: "Requests the engine last reported, by state (running, waiting).",
		}, []string{"state"}),
		engineKV: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmrouter_agent_engine_kv_cache_usage_ratio",
			Help: "KV cache usage the engine last reported, 0..1.",
		}),
	}
	reg.MustRegister(m.scrapeErrors, m.scrapeDuration, m.connected, m.engineHealthy, m.draining,
		m.registrations, m.reports, m.reconnects, m.engineRequests, m.engineKV)
	for _, k := range []string{"health", "metrics", "parse", "models"} {
		m.scrapeErrors.WithLabelValues(k)
	}
	return m
}
