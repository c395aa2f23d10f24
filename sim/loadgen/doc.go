// Package loadgen is the live-mode load generator of `llmrouter bench`: it
// sends a sim/workload plan to a running data plane (Envoy, or any
// OpenAI-compatible server) as streaming chat completions
// (/v1/chat/completions with stream=true and stream_options.include_usage),
// measures time to first token from the first content chunk and time per
// output token after it, and reports the same summary as the simulator.
//
// Multi-turn conversations carry the replies actually received, as a chat
// client would, so a real engine's prefix cache sees real histories.
package loadgen
