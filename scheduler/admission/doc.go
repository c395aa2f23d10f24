// Package admission judges, at pick time, whether an engine instance has
// room for one more request: the saturation filter the scheduler applies to
// a request's candidates before its policy ranks them. An instance is
// saturated when any of these holds (checked in this order):
//
//   - max_waiting: its reported waiting queue plus the picks it has not
//     reported yet reaches llm_scheduler.max_waiting (a hard cap, in
//     requests; 0 turns it off);
//   - kv_cache: its reported KV cache usage plus the KV the unreported
//     prompts will take reaches llm_scheduler.max_kv_cache_usage;
//   - predicted_wait: the time a new request is predicted to wait there
//     before it runs reaches llm_scheduler.max_predicted_wait (0 turns it
//     off), so an engine's queue stays short in time, not only in count.
//
// The predicted wait is the time of the work queued ahead of the request,
// priced by the same cost model prefix-cache uses (scheduler/costmodel,
// llm_scheduler.cost_model): the uncached prefill of the requests waiting
// there and of the picks not yet in a report, chunked at max_batched_tokens
// with the running batch decoding in every step; plus, once the engine has
// shown its batch limit (it held requests back while running that many on
// two reports in a row, policy.Instance.BatchLimit: one report catching a
// request that arrived between two engine steps says nothing), the time
// for the running batch to turn over often enough to seat the ones queued
// beyond that limit and then this one (a whole output's time per batch:
// the running requests may have started together, so a place is only sure
// to free when all finish); all
// divided by the engine's speed measured against the model from its last
// report (costmodel.Work), so a slower GPU than the model's predicts
// longer waits. An instance with nothing queued and a free place in its
// batch predicts no wait.
//
// Two waits are predicted: the expected one, held against
// max_predicted_wait, and the longest — the running batch may have started
// together and finish together, so a place is only sure to free when it
// turns over; an engine that has not yet shown its limit is taken to have
// as many places again as it runs (at least 4), and a request beyond those
// is priced as if its limit were what it runs — held against what is left of the request's own
// wait_schedule_timeout (SaturatedWithin), so a request starts about when
// its deadline says even when the prediction is off. A request a report shows waiting is priced at the
// mean prompt (the scheduler knows its size only until that report).
//
// Saturation is plain data in, a verdict out: it reads only the
// policy.Instance it is given and two running means it learns (prompt and
// output length), and knows nothing of the scheduler's internals, so any
// pick path (the scheduler, a filter chain) can apply it. The one thing it
// writes is the verdict an instance's owner lets it remember
// (policy.Instance.SaturationMemo, see Remember): the exact verdict, kept
// until the owner changes the instance, so a decision over a large fleet
// reads one word of most candidates. It is not safe for concurrent use;
// the scheduler calls it under its lock, serially with the policies.
package admission
