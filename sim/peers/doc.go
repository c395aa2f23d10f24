// Package peers makes the peers' published routing rules built-in
// profiles, so the simulator and `llmrouter bench` compare prefix-cache with
// them under one workload, engine model and scheduler. The rules are
// configuration (EndpointPickerConfig files, copies of
// docs/examples/endpoint-picker/), not code; importing this package
// registers them by their profile names:
//
//   - peer-cache-aware: the cache_aware policy of the SGLang and vLLM
//     routers with their defaults (plugin cache-aware-picker).
//   - peer-scorer: llm-d's default scoring profile: prefix-cache-scorer 3,
//     queue-scorer 2, kv-cache-scorer 2, max-score-picker.
//
// Both learn prefixes the way their originals do by default — from the
// requests they route, not from the engines — with the same prefix index
// as prefix-cache (prefix-cache-scorer), so the comparison is of the
// decision, not of the bookkeeping.
package peers
