// Package affinity wraps any policy with two preferences that sit above the
// cost model: session affinity (a conversation keyed by x-session-id or the
// body's user stays on the instance that served it, while that instance is a
// candidate, i.e. not saturated) and LoRA affinity (instances that report the
// requested adapter loaded go before those that would have to load it:
// Instance.LoRAs, the adapters the engine runs when it says, as vLLM's
// lora_requests_info does, else those it serves).
//
// They are a wrapper rather than part of prefix-cache so every policy gets
// them, and so a policy's own ranking stays the tie-breaker within each
// preference. The scheduler applies it with Wrap after building the policy
// (or builds through New); llm_scheduler.affinity.session and lora switch
// the two off.
package affinity
