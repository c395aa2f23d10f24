// Package prefixcache is the prefix-cache policy, llmrouter's default. For
// each candidate it predicts the request's time to first token — the
// uncached prefill queued ahead of it plus the prefill of the prompt tokens
// the instance does not already hold in its KV cache (scheduler/prefixindex,
// plus the previous answer of a conversation it served) — adds the delay
// that prefill and the request's decode bring the requests already running
// there, and ranks by that cost. A load cap keeps a hot prefix from melting
// its home: an instance that would carry more than max_load_ratio × the mean
// load goes behind every other, so the prefix spills and the index learns
// its second home. docs/policies.md explains the model and its defaults.
package prefixcache
