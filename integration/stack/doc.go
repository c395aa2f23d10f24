// Package stack runs one whole llmrouter deployment on loopback for the
// integration suites (integration/e2e, and integration/faults under its
// build tag): a scheduler and gateway (separate, or one all-in-one), engine
// simulators each with its agent, and a data plane — the stand-in
// (integration/standin), or real Envoy when a suite names one — on a
// bootstrap rendered by `llmrouter bootstrap`. It is a test fixture, imported
// only by tests, built on integration/harness's processes.
//
//	dir, standin, err := stack.Build("llmrouter-e2e-")  // once, from TestMain or a sync.Once
//	s := stack.Start(t, stack.Options{Model: "m", Standin: standin, ...})
//
// Start returns once every engine is healthy on the scheduler, present in
// the data plane's llm_backends, and a separate gateway is connected; a
// suite then sends its own first request through s.Listen with its own
// client. Processes bind 127.0.0.1:0 and their addresses are read from their
// logs, except the data plane's, picked free a moment before (a lost port
// race is tried again on new ports).
//
// Clients: Chat and ChatTo send one OpenAI chat completion (streaming or
// not, a raw body, a session user, headers) and time what comes back.
//
// Observation: Instances (/admin/instances), Endpoints (the data plane's
// llm_backends), Counter (a /metrics page summed over matching series),
// WaitFleet and WaitGauge.
package stack
