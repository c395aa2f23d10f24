package verify

import (
	"context"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler"
	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// ForScheduler returns a live scheduler's membership collaborators
// (scheduler.Deps Verify and Probe): verification as
// llm_scheduler.verify_engines says (nil when off), and the probe of silent
// instances always.
func ForScheduler(cfg config.Config) (scheduler.Verifier, scheduler.Prober) {
	k := New(Options{})
	var v scheduler.Verifier
	if cfg.Scheduler.VerifyEngines {
		v = func(ctx context.Context, in registry.Instance) error {
			return k.Verify(ctx, Claim{Address: in.Address, Engine: in.Engine, Models: in.Models})
		}
	}
	return v, k.Probe
}
