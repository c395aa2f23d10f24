// Package e2e holds the end-to-end tests of the whole data path over real
// processes (issue 5's acceptance): a scheduler and a gateway (all-in-one, or
// separate processes when a test kills one of them), three engine simulators
// each with an agent, and a data plane — real Envoy when `envoy` is on PATH
// or ENVOY_BIN names it, else the test stand-in (integration/standin) — all
// on loopback ports the OS picked. Clients talk only to the data plane's
// listener, as users would; the tests judge by what clients see and by the
// processes' /metrics.
//
// The package has no code outside its tests. The deployment and the chat
// client come from integration/stack, which the fault suite
// (integration/faults) runs too.
package e2e
