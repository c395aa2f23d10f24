// Package pdproxy is the prefill/decode proxy a decode (or both-role)
// instance's agent runs in front of its engine (`llmrouter agent
// --pd-proxy LISTEN`). The instance is published at the proxy's address, so
// every request Envoy sends it passes here.
//
// A request without x-prefiller-host-port, and every path other than the
// two generation APIs, is forwarded to the local engine unchanged:
// streaming, WebSocket upgrades, cancellation, /v1/models, /metrics and
// /health, so whoever probes the advertised address sees the engine.
//
// With the header (set by the gateway from a pd-split pick; a client's copy
// is stripped there), the proxy first checks that the named instance is in
// the prefill fleet the scheduler last sent this agent; it never sends
// anything to a host only a header names. Then it speaks the engine's
// disaggregation protocol:
//
//   - vLLM (NixlConnector): the request goes to the prefill instance with
//     max_tokens 1, stream false and kv_transfer_params {do_remote_decode:
//     true}; the kv_transfer_params of its answer go with the original
//     request to the local engine, whose answer streams back unchanged.
//   - SGLang: bootstrap_host (the prefill's IP), bootstrap_port (the port
//     the prefill's agent registered, from the fleet) and a random
//     bootstrap_room are added, and the request goes to the prefill and the
//     local decode engine at once; the decode's answer is returned.
//
// A prefill that fails, times out or is refused, or a decode that fails
// before answering, falls back to a local prefill on the decode engine:
// the client sees no error, and the fallback is counted by reason. Bodies
// are read into memory only on the disaggregated path, bounded in bytes.
package pdproxy
