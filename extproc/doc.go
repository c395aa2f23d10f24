// Package extproc is the gateway: an Envoy external-processing
// (envoy.service.ext_proc.v3) server that serves both ext_proc filters of
// ARCHITECTURE §5.1 on one port.
//
// Filter #1 (blocking: request headers SEND, request body BUFFERED) reads the
// OpenAI request, hashes a bounded prefix of its prompt (internal/prompthash),
// asks the Scheduler for a pick and writes it as header and envoy.lb dynamic
// metadata x-gateway-destination-endpoint; header values always travel in
// raw_value. Anything it cannot understand passes through unmodified (Envoy
// then round-robins): the gateway never turns a request an engine could answer
// into an error.
//
// Filter #2 (observability_mode) is told apart by the observability_mode flag
// Envoy sets on every message of such a stream, or, failing that, by its first
// message being a response phase. It never answers. It measures TTFT and TPOT,
// reads token usage from the final SSE chunk or a JSON body, and reports the
// outcome to the Scheduler. It finds filter #1's record of the request by
// x-request-id, taken from the request headers when the filter sends them,
// the response headers (HCM always_set_request_id_in_response), or the
// GatewayNamespace dynamic metadata filter #1 wrote and Envoy forwards
// (metadata_options.forwarding_namespaces). That metadata also carries the
// model, arrival time and prompt estimate, so with a pool of gateways the
// observing gateway need not be the picking one. The endpoint that served is
// the upstream.address attribute when configured (response_attributes), else
// the pick's primary.
//
// Degraded mode: when the Scheduler is unreachable the gateway answers Envoy
// at once with no pick; it notices recovery by itself (see Availability and
// the breaker in degraded.go).
package extproc
