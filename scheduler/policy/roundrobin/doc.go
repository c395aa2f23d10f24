// Package roundrobin is the round-robin policy: candidates take turns,
// regardless of load. It is the baseline every LLM-aware policy must beat and
// what Envoy itself does when no pick is given.
package roundrobin
