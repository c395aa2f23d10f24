// Package prefixindex is the scheduler's estimate of which engine instance
// holds which prompt blocks in its KV cache (ARCHITECTURE §6). Keys are the
// chained block hashes of internal/prompthash, so an instance holding block i
// of a request has, as far as we know, computed the whole prefix up to i.
//
// The index learns from decisions, not from the engines: when the scheduler
// sends a request to an instance, that instance will hold all of the
// request's blocks. Each instance has an LRU of its blocks sized from its KV
// capacity, so the estimate forgets what the engine would have evicted.
//
// Memory is the point of the design: one 24-byte node per (block, instance)
// pair in a slice linked by int32 indexes (no pointers for the GC to scan),
// one map entry per distinct block, and — only for blocks held by many
// instances, such as a shared system prompt — a bitset of holders so a lookup
// costs a few word operations instead of a walk over every holder.
package prefixindex
