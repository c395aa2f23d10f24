package xds

import (
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmrouter/llmrouter/internal/config"
)

// Pushes and NACKs of both served types exist at 0 before any Envoy
// connects: the dashboard and the alerts take rates over them.
func TestPushAndNackSeriesFromStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	New(config.Default(), nil, reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 {
				seen[mf.GetName()+" "+m.GetLabel()[0].GetValue()] = true
			}
		}
	}
	for _, name := range []string{"llmrouter_xds_pushes_total", "llmrouter_xds_nacks_total"} {
		for _, typ := range []string{resource.ClusterType, resource.EndpointType} {
			if !seen[name+" "+typ] {
				t.Errorf("%s{type_url=%q} not exported from start", name, typ)
			}
		}
	}
}
