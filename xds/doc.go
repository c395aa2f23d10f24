// Package xds serves Envoy its view of the fleet over ADS (state of the
// world and delta, go-control-plane): CDS publishes the engine cluster
// (static per configuration), EDS its routable endpoints. Both come from
// linear caches, so an endpoint change is one resource update pushed to every
// Envoy, never a rebuilt snapshot; churn is coalesced to at most one push per
// llm_scheduler.xds_push_interval. FollowRegistry feeds it from the
// scheduler's registry. NACKs are logged with their error detail, counted,
// and never trigger a resend loop.
package xds
