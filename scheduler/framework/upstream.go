package framework

// upstreamTypes are plugin types of the Gateway API Inference Extension and
// llm-d this framework does not register, with what stands for each here:
// a file naming one is refused saying so, not only as an unknown type.
var upstreamTypes = map[string]string{
	"pd-profile-handler":          pdHint,
	"disagg-profile-handler":      pdHint,
	"prefix-based-pd-decider":     pdHint,
	"always-disagg-pd-decider":    pdHint,
	"prefill-header-handler":      "the pd proxy beside each decode engine (llmrouter agent --pd-proxy) sends the prompt to the prefill instance the scheduler chose; nothing to declare",
	"precise-prefix-cache-scorer": "it reads the engines' KV-cache events, which the agents do not forward; prefix-cache-scorer estimates the same from the scheduler's own picks",
	"load-aware-scorer":           "use queue-scorer (the waiting queue) or load-scorer (running + waiting + unreported picks)",
	"low-queue-filter":            "saturation-filter's maxWaiting keeps instances under a queue length, ahead of every profile",
	"least-queue-filter":          "weigh queue-scorer instead",
	"least-kv-cache-filter":       "weigh kv-cache-scorer instead",
	"lora-affinity-filter":        "weigh lora-affinity-scorer instead",
	"decision-tree-filter":        "profiles here are a list of filters, scorers and a picker; express the tree's preference as scorer weights",
	"weighted-random-picker":      "use max-score-picker or random-picker",
	"by-label":                    "agents report no Kubernetes labels; decode-filter and prefill-filter select by the role agents report",
	"by-label-selector":           "agents report no Kubernetes labels; decode-filter and prefill-filter select by the role agents report",
}

const pdHint = "disaggregation is llm_scheduler.policy dynamic-pd-split (or pd-split) here, with llm_scheduler.prefill_policy and decode_policy naming this file's prefill and decode profiles; its decider's threshold is parameter pdMinPrefillTokens of plugin type dynamic-pd-split"

// upstreamHint says what stands for an upstream type here, "" for any
// other type.
func upstreamHint(typ string) string {
	if h, ok := upstreamTypes[typ]; ok {
		return " (" + typ + " is not implemented: " + h + ")"
	}
	return ""
}
