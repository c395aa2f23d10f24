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
