// Package peers holds comparison policies modelled on peers' published
// defaults, so the simulator can measure prefix-cache against them under
// one workload, engine model and scheduler. They are not offered to
// operators (llm_scheduler.policy accepts only the product's policies);
// importing this package registers them by name for `llmrouter bench` and
// the simulator's tests:
//
//   - peer-cache-aware: the cache_aware policy of the SGLang and vLLM
//     routers with their defaults. The instance whose routed requests share
//     the longest prefix with this one, when that share is above 0.3; below
//     it, the instance holding the fewest blocks; and once the busiest
//     instance has more than 64 requests over the idlest and more than 1.5
//     times as many, the least loaded instead.
//   - peer-scorer: llm-d's default scoring profile: the highest weighted sum
//     of a prefix-cache match score (weight 3), a queue score (2) and a
//     KV-cache utilisation score (2), each from 0 to 1.
//
// Both learn prefixes the way their originals do by default — from the
// requests they route, not from the engines — with the same prefix index
// as prefix-cache, so the comparison is of the decision, not of the
// bookkeeping.
package peers
