package pdsplit

import "github.com/llmrouter/llmrouter/scheduler/policy"

// The llm_scheduler.policies keys this policy reads: its plugin parameters
// in an endpoint_picker_config file (scheduler/framework).
func init() {
	policy.RegisterKnobs(DynamicName, "pd_min_prefill_tokens", "pd_decode_busy_load", "prefix_index_max_blocks", "prefix_index_default_blocks")
}
