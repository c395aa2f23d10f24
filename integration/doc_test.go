// Package integration runs llmrouter as an operator would: real processes
// (built from ./cmd/llmrouter by integration/harness) talking over real
// ports, observed through their public surfaces (/metrics, /readyz, /admin,
// logs). agent_test.go proves the agent and the scheduler together against
// the engine simulator.
package integration
