package standin

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmrouter/llmrouter/bootstrap"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/xds"
)

// A scheduler demanding llm_scheduler.xds_token serves the endpoints to a
// proxy running `llmrouter bootstrap`'s rendering with that token (its ADS
// stream carries the initial_metadata), and refuses one running the tokenless
// rendering, which never learns an endpoint.
func TestXDSTokenBootstrapWithOurXDSServer(t *testing.T) {
	const token = "standin-xds-token"
	cfg := config.Default()
	cfg.Scheduler.XDSToken = token
	reg := prometheus.NewRegistry()
	xs, xdsAddr := serveXDS(t, cfg, reg)
	xs.SetEndpoints([]xds.Endpoint{{ID: "a", Address: "127.0.0.1:9"}})

	// extproc is never called: no request is sent.
	start := func(t *testing.T, withToken bool) *Server {
		t.Helper()
		o := bootstrap.OptionsFromConfig(config.Default())
		if withToken {
			o.XDSToken = token
		}
		return startRendering(t, o, xdsAddr)
	}

	t.Run("with the token", func(t *testing.T) {
		s := start(t, true)
		waitFor(t, func() bool { return len(s.Endpoints(cfg.Scheduler.ClusterName)) == 1 })
		if n := refusals(t, reg); n != 0 {
			t.Fatalf("%v refusals of the token-bearing bootstrap", n)
		}
	})
	t.Run("without", func(t *testing.T) {
		s := start(t, false)
		waitFor(t, func() bool { return refusals(t, reg) > 0 })
		if eps := s.Endpoints(cfg.Scheduler.ClusterName); len(eps) != 0 {
			t.Fatalf("a refused proxy has endpoints %v", eps)
		}
	})
}

func refusals(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "llmrouter_xds_unauthenticated_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("llmrouter_xds_unauthenticated_total not registered")
	return 0
}
