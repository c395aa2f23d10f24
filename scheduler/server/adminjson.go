package server

import (
	"time"

	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// Instance is one engine instance as /admin/instances (and /admin/drain,
// /admin/resume) show it: snake_case keys, enums as strings, durations in
// seconds, times in RFC 3339. The report fields use the names `llmrouter
// agent inspect` prints. This is the API: registry.Instance may change
// freely behind it.
type Instance struct {
	ID            string   `json:"id"`
	Address       string   `json:"address"`
	Engine        string   `json:"engine"`
	EngineVersion string   `json:"engine_version"`
	AgentVersion  string   `json:"agent_version"`
	Models        []string `json:"models"`
	LoRAs         []string `json:"loras"`
	// ServedLoRAs are the adapters the engine serves under their own model
	// names (its registration's, from /v1/models): requests naming one are
	// routed among the instances listing it. LoRAs are those it runs.
	ServedLoRAs []string `json:"served_loras"`
	// WaitingLoRAs and MaxLoRA: adapters waiting to be loaded and the
	// engine's adapter slots, 0 when unknown (vLLM's lora_requests_info).
	WaitingLoRAs []string `json:"waiting_loras"`
	MaxLoRA      int64    `json:"max_lora"`
	// Role is "both", "prefill" or "decode".
	Role string `json:"role"`
	// State is registry.Instance.State: "healthy", "unhealthy", "draining",
	// "verifying" or "silent". Healthy is what the agent last reported.
	State           string `json:"state"`
	Healthy         bool   `json:"healthy"`
	UnhealthyReason string `json:"unhealthy_reason,omitempty"`
	Draining        bool   `json:"draining"`
	NumGPUBlocks    int64  `json:"num_gpu_blocks"`
	BlockSize       int64  `json:"block_size"`
	BootstrapPort   int32  `json:"bootstrap_port,omitempty"`

	ReportIntervalSeconds float64   `json:"report_interval_seconds"`
	Registered            time.Time `json:"registered"`
	LastReport            time.Time `json:"last_report"`
	Sequence              uint64    `json:"sequence"`

	Running                   int64    `json:"running"`
	Waiting                   int64    `json:"waiting"`
	KVCacheUsage              float64  `json:"kv_cache_usage"`
	PromptTokensTotal         float64  `json:"prompt_tokens_total"`
	GenerationTokensTotal     float64  `json:"generation_tokens_total"`
	PromptTokensPerSecond     float64  `json:"prompt_tokens_per_second"`
	GenerationTokensPerSecond float64  `json:"generation_tokens_per_second"`
	PrefixCacheHitRatio       *float64 `json:"prefix_cache_hit_ratio"` // null when the engine does not say
}

// instanceJSON converts a registry entry for the admin API.
func instanceJSON(i registry.Instance) Instance {
	out := Instance{
		ID: i.ID, Address: i.Address, Engine: i.Engine, EngineVersion: i.EngineVersion, AgentVersion: i.AgentVersion,
		Models: nonNil(i.Models), LoRAs: nonNil(i.LoRAs), ServedLoRAs: nonNil(i.Adapters), WaitingLoRAs: nonNil(i.WaitingLoRAs), MaxLoRA: i.MaxLoRA,
		Role: i.Role.String(), State: i.State(),
		Healthy: i.Healthy, UnhealthyReason: i.UnhealthyReason, Draining: i.Draining,
		NumGPUBlocks: i.NumGPUBlocks, BlockSize: i.BlockSize, BootstrapPort: i.BootstrapPort,
		ReportIntervalSeconds: i.ReportInterval.Seconds(), Registered: i.Registered.UTC(), LastReport: i.LastReport.UTC(),
		Sequence: i.Sequence, Running: i.Running, Waiting: i.Waiting, KVCacheUsage: i.KVCacheUsage,
		PromptTokensTotal: i.PromptTokensTotal, GenerationTokensTotal: i.GenTokensTotal,
		PromptTokensPerSecond: i.PromptTPS, GenerationTokensPerSecond: i.GenTPS,
	}
	if i.PrefixCacheHitRatio >= 0 {
		r := i.PrefixCacheHitRatio
		out.PrefixCacheHitRatio = &r
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
