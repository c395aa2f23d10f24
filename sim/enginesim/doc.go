// Package enginesim serves the sim/engine model of a vLLM instance in real
// time behind vLLM's OpenAI-compatible HTTP API: /v1/chat/completions and
// /v1/completions (SSE streaming or not), /v1/models, /health, /version,
// /metrics with vLLM V1's metric names and labels, and a WebSocket endpoint
// /v1/realtime that streams tokens as JSON messages.
//
// One goroutine owns the engine and steps it at the model's step times, so
// tokens arrive when the model says they are generated and /metrics shows
// the model's true state. Prompts are rendered and hashed with
// internal/prompthash exactly as the gateway does, so the simulated prefix
// cache hits where the router expects it to. Generated text is deterministic
// filler: one four-character word per token, so re-estimating tokens from a
// reply's characters gives back its token count.
package enginesim
