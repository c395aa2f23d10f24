package agent

// Stats is the unified view of one scrape, whatever the engine. A nil field
// is unknown: the engine does not expose it (or its dump did not include it).
type Stats struct {
	Running               *float64
	Waiting               *float64
	KVCacheUsage          *float64 // 0..1
	PromptTokensTotal     *float64 // monotonic counter
	GenerationTokensTotal *float64 // monotonic counter
	// Rates the engine itself reports (gauges), used when it exposes no
	// counters to derive them from.
	PromptTokensPerSecond     *float64
	GenerationTokensPerSecond *float64
	BlockSize                 *int64
	NumGPUBlocks              *int64
	PrefixCacheHitRatio       *float64 // 0..1
	// Models named by the metrics' labels (the live agent prefers /v1/models).
	Models []string
	// LoRA adapters from vLLM's lora_requests_info: those its running
	// requests use (LoRAAdapters), those its waiting requests wait to have
	// loaded (LoRAWaiting), and how many it runs at once (MaxLoRA, its
	// --max-loras; 0 with LoRA off). nil when the engine does not say; a
	// non-nil LoRAAdapters, empty or not, is the engine's own account, which
	// the agent reports as such (Report.lora_state_known).
	LoRAAdapters []string
	LoRAWaiting  []string
	MaxLoRA      *int64
	// Role the engine says it plays ("prefill", "decode"), "" when it does
	// not say (SGLang's engine_type label).
	Role string
}

func f64(v float64) *float64 { return &v }
func i64(v int64) *int64     { return &v }

// setSum sets *dst to the sum of name's series when it exists.
func setSum(dst **float64, m Metrics, name string, match map[string]string) bool {
	if v, ok := m.Sum(name, match); ok {
		*dst = f64(v)
		return true
	}
	return false
}

// setMax sets *dst to the largest of name's series when it exists.
func setMax(dst **float64, m Metrics, name string, match map[string]string) bool {
	if v, ok := m.Max(name, match); ok {
		*dst = f64(v)
		return true
	}
	return false
}

// setFirst tries names in order (newest naming first) with setter.
func setFirst(dst **float64, m Metrics, set func(**float64, Metrics, string, map[string]string) bool, names ...string) {
	for _, n := range names {
		if set(dst, m, n, nil) {
			return
		}
	}
}

// clamp01 keeps a usage ratio inside 0..1: a few engines briefly report
// slightly above 1 (rounding) or a percentage-like -1 for "unknown".
func clamp01(p *float64) *float64 {
	if p == nil {
		return nil
	}
	v := *p
	if v < 0 {
		return nil
	}
	if v > 1 {
		v = 1
	}
	return &v
}
