// Package framework composes scheduling from plugins, the way llm-d's
// endpoint picker and the Gateway API Inference Extension do: a Profile runs
// its filters (which candidates may take the request), then its weighted
// scorers (each scores every candidate in [0, 1]; the profile sums
// weight × score), then its picker (which ranks the candidates, usually by
// the summed score). A per-request CycleState lets plugins share what they
// derived (a prefix match) within one decision.
//
// Plugin types are registered by name with a Factory that owns the type's
// parameters: their defaults, their decoding (Params.Decode: an unknown
// parameter is an error naming it and the accepted ones, a value of the
// wrong kind one naming the parameter) and their validation. A policy
// registers with RegisterPolicy and a typed parameter struct: its defaults
// are the built-in profile's, its Validate the rules. Keys once under
// llm_scheduler.policies (config.PolicyKeys) set such a parameter's
// default, checked by the same rules (CheckDeprecated). A profile is
// built from a Spec — the plugins and how a profile references them — which
// comes either from an EndpointPickerConfig file (LoadEndpointPickerConfig)
// or from the built-in profiles, one per policy name (BuiltinProfiles).
//
// A Profile is a policy.Policy, so the scheduler runs it like any other.
// A profile made of a single ranking picker — a whole policy such as
// prefix-cache used as its profile's picker — is that policy itself: the
// built-in profiles decide exactly as the policies did, at the same cost.
//
// Plugins reach one another only through the framework: a factory may ask
// its Handle for an already built plugin by name or by type.
package framework
