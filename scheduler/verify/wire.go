package verify

import (
	"context"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler"
	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// ForScheduler returns a live scheduler's membership collaborators
// (scheduler.Deps Verify and Probe). With llm_scheduler.verify_engines:
// verification, and silent instances probed with GET /v1/models. Without
// (engines that do not serve /v1/models on the advertised address): no
// verification, and the probe only connects.
func ForScheduler(cfg config.Config) (scheduler.Verifier, scheduler.Prober) {
	k := New(Options{})
	if !cfg.Scheduler.VerifyEngines {
		return nil, k.ProbeConnect
	}
	return func(ctx context.Context, in registry.Instance) error {
		return k.Verify(ctx, Claim{Address: in.Address, Engine: in.Engine, Models: in.Models})
	}, k.Probe
}
