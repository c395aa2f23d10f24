// Package scheduler is the global brain: the live registry of engine
// instances (fed by agent streams, or directly by the simulator), the
// scheduling policy, the in-flight bookkeeping and the admission queue
// (ARCHITECTURE §6). scheduler/server puts it on gRPC; the all-in-one binary
// and the simulator call it in-process.
//
// Time. Nothing here reads the wall clock for behaviour: the scheduler takes
// a policy.Clock, and all time-based housekeeping — marking silent the
// instances that missed llm_scheduler.missed_reports reports (and removing
// them after llm_scheduler.silent_grace), releasing picks never
// reported back after llm_scheduler.inflight_timeout, re-evaluating the
// queue every llm_gateway.wait_schedule_try_period and shedding requests that
// waited out llm_gateway.wait_schedule_timeout — happens in Tick, which the
// server calls from a ticker and the simulator calls as virtual time
// advances. (The pick-duration histogram alone uses the wall clock: it
// measures the decision's CPU cost.)
//
// Membership. Silence is not death: an instance whose reports stop (or
// whose agent's stream ends: Orphan) is no longer picked but stays in EDS
// until its engine is confirmed down — its
// agent reports it unhealthy, or Deps.Probe of its address fails — or
// silent_grace passes; while more than llm_scheduler.panic_threshold of the
// fleet is silent nobody is removed for silence (a panic episode, exported
// as llmrouter_scheduler_membership_panic). After a stall of the scheduler
// itself (Run's tick late by stallTicks periods) silence counts afresh: the
// reports sent meanwhile are not read yet. A request whose candidates are
// all silent is answered PASSTHROUGH: the gateway lets Envoy balance over
// the endpoints it has. A new registration waits as "verifying" — neither
// picked nor published — until Deps.Verify (scheduler/verify) confirms its
// address answers as the engine its agent reported; an address a live
// registration holds is refused.
//
// Candidates. A request goes to instances that serve its model, are healthy,
// verified, reporting (not silent) and not draining. A model no registered instance serves is rejected
// with 404, unless llm_scheduler.default_pool names a model: the instances
// serving that model then take such requests, the model name unchanged
// (counted as fallback "default_pool"). A known model with no routable
// instance is rejected with 503. Instances over a saturation threshold
// are held back (saturation-filter, the scheduler/admission judgment run
// as a framework stage filter after routable-filter: max_waiting,
// max_kv_cache_usage, and
// max_predicted_wait — the predicted wait at the engine by the policies'
// cost model); when all are, the request queues.
//
// In-flight bookkeeping. Each pick is recorded on its primary instance until
// a gateway reports the outcome (or inflight_timeout passes). Until a
// report's counts show it, the pick counts as one request and its prompt
// tokens (policy.Instance.InflightRequests / InflightPromptTokens): a
// report folds in only as many of the oldest unreported picks as its
// running+waiting can hold (under load a request may reach its engine
// after the next scrape), and a pick no report has shown within 5 s is
// folded anyway — its outcome report was lost with its gateway — so that
// from then on it is not added
// again. The expected output (max_tokens, or 256 when unset) counts in
// InflightDecodeTokens until completion, since engines report no
// per-request progress. The saturation check adds the unreported picks to
// the reported waiting queue, their prompts to the KV usage and to the
// prefill queued ahead of a new request. After each report admission also
// keeps two facts of the engine in its view: its batch limit (the running
// count it was last seen holding requests back at, on two reports in a
// row) and its speed against the cost model.
//
// Queue. Overload is shed, not deferred. Ordered by priority (larger first)
// then arrival; bounded by llm_gateway.max_queue_size (beyond: 429 with
// Retry-After, shed reason "queue_full"); re-evaluated on every report,
// completion, registration or resume, and at least every
// wait_schedule_try_period. A queued request goes to an instance once its
// predicted wait there is under both max_predicted_wait and what is left of
// the request's own wait_schedule_timeout, so it starts about when its
// deadline says. At the deadline it is shed with 429 and a Retry-After (the
// predicted time until an instance has room, 1 s to wait_schedule_timeout;
// shed reason "queue_timeout"), never forced onto a saturated engine, or
// rejected 503 if no instance is left. Pick blocks on the queue; TryPick is
// the non-blocking form (same code) whose final answer arrives through a
// callback.
//
// Policies are called under one mutex, serially with their Observer hooks,
// so they need no locks of their own.
package scheduler
