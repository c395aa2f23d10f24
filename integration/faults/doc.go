// Package faults is `make test-faults`: the fleet-safety suite of issue 13
// over real processes. Each scenario starts its own deployment on loopback
// ports (the OS picks them; a process restarted on its address gets a port
// below the kernel's ephemeral range, integration/harness.FreeAddr) — engine simulators (`llmrouter enginesim`), one agent
// per engine, the scheduler and the gateway as separate processes (or
// `llmrouter all-in-one` where the scenario is not about their separation),
// and the stand-in data plane (integration/standin) on the bootstrap
// `llmrouter bootstrap` renders — drives it with bounded OPEN-LOOP load (a
// fixed arrival rate for a fixed time: a slow system gets more concurrent
// requests, not fewer, as with real users), injects one fault, and judges by
// what clients see. The deployment and the chat client come from
// integration/stack, shared with integration/e2e.
//
// A request "failed" when the client saw a connection error, a broken
// stream (no `data: [DONE]`), or a status other than 200 — except a
// deliberate 429/503 shed, allowed in the overload scenario only. Every
// scenario also fails when any process it did not kill on purpose exited.
//
// Scenarios (one test each; TestMain prints sent / succeeded / shed / failed
// and the time per scenario, then "N passed, M failed"):
//
//   - AgentsStalled: every agent SIGSTOPped for 3 s, then SIGCONT. Silence is
//     not death: 0 failed requests.
//   - SchedulerStopped: the scheduler SIGSTOPped for 5 s (the gateway's picks
//     time out, it answers without a pick, the data plane keeps its
//     endpoints): 0 failed.
//   - SchedulerKilled / SchedulerTerminated: the scheduler SIGKILLed, or
//     stopped with SIGTERM (graceful), and restarted on the same ports after
//     2 s: 0 failed; picks resume and the fleet re-registers.
//   - GatewayKilled / GatewayTerminated: the gateway SIGKILLed and restarted,
//     or stopped with SIGTERM (graceful drain) and restarted; the data
//     plane's ext_proc failure_mode_allow carries every request on without a
//     pick, as Envoy does: 0 failed.
//   - EngineKilled: one of three engines SIGKILLed while streams run on it.
//     Only streams that had started before the kill may fail (and any that
//     failed mid-stream must have come from the killed engine, recognised by
//     its seed's reply text); nothing sent after the kill fails. The engine
//     is restarted on the same port and serves again.
//   - Overload: three `enginesim --profile llama3-8b-l4 --max-num-seqs 4` in
//     the default configuration, 20x their measured capacity for 30 s: every
//     request gets its first token or a 429/503 within
//     wait_schedule_timeout + 4 s of its arrival; a request sent 5 s after
//     the load stops is served within wait_schedule_timeout + 2x its
//     unloaded latency; scheduler and gateway RSS (VmRSS) stay under 512 MB.
//     Those bounds are admission's: a run that misses one (or has a request
//     fail) while a starved machine took requests around admission on the
//     documented degraded path (pick timeout, gateway breaker, every agent
//     silent, ext_proc message timeout; counted from the gateway's metrics
//     and the data plane's log) is judged only on RSS and live processes,
//     and the scenario runs once more, judged in full; a miss without such
//     requests fails at once.
//   - RogueAgents: agents that probe a real engine but advertise a counting
//     TCP listener of the test's own, 169.254.169.254:80, a closed loopback
//     port, and a live engine's address (ID takeover): 0 connections reach
//     the counting listener, none of those addresses reaches the data
//     plane's endpoints, the takeover is refused with a WARN naming the
//     address in the scheduler's log, and requests keep being served.
//   - SessionKeys: 1,000 requests each with a distinct 1 MiB `user` (the
//     session key): the scheduler's VmRSS stays under 512 MB and requests
//     keep being served.
//   - ForgedExtProc: the gateway bound to the host's non-loopback address
//     with a token; a client speaking ext_proc exactly as Envoy does
//     (internal/envoytest) without the token is refused and causes no pick;
//     with the token it gets one; without a token configured the gateway
//     refuses to listen there. Without a non-loopback IPv4 address on this
//     host the scenario is skipped, saying so.
//   - HostileBodies: malformed JSON, truncated JSON, 64 MiB, 100,000-deep
//     nesting, invalid UTF-8 and 100,000 messages, beside steady load: each
//     gets a 4xx (or passes through to the engine and gets its answer), the
//     steady load has 0 failed, and no process exits.
//
// The tests carry the build tag "faults", so `go test ./...` (make
// test-unit) does not run them; `make test-faults`, part of `make test` (and
// so of CI), runs them once:
//
//	go test -tags faults -count=1 -v ./integration/faults/
//
// The package has no code outside its tests.
package faults
