// Package deploy holds deployment files (docker-compose with the official
// Envoy image, Kubernetes manifests, Istio and Envoy Gateway integration, a
// Grafana dashboard). Its only Go code is the test that keeps every Envoy
// configuration in them equal to what `llmrouter bootstrap` renders and valid
// against Envoy's API; `go test ./deploy -update` regenerates them.
package deploy
