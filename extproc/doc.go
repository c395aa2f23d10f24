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
// outcome to the Scheduler. Each pick is keyed by a pick id the gateway
// generates per stream (a client may reuse x-request-id; that stays for logs)
// and writes, with the request id, the model, arrival time and prompt
// estimate, into the GatewayNamespace dynamic metadata, which Envoy forwards
// to filter #2 (metadata_options.forwarding_namespaces): filter #2 finds
// filter #1's record by pick id, or by x-request-id when no metadata comes,
// and with a pool of gateways the observing gateway need not be the picking
// one. The endpoint that served is the upstream.address attribute when
// configured (response_attributes), else the pick's primary.
//
// GET /v1/models is answered by filter #1 itself, in the request-headers
// phase: an immediate_response with the fleet's models (the scheduler's
// ListModels, kept DefaultModelsCacheTTL) in OpenAI's list shape. Without a
// list (scheduler unreachable, failing, slow, older, or an empty fleet) the
// request passes through and one engine answers, as Envoy chooses. GET
// /v1/models/{id} is answered from the same list: the model's object, or
// OpenAI's 404 when the list is complete and does not hold it.
//
// Every pick is released at the scheduler however its request ends: the
// response's end or reset (filter #2's report), the request ending before
// any response (filter #2 takes the request headers, so its stream ends with
// the request), the pick timing out or being cancelled, or its answer never
// reaching Envoy (filter #1 releases it).
//
// Degraded mode: when the Scheduler is unreachable the gateway answers Envoy
// at once with no pick; it notices recovery by itself (see Availability and
// the breaker in degraded.go).
package extproc
