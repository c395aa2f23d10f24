// Package registry is the scheduler's live view of the engine fleet: who is
// registered, where Envoy reaches them, which models they serve, whether they
// are healthy or draining, and what they last reported.
//
// The registry is fed by the scheduler (which is fed by agent streams or, in
// the simulator, directly) and read by anyone: the xDS server follows Watch +
// Routable to keep Envoy's EDS current, metrics follow List. It never calls
// out and never blocks on a reader: Watch delivers a coalesced signal on a
// channel of capacity one.
//
// Identity: an instance is identified by its advertised address ("ip:port").
// A second registration of the same address replaces the first; the first
// lease's Done channel closes so its stream can end. Leases carry a
// generation so a late close of the old stream never removes the new one.
package registry
