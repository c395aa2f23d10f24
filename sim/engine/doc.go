// Package engine is a deterministic discrete-event model of one vLLM
// instance (V1 scheduler semantics): continuous batching with chunked
// prefill, max_num_seqs, a paged KV cache with prefix caching (hash chain
// over token blocks, ref-counted blocks, freed blocks kept in an LRU and
// reused on a hit) and preemption by recompute when blocks run out.
//
// The model owns no goroutines and never reads the clock: the caller owns
// time. It adds requests with Add, asks NextStepAt when the model next wants
// to run, and calls Step at that time to complete the batch in flight and
// schedule the next one. The same model therefore serves real time (the
// enginesim HTTP server steps it from a timer) and virtual time (the cluster
// simulator advances many engines on one clock).
//
// A step of the batch takes a + b×(uncached prefill tokens scheduled) +
// c×(decode tokens scheduled), the linear fit BLIS publishes for vLLM; the
// default profile is that fit for Llama-3-8B on one H100.
package engine
