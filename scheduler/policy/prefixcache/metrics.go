package prefixcache

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// blockCounter counts the prompt blocks of committed picks by whether the
// chosen instance was believed to hold them: the policy's prefix hit ratio,
// the number that says whether prefix-aware routing is paying off
// (sum(rate(...{outcome="hit"})) / sum(rate(...))). It is what the index
// believed at decision time; the engines' own prefix-cache counters say
// what they found.
func blockCounter(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "llmrouter_prefix_cache_blocks_total",
		Help: "Prompt blocks of the requests prefix-cache routed, by whether the chosen instance was believed to hold them (outcome hit or miss).",
	}, []string{"outcome"})
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		// pd-split may run two prefix-cache policies on one registry: they
		// share the series.
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, err
		}
		if c, _ = are.ExistingCollector.(*prometheus.CounterVec); c == nil {
			return nil, err
		}
	}
	return c, nil
}

// predictionGauge is llmrouter_prefix_prediction_error (see measure).
func predictionGauge(reg prometheus.Registerer) (*prometheus.GaugeVec, error) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "llmrouter_prefix_prediction_error",
		Help: "Per engine: the share of prompt tokens prefix-cache predicted the engine would serve from its prefix cache, minus the share the engine reported serving, over the same interval (at least 16k prompt tokens). Near 0 when the prefix index is right; positive when the engine holds less than the index believes (its cache was flushed or evicts sooner), negative when it holds more.",
	}, []string{"engine"})
	if reg == nil {
		return g, nil
	}
	if err := reg.Register(g); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, err
		}
		if g, _ = are.ExistingCollector.(*prometheus.GaugeVec); g == nil {
			return nil, err
		}
	}
	return g, nil
}
