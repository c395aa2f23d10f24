package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
)

// gauge reads llmrouter_prefix_prediction_error{engine=addr}; ok is false
// while the series does not exist.
func gauge(t *testing.T, reg *prometheus.Registry, addr string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "llmrouter_prefix_prediction_error" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "engine" && l.GetValue() == addr {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

// The scheduler measures prefix-cache's prediction error per engine from
// the agents' reports of the engines' prefix-cache hits: near zero while
// the index is right, and rising on the engine whose cache is flushed
// behind the router's back, while the others stay where they were.
func TestPredictionErrorRisesWhenAnEngineCacheIsFlushed(t *testing.T) {
	const flushAt = 40 * time.Second
	reg := prometheus.NewRegistry()
	o := acceptanceOptions(t, 200, time.Minute)
	o.Metrics, o.FlushAt, o.FlushInstance = reg, flushAt, 0
	type sample struct{ before, after []float64 }
	samples := make([]sample, 5)
	o.OnReport = func(i int, rep *llmrouterv1.Report) {
		// Reports come every 200 ms per instance from 40 ms on: the
		// sequence number tells the time.
		at := time.Duration(rep.GetSequence()) * 200 * time.Millisecond
		v, ok := gauge(t, reg, fmt.Sprintf("10.0.0.%d:8000", i+1))
		if !ok {
			return
		}
		switch {
		case at > 25*time.Second && at < flushAt:
			samples[i].before = append(samples[i].before, v)
		case at > flushAt && at < flushAt+5*time.Second:
			samples[i].after = append(samples[i].after, v)
		}
	}
	r := run(t, o, "prefix-cache")
	if r.Failed > 0 {
		t.Fatalf("%d failed", r.Failed)
	}
	peak := func(vs []float64) float64 {
		m := -1.0
		for _, v := range vs {
			m = max(m, v)
		}
		return m
	}
	for i, s := range samples {
		if len(s.before) == 0 || len(s.after) == 0 {
			t.Fatalf("instance %d: %d samples before the flush, %d after: the metric is not exported", i, len(s.before), len(s.after))
		}
		before, after := peak(s.before), peak(s.after)
		t.Logf("instance %d: prediction error before the flush at most %.3f, in the 5 s after %.3f", i, before, after)
		if before > 0.15 || before < -0.2 {
			t.Errorf("instance %d: prediction error %.3f before any flush: want near 0", i, before)
		}
		if i == 0 && after < 0.3 {
			t.Errorf("flushed instance: prediction error at most %.3f after the flush: want it to rise above 0.3", after)
		}
		if i != 0 && after > 0.15 {
			t.Errorf("instance %d, not flushed: prediction error rose to %.3f", i, after)
		}
	}
}
