package prefixcache

import "github.com/llmrouter/llmrouter/scheduler/policy"

// The llm_scheduler.policies keys this policy reads: its plugin parameters
// in an endpoint_picker_config file (scheduler/framework).
func init() {
	policy.RegisterKnobs(Name, "prefix_index_max_blocks", "prefix_index_default_blocks", "step_time", "prefill_token_time",
		"decode_token_time", "max_batched_tokens", "decode_weight", "max_load_ratio", "speed_calibration", "default_output_tokens")
}
