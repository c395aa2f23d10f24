// Package verify checks, from the scheduler's side, that an advertised
// engine address is what its agent says it is, before the instance may be
// picked or published to Envoy: its /v1/models must list every model the
// agent registered, and its metrics must name the engine kind the agent
// reported (with the agent's own detection, agent.DetectKind). An agent
// holding the token can advertise any address; this is what keeps a plain
// listener, a metadata service or another host's port out of the fleet.
//
// It also probes a silent instance (its agent stopped reporting): an address
// that no longer answers /v1/models confirms the engine down.
//
// Every request is bounded: a per-request timeout, a response size limit,
// no redirects (a listener cannot send the check elsewhere), no proxy. The
// scheduler retries a failed verification with backoff while the
// registration lasts; the instance waits as "verifying" meanwhile.
// llm_scheduler.verify_engines false turns verification off (engines whose
// /v1/models or metrics are not on the advertised address); the probe of
// silent instances then only connects (ProbeConnect).
package verify
