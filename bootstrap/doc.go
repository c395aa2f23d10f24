// Package bootstrap renders the Envoy bootstrap llmrouter ships: a static
// listener with both ext_proc filters and the routes, admin on loopback, the
// xDS and ext_proc clusters over HTTP/2, and ADS for the engine cluster and
// its endpoints. The resources come from package envoy, the same builders the
// xDS server uses. envoy.yaml is the rendered default, embedded; a test keeps
// it equal to the renderer's output (regenerate with `make bootstrap` or
// `go run ./cmd/llmrouter bootstrap > bootstrap/envoy.yaml`).
// existing-envoy.yaml shows what to add to an Envoy that already has a
// configuration (and perhaps another control plane).
package bootstrap
