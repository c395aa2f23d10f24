package extproc

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's series (ARCHITECTURE §7).
type metrics struct {
	requests         *prometheus.CounterVec // api, outcome, model
	passthrough      *prometheus.CounterVec // reason
	pending          prometheus.Gauge
	inflight         prometheus.Gauge
	ttft             *prometheus.HistogramVec // model
	tpot             *prometheus.HistogramVec // model
	promptTokens     *prometheus.CounterVec   // model
	completionTokens *prometheus.CounterVec   // model
	pickDuration     prometheus.Histogram
	responses        *prometheus.CounterVec // code class
	reportsDropped   prometheus.Counter
	reportErrors     prometheus.Counter
	trackerEvicted   *prometheus.CounterVec // reason
	picksReleased    *prometheus.CounterVec // reason
	registry         *prometheus.Registry
	models           modelLabels
}

func newMetrics(reg *prometheus.Registry, degraded, unauthenticated func() float64) *metrics {
	m := &metrics{
		registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrouter_gateway_requests_total",
			Help: "Requests seen by the blocking filter, by API (models: GET /v1/models), outcome (routed, rejected, passthrough, degraded; answered: the gateway answered GET /v1/models with the fleet's list) and model (\"other\" for models the fleet does not serve, and for GET /v1/models).",
		}, []string{"api", "outcome", "model"}),
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
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "llmrouter_gateway_ttft_seconds",
			Help:    "Time from the request's arrival at the gateway to the first response body chunk.",
			Buckets: []float64{.01, .025, .05, .1, .2, .3, .5, .75, 1, 1.5, 2, 3, 5, 7.5, 10, 20, 30, 60},
		}, []string{"model"}),
		tpot: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "llmrouter_gateway_tpot_seconds",
			Help:    "Mean time per output token after the first, per request.",
			Buckets: []float64{.001, .0025, .005, .01, .015, .02, .03, .04, .05, .075, .1, .15, .2, .3, .5, 1},
		}, []string{"model"}),
		promptTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrouter_gateway_prompt_tokens_total",
			Help: "Prompt tokens of completed requests (engine-reported usage, else the gateway's estimate), by model.",
		}, []string{"model"}),
		completionTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrouter_gateway_completion_tokens_total",
			Help: "Completion tokens of completed requests (engine-reported usage, else counted stream chunks), by model.",
		}, []string{"model"}),
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
		picksReleased: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "llmrouter_gateway_picks_released_total",
			Help: "Picks released at the scheduler without a response outcome, by reason: pick_failed (a timeout or cancel may have lost a committed answer), answer_lost (the answer never reached Envoy), no_response (the request ended before any response).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.requests, m.passthrough, m.pending, m.inflight, m.ttft, m.tpot, m.promptTokens,
		m.completionTokens, m.pickDuration, m.responses, m.reportsDropped, m.reportErrors, m.trackerEvicted, m.picksReleased,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "llmrouter_gateway_degraded",
			Help: "1 while the scheduler is unreachable and requests pass through without a pick.",
		}, degraded),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "llmrouter_gateway_unauthenticated",
			Help: "1 while the scheduler refuses this gateway's token: requests pass through without a pick.",
		}, unauthenticated))
	// Series the dashboard and the alerts read exist from start, so a
	// healthy system shows 0 rather than no data.
	for _, r := range passthroughReasons {
		m.passthrough.WithLabelValues(r)
	}
	for _, r := range []string{releasePickFailed, releaseAnswerLost, releaseNoResponse} {
		m.picksReleased.WithLabelValues(r)
	}
	for _, v := range []*prometheus.CounterVec{m.promptTokens, m.completionTokens} {
		v.WithLabelValues(modelOther)
	}
	return m
}

// Reasons of llmrouter_gateway_picks_released_total.
const (
	releasePickFailed = "pick_failed"
	releaseAnswerLost = "answer_lost"
	releaseNoResponse = "no_response"
)

// passthroughReasons are the known llmrouter_gateway_passthrough_total
// reasons (a 4xx/5xx the gateway does not turn into an answer adds
// rejected_<code>).
var passthroughReasons = []string{"degraded", "cancelled", "scheduler_error", "no_endpoint", "no_model",
	"bad_body", "body_not_buffered", "bad_pick_status", "scheduler_passthrough", "models_unlisted"}

// modelOther labels requests for models the fleet does not serve (as far as
// the gateway has learnt), keeping the model label bounded.
const modelOther = "other"

// maxModelLabels bounds the model label's values even when the fleet's
// models change over time: past it, new models are counted as "other".
const maxModelLabels = 64

// modelLabels is the set of models the scheduler confirmed served (a routed
// or queued answer whose pool is the request's model). Only those become
// model label values; anything a client makes up stays "other".
type modelLabels struct {
	mu  sync.RWMutex
	set map[string]struct{}
}

// served records that the fleet serves model.
func (l *modelLabels) served(model string) {
	if model == "" || model == modelOther {
		return
	}
	l.mu.RLock()
	_, ok := l.set[model]
	n := len(l.set)
	l.mu.RUnlock()
	if ok || n >= maxModelLabels {
		return
	}
	l.mu.Lock()
	if l.set == nil {
		l.set = map[string]struct{}{}
	}
	if len(l.set) < maxModelLabels {
		l.set[model] = struct{}{}
	}
	l.mu.Unlock()
}

// label is model's label value: itself when served, else "other".
func (l *modelLabels) label(model string) string {
	l.mu.RLock()
	_, ok := l.set[model]
	l.mu.RUnlock()
	if ok {
		return model
	}
	return modelOther
}

// apiModels is the api label of GET /v1/models, which the gateway answers
// itself with the fleet's models (or passes through).
const apiModels = "models"

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
