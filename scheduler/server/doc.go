// Package server puts the scheduler on gRPC: AgentService (one stream per
// engine instance: Register, then reports; commands flow back) and
// PickerService (the gateways' Pick, Report and ListModels) share one listener, with the
// shared token, TLS and keepalive of internal/grpcx and the standard health
// service. It also provides the admin HTTP handler (drain/resume an
// instance, list the fleet).
package server
