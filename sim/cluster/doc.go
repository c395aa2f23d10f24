// Package cluster is the virtual-time cluster simulator: N simulated vLLM
// instances (sim/engine) behind the real scheduler (package scheduler with
// any policy, driven by a virtual clock), fed a workload (sim/workload)
// whose prompts are rendered and hashed exactly as the gateway does
// (internal/prompthash). Each instance registers with its KV capacity and
// reports its engine's true state every report interval, as an agent would;
// picks go through TryPick, so the admission queue is honoured, and every
// completion is reported back as a gateway would. Options.Speeds mixes
// instance speeds (GPU generations) in one fleet: a slower instance's steps
// take longer, so under load the token rates its agent reports are lower,
// as a real one's would. Options.RestartAt replaces the scheduler mid-run
// with a fresh one, as a restart does, and Result.Series shows the prefix
// hit ratio dip and recover (restart.go).
//
// One goroutine runs an event loop over virtual time — arrivals, engine step
// ends, agent reports, scheduler ticks — so a run is deterministic for a
// seed and every policy sees identical arrivals. Time costs nothing: ten
// simulated minutes of five busy H100s take seconds.
package cluster
