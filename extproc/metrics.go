package extproc

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's series (ARCHITECTURE §7).
type metrics struct {
	requests         *prometheus.CounterVec // api, outcome
	passthrough      *prometheus.CounterVec // reason
	pending          prometheus.Gauge
	inflight         prometheus.Gauge
	ttft             prometheus.Histogram
	tpot             prometheus.Histogram
	promptTokens     prometheus.Counter
	completionTokens prometheus.Counter
	pickDuration     prometheus.Histogram
	responses        *prometheus.CounterVec // code class
	reportsDropped   prometheus.Counter
	reportErrors     prometheus.Counter
	trackerEvicted   *prometheus.CounterVec // reason
	registry         *prometheus.Registry
}

func newMetrics(reg *prometheus.Registry, degraded func() float64) *metrics {
	m := &metrics{
		registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrouter_gateway_requests_total",
			Help: "Requests seen by the blocking filter, by API and outcome (routed, rejected, passthrough, degraded).",
		}, []string{"api", "outcome"}),
		passthrough: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrouter_gateway_passthrough_total",
			Help: "Requests passed to Envoy without a pick (Envoy round-robins), by reason.",
		}, []string{"reason"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmrouter_gateway_pending_requests",
			Help: "Requests the gateway is holding while it waits for a pick (including admission-queue waits).",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "llmrouter_gateway_inflight_requests",
			Help: "Requests picked and not yet seen completing by the observability filter.",
		}),
		ttft: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "llmrouter_gateway_ttft_seconds",
			Help:    "Time from the request's arrival at the gateway to the first response body chunk.",
			Buckets: []float64{.01, .025, .05, .1, .2, .3, .5, .75, 1, 1.5, 2, 3, 5, 7.5, 10, 20, 30, 60},
		}),
		tpot: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "llmrouter_gateway_tpot_seconds",
			Help:    "Mean time per output token after the first, per request.",
			Buckets: []float64{.001, .0025, .005, .01, .015, .02, .03, .04, .05, .075, .1, .15, .2, .3, .5, 1},
		}),
		promptTokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llmrouter_gateway_prompt_tokens_total",
			Help: "Prompt tokens of completed requests (engine-reported usage, else the gateway's estimate).",
		}),
		completionTokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llmrouter_gateway_completion_tokens_total",
			Help: "Completion tokens of completed requests (engine-reported usage, else counted stream chunks).",
		}),
		pickDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "llmrouter_gateway_pick_duration_seconds",
			Help:    "Time the blocking filter spends on one request body: parse, hash, pick (including queue waits).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrouter_gateway_responses_total",
			Help: "Responses observed by the observability filter, by status class (2xx, 4xx, 5xx, reset).",
		}, []string{"code"}),
		reportsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llmrouter_gateway_reports_dropped_total",
			Help: "Outcome reports dropped because the report queue was full.",
		}),
		reportErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "llmrouter_gateway_report_errors_total",
			Help: "Outcome reports the scheduler did not accept.",
		}),
		trackerEvicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrouter_gateway_tracked_requests_evicted_total",
			Help: "Picked requests forgotten without a completion, by reason (expired, full).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.requests, m.passthrough, m.pending, m.inflight, m.ttft, m.tpot, m.promptTokens,
		m.completionTokens, m.pickDuration, m.responses, m.reportsDropped, m.reportErrors, m.trackerEvicted,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "llmrouter_gateway_degraded",
			Help: "1 while the scheduler is unreachable and requests pass through without a pick.",
		}, degraded))
	return m
}

// apiLabel names an API for metric labels.
func apiLabel(k int32) string {
	switch k {
	case 1:
		return "chat_completions"
	case 2:
		return "completions"
	case 3:
		return "embeddings"
	case 4:
		return "responses"
	case 5:
		return "websocket"
	}
	return "other"
}
