// Package agent is the sidecar beside one inference engine (ARCHITECTURE §1,
// §5.3). It waits for the engine to be ready, detects which engine it is,
// normalises the engine's Prometheus metrics into one unified report, and
// keeps a long-lived AgentService.Connect stream to the scheduler: a Register
// first, then a Report every report interval, marking the instance unhealthy
// the moment the engine stops answering and re-registering when it recovers.
//
// The pieces, smallest first:
//   - Parse turns a /metrics body (Prometheus text or OpenMetrics) into
//     Metrics, using prometheus/common's expfmt, never a hand-written parser.
//   - An Adapter per engine maps that engine's metric names to Stats, the
//     unified view; agent.metric_map overrides any field for any engine.
//   - Detect names the engine from metric name prefixes; the live agent falls
//     back to /v1/models owned_by and engine-specific endpoints.
//   - Agent runs the readiness wait, the engine poller and the scheduler
//     session with reconnects.
//   - Inspect is the offline form used by `llmrouter agent inspect`.
package agent
