// Package leasttoken is the least-token policy: the candidate with the
// fewest tokens in flight goes first. Tokens in flight are the prompt tokens
// the scheduler knows are still to prefill plus the output tokens still to
// generate, which the policy estimates itself: each pick it records expects
// the running mean of observed completion lengths (Observer.Completed),
// capped by the request's max_tokens, and counts down from there at the
// instance's reported generation rate per running request, never below a
// floor while the gateway has not reported it complete. Requests an engine
// reports that the policy never saw (picked before a restart) count at the
// mean sizes.
package leasttoken
