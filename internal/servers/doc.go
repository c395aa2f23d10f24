// Package servers assembles each long-running llmrouter process from its
// configuration — the control plane (scheduler API, xDS, HTTP, and in
// all-in-one the ext_proc gateway over the in-process scheduler) and the
// standalone gateway — as a runner.Group whose stages state the shutdown
// order. cmd/llmrouter only parses flags and calls these.
package servers
