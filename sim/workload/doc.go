// Package workload is what a benchmark sends and when: request generators
// (multi-turn conversations under shared system prompts, shared-prefix
// groups, or a JSONL file), the arrival processes that pace them (closed
// loop, Poisson, or the file's own timestamps), and the summary both
// benchmark modes report (the EAS benchmark's table and its JSON form).
//
// Everything is deterministic for a seed and independent of the order in
// which requests complete: conversation i is the same text whichever
// policy serves it, and conversation starts under Poisson arrivals fall at
// the same instants, so the virtual-time simulator (sim/cluster) compares
// policies on identical arrivals and the live load generator (sim/loadgen)
// replays the same workload against a real data plane. Only what depends on
// the system under test — when a conversation's next turn is sent, after
// its previous turn completed — differs between runs.
package workload
