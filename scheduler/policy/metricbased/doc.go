// Package metricbased is the llm-metric-based policy: a weighted sum of the
// engine's own load signals — waiting queue, KV cache usage, running
// requests — minus a bonus for token throughput per running request, each
// normalised across the candidates so the weights compare like with like.
// It needs no prompt hashes, so it suits workloads without shared prefixes.
// Weights: its parameters (Params: waitingWeight, kvCacheWeight,
// runningWeight, throughputWeight).
package metricbased
