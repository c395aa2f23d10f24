// Package deploy holds deployment files (docker-compose with the official
// Envoy image, Kubernetes manifests, Istio and Envoy Gateway integration,
// Prometheus scrape configuration, ServiceMonitor, rules and alerts, a
// Grafana dashboard). It is a Go module of its own, so that the Kubernetes,
// Gateway API, Istio, Envoy Gateway, Prometheus Operator and Prometheus
// packages its tests decode the files with never enter the product's
// dependencies. Its only Go code is those tests: every Kubernetes object
// decodes strictly into its project's Go type, every Envoy configuration
// equals what `llmrouter bootstrap` renders and validates against Envoy's
// API, the rule file, the scrape configuration and every dashboard query load
// with Prometheus's own packages. `go test . -update` (in deploy/)
// regenerates the rendered files. `make test` runs them.
package deploy
