package xds

import (
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	pushes      *prometheus.CounterVec
	nacks       *prometheus.CounterVec
	clients     prometheus.Gauge
	endpoints   prometheus.Gauge
	pushLatency prometheus.Histogram
	// unauthenticated counts calls refused for llm_scheduler.xds_token.
	unauthenticated prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrouter_xds_pushes_total",
			Help: "xDS responses sent to clients, by resource type.",
		}, []string{"type_url"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrouter_xds_nacks_total",
			Help: "xDS responses rejected by clients (requests carrying error_detail), by resource type.",
		}, []string{"type_url"}),
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmrouter_xds_connected_clients",
			Help: "Open xDS streams (state of the world and delta).",
		}),
		endpoints: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmrouter_xds_endpoints",
			Help: "Endpoints in the last pushed assignment of the engine cluster.",
		}),
		pushLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "llmrouter_xds_push_latency_seconds",
			Help:    "Time from an endpoint update entering the cache to its response being sent on a stream.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		unauthenticated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llmrouter_xds_unauthenticated_total",
			Help: "xDS calls refused for a missing or wrong llm_scheduler.xds_token.",
		}),
	}
	reg.MustRegister(m.pushes, m.nacks, m.clients, m.endpoints, m.pushLatency, m.unauthenticated)
	// The served types exist at 0 from start: the dashboard's and the
	// alerts' rates over pushes and NACKs have a series before the first.
	for _, t := range []string{resource.ClusterType, resource.EndpointType} {
		m.pushes.WithLabelValues(t)
		m.nacks.WithLabelValues(t)
	}
	return m
}
