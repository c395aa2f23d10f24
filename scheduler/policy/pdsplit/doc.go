// Package pdsplit holds the prefill/decode disaggregation policies.
//
// pd-split always disaggregates: llm_scheduler.prefill_policy picks the
// prefill instance among the prefill and both-role candidates, and
// llm_scheduler.decode_policy ranks the decode and both-role candidates; the
// decision's Ranked are the decode instances (the destination and its
// fallbacks) and Prefill the prefill instance (header x-prefiller-host-port).
//
// dynamic-pd-split decides per request: a prompt with many tokens the chosen
// decode instance does not already hold, arriving while that instance is
// busy, is prefilled elsewhere so it does not stall the instance's running
// decodes; a short or cached prompt is prefilled where it decodes, saving the
// KV transfer. What the destination holds is read from the decode policy's
// prefix index when it keeps one (prefix-cache), else from an index
// dynamic-pd-split keeps itself. Both-role instances sit in both pools, and
// the sub-policies' load terms share them between the two kinds of work.
package pdsplit
