package metricbased

import "github.com/llmrouter/llmrouter/scheduler/policy"

// The llm_scheduler.policies keys this policy reads: its plugin parameters
// in an endpoint_picker_config file (scheduler/framework).
func init() {
	policy.RegisterKnobs(Name, "waiting_weight", "kv_cache_weight", "running_weight", "throughput_weight")
}
