// Package envoy builds every Envoy resource llmrouter emits — the engine
// cluster with override_host load balancing, its endpoint assignment, the two
// ext_proc filters, the routes, the listener, the static clusters of the
// bootstrap — so that the xDS server and the shipped bootstrap cannot drift
// apart. It also validates Envoy configuration statically (we cannot run
// Envoy in tests): protojson with unknown fields refused, then
// protoc-gen-validate on every message including those packed in Any, with
// errors that name the failing field path.
package envoy
