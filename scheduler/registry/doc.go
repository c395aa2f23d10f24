// Package registry is the scheduler's live view of the engine fleet: who is
// registered, where Envoy reaches them, which models they serve, whether they
// are healthy or draining, and what they last reported.
//
// The registry is fed by the scheduler (which is fed by agent streams or, in
// the simulator, directly) and read by anyone: the xDS server follows Watch +
// Published to keep Envoy's EDS current, metrics follow List. It never calls
// out and never blocks on a reader: Watch delivers a coalesced signal on a
// channel of capacity one.
//
// Identity: an instance is identified by its advertised address ("ip:port").
// A second registration of an address a live registration holds is refused
// (ErrTaken); the holder itself may register again (its engine restarted),
// and anyone may take over a silent registration (its agent is gone). The
// replaced lease's Done channel closes so its stream can end. Leases carry a
// generation so a late close of the old stream never removes the new one.
//
// Membership: an instance is verifying (not yet checked against its
// address; only with Options.Verify), healthy, silent (no report for
// MissedReports intervals: not picked, still published), unhealthy (its
// agent says the engine is down: confirmed down) or draining. Routable is
// what the scheduler may pick; Published is what Envoy's EDS holds: silence
// is not death. Sweep turns instances silent (Orphan does at once when an
// agent's stream ends: the lease ends, the instance stays) and removes those
// silent past SilentGrace; ConfirmDown removes one whose engine the
// scheduler's probe found down. Neither removes anyone while more than PanicThreshold of the
// published instances are silent (a panic episode). Advertised addresses
// are never link-local, multicast, broadcast or unspecified, and loopback
// only with AllowLoopback.
//
// Bounds: a registration naming more models and adapters than
// internal/reglimits allows (in names or bytes), or a name or label too
// long, is refused (ErrInvalid, naming the field and the bound). Reports
// are never refused for it, which would make a healthy engine unroutable:
// their name lists keep the leading names within the bounds, the reason
// is cut, and llmrouter_scheduler_report_truncated_total counts each. The
// adapters a report names running or waiting are kept only when the
// registration serves them (llmrouter_scheduler_report_unserved_adapters_total
// counts the reports naming others, a WARN says so once per registration).
package registry
