package agent

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// Adapter knows one engine: how to recognise it and how its metric names map
// to Stats. Engine names are the values llm_gateway.infer_backend accepts.
type Adapter struct {
	Name string
	// Prefixes and Names recognise the engine's metrics; MinNames is the
	// number of distinct matching names detection needs (engines whose names
	// carry no prefix need more than one, so one generic name cannot claim
	// an unrelated exporter).
	Prefixes []string
	Names    []string
	MinNames int
	// OwnedBy lists the /v1/models "owned_by" values the engine uses.
	OwnedBy []string
	// MetricsPath and HealthPath are the engine's defaults (agent.metrics_path
	// and agent.health_path override them).
	MetricsPath string
	HealthPath  string
	// VersionPath answers JSON carrying the engine version in VersionField.
	VersionPath  string
	VersionField string
	extract      func(Metrics, *Stats)
}

// Adapters lists every engine the agent knows, in detection tie-break order.
var Adapters = []*Adapter{
	{
		Name: "vllm", Prefixes: []string{"vllm:"}, MinNames: 1, OwnedBy: []string{"vllm"},
		MetricsPath: "/metrics", HealthPath: "/health", VersionPath: "/version", VersionField: "version",
		extract: extractVLLM,
	},
	{
		Name: "sglang", Prefixes: []string{"sglang:"}, MinNames: 1, OwnedBy: []string{"sglang"},
		MetricsPath: "/metrics", HealthPath: "/health", VersionPath: "/get_server_info", VersionField: "version",
		extract: extractSGLang,
	},
	{
		// BladeLLM's exporter is not public; these are the names the PAI-EAS
		// documentation lists. agent.metric_map covers anything else.
		Name:     "bladellm",
		Names:    []string{"decode_batch_size_mean", "wait_queue_size_mean", "block_usage_gpu_mean", "tps_total", "tps_out"},
		MinNames: 2, OwnedBy: []string{"bladellm"},
		MetricsPath: "/metrics", HealthPath: "/health",
		extract: extractBladeLLM,
	},
	{
		// trtllm-serve (trtllm_ at /prometheus/metrics; trtllm: when Dynamo
		// relays it; pytrtllm: on a development branch) and Triton's
		// TensorRT-LLM backend (nv_trt_llm_*, Triton's metrics port).
		Name: "trtllm", Prefixes: []string{"trtllm_", "trtllm:", "pytrtllm:", "nv_trt_llm_"}, MinNames: 1,
		OwnedBy:     []string{"tensorrt_llm", "trtllm", "nvidia"},
		MetricsPath: "/prometheus/metrics", HealthPath: "/health", VersionPath: "/version", VersionField: "version",
		extract: extractTRTLLM,
	},
	{
		Name: "tgi", Prefixes: []string{"tgi_"}, MinNames: 1, OwnedBy: []string{"tgi", "text-generation-inference"},
		MetricsPath: "/metrics", HealthPath: "/health", VersionPath: "/info", VersionField: "version",
		extract: extractTGI,
	},
	{
		Name: "llamacpp", Prefixes: []string{"llamacpp:"}, MinNames: 1, OwnedBy: []string{"llamacpp", "llama.cpp"},
		MetricsPath: "/metrics", HealthPath: "/health", VersionPath: "/props", VersionField: "build_info",
		extract: extractLlamaCpp,
	},
	{
		Name: "lmdeploy", Prefixes: []string{"lmdeploy:"}, MinNames: 1, OwnedBy: []string{"lmdeploy"},
		MetricsPath: "/metrics", HealthPath: "/health",
		extract: extractLMDeploy,
	},
}

// AdapterFor returns the adapter named name.
func AdapterFor(name string) (*Adapter, error) {
	for _, a := range Adapters {
		if a.Name == name {
			return a, nil
		}
	}
	return nil, fmt.Errorf("unknown engine %q: accepted: %s", name, strings.Join(EngineNames(), ", "))
}

// EngineNames lists the known engines.
func EngineNames() []string {
	out := make([]string, len(Adapters))
	for i, a := range Adapters {
		out[i] = a.Name
	}
	return out
}

// owns reports whether a metric name belongs to the engine.
func (a *Adapter) owns(name string) bool {
	for _, p := range a.Prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	for _, n := range a.Names {
		if n == name {
			return true
		}
	}
	return false
}

// Extract maps a scrape to Stats with this adapter, then applies the
// configured overrides.
func (a *Adapter) Extract(m Metrics, mm MetricMap) Stats {
	var s Stats
	a.extract(m, &s)
	mm.apply(m, &s)
	s.KVCacheUsage = clamp01(s.KVCacheUsage)
	s.PrefixCacheHitRatio = clamp01(s.PrefixCacheHitRatio)
	return s
}

// DetectKind names the engine from what any HTTP client can read of it: its
// metric names (Detect), else the owned_by values /v1/models lists. The
// agent detects its engine with it, and the scheduler checks with it that an
// advertised address answers as the engine its agent reported.
func DetectKind(m Metrics, ownedBy []string) (engine string, ok bool) {
	if engine, ok = Detect(m); ok {
		return engine, true
	}
	for _, o := range ownedBy {
		for _, ad := range Adapters {
			if slices.Contains(ad.OwnedBy, strings.ToLower(o)) {
				engine, ok = ad.Name, true
			}
		}
	}
	return engine, ok
}

// Detect names the engine whose metric names the scrape holds most of. ok is
// false when none reaches its MinNames.
func Detect(m Metrics) (engine string, ok bool) {
	best, bestN := "", 0
	for _, a := range Adapters {
		n := 0
		for name := range m {
			if a.owns(name) {
				n++
			}
		}
		if n >= a.MinNames && n > bestN {
			best, bestN = a.Name, n
		}
	}
	return best, bestN > 0
}

// ---------------------------------------------------------------- engines

func extractVLLM(m Metrics, s *Stats) {
	setSum(&s.Running, m, "vllm:num_requests_running", nil)
	setSum(&s.Waiting, m, "vllm:num_requests_waiting", nil)
	// kv_cache_usage_perc from 0.9.2 on (V1); gpu_cache_usage_perc up to 0.10.
	setFirst(&s.KVCacheUsage, m, setMax, "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
	setSum(&s.PromptTokensTotal, m, "vllm:prompt_tokens_total", nil)
	setSum(&s.GenerationTokensTotal, m, "vllm:generation_tokens_total", nil)
	s.BlockSize, s.NumGPUBlocks = capacityFromInfo(m, "vllm:cache_config_info", []string{"block_size"}, []string{"num_gpu_blocks"})
	// V1 counts prefix cache queries and hits in tokens; V0 exports a rate.
	if r, ok := ratio(m, "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"); ok {
		s.PrefixCacheHitRatio = f64(r)
	} else if r, ok := ratio(m, "vllm:gpu_prefix_cache_hits_total", "vllm:gpu_prefix_cache_queries_total"); ok {
		s.PrefixCacheHitRatio = f64(r)
	} else {
		setMax(&s.PrefixCacheHitRatio, m, "vllm:gpu_prefix_cache_hit_rate", nil)
	}
	s.Models = m.LabelValues("model_name", prefixed("vllm:"))
	s.LoRAAdapters, s.LoRAWaiting, s.MaxLoRA = loraFromInfo(m, "vllm:lora_requests_info")
}

func extractSGLang(m Metrics, s *Stats) {
	// By default SGLang exports scheduler metrics from one rank per
	// data-parallel group (tp_rank tells them apart), so series add up.
	setSum(&s.Running, m, "sglang:num_running_reqs", nil)
	setSum(&s.Waiting, m, "sglang:num_queue_reqs", nil)
	setMax(&s.KVCacheUsage, m, "sglang:token_usage", nil)
	setSum(&s.PromptTokensTotal, m, "sglang:prompt_tokens_total", nil)
	setSum(&s.GenerationTokensTotal, m, "sglang:generation_tokens_total", nil)
	setSum(&s.GenerationTokensPerSecond, m, "sglang:gen_throughput", nil)
	setMax(&s.PrefixCacheHitRatio, m, "sglang:cache_hit_rate", nil)
	// SGLang pages its KV pool by token: capacity is a token count.
	if v, ok := m.Sum("sglang:max_total_num_tokens", nil); ok && v > 0 {
		s.BlockSize, s.NumGPUBlocks = i64(1), i64(int64(v))
	}
	s.Models = m.LabelValues("model_name", prefixed("sglang:"))
	for _, t := range m.LabelValues("engine_type", prefixed("sglang:")) {
		if t == "prefill" || t == "decode" {
			s.Role = t
		}
	}
}

func extractBladeLLM(m Metrics, s *Stats) {
	setSum(&s.Running, m, "decode_batch_size_mean", nil)
	setSum(&s.Waiting, m, "wait_queue_size_mean", nil)
	setMax(&s.KVCacheUsage, m, "block_usage_gpu_mean", nil)
	// BladeLLM reports throughput, not counters: tps_total counts input and
	// output tokens, tps_out output only.
	total, okT := m.Sum("tps_total", nil)
	out, okO := m.Sum("tps_out", nil)
	if okO {
		s.GenerationTokensPerSecond = f64(out)
	}
	if okT && okO {
		s.PromptTokensPerSecond = f64(math.Max(0, total-out))
	}
}

func extractTRTLLM(m Metrics, s *Stats) {
	for _, fam := range []string{"nv_trt_llm_request_metrics", "nv_trt_llm_request_statistics"} {
		if m.Has(fam) {
			extractTriton(m, s)
			return
		}
	}
	prefix := ""
	for _, p := range []string{"trtllm_", "trtllm:", "pytrtllm:"} {
		for name := range m {
			if strings.HasPrefix(name, p) {
				prefix = p
				break
			}
		}
		if prefix != "" {
			break
		}
	}
	if prefix == "" {
		return
	}
	setSum(&s.Running, m, prefix+"num_requests_running", nil)
	setSum(&s.Waiting, m, prefix+"num_requests_waiting", nil)
	setMax(&s.KVCacheUsage, m, prefix+"kv_cache_utilization", nil)
	setSum(&s.PromptTokensTotal, m, prefix+"prompt_tokens_total", nil)
	setSum(&s.GenerationTokensTotal, m, prefix+"generation_tokens_total", nil)
	setMax(&s.PrefixCacheHitRatio, m, prefix+"kv_cache_hit_rate", nil)
	if v, ok := m.Max(prefix+"kv_cache_tokens_per_block", nil); ok && v > 0 {
		s.BlockSize = i64(int64(v))
	}
	if v, ok := m.Sum(prefix+"kv_cache_max_blocks", nil); ok && v > 0 {
		s.NumGPUBlocks = i64(int64(v))
	}
	s.Models = m.LabelValues("model_name", prefixed(prefix))
}

// extractTriton reads Triton's TensorRT-LLM backend, which puts the kind of
// each number in a label (request_type, kv_cache_block_type). Releases named
// the families *_metrics or *_statistics and the block types short or long.
func extractTriton(m Metrics, s *Stats) {
	req, kv := "nv_trt_llm_request_metrics", "nv_trt_llm_kv_cache_block_metrics"
	if !m.Has(req) {
		req = "nv_trt_llm_request_statistics"
	}
	if !m.Has(kv) {
		kv = "nv_trt_llm_kv_cache_block_statistics"
	}
	setSum(&s.Running, m, req, map[string]string{"request_type": "active"})
	setSum(&s.Waiting, m, req, map[string]string{"request_type": "waiting"})
	kvType := func(types ...string) (float64, bool) {
		for _, t := range types {
			if v, ok := m.Sum(kv, map[string]string{"kv_cache_block_type": t}); ok {
				return v, true
			}
		}
		return 0, false
	}
	if !setMax(&s.KVCacheUsage, m, kv, map[string]string{"kv_cache_block_type": "fraction"}) {
		used, okU := kvType("used", "used_blocks")
		max, okM := kvType("max", "max_blocks")
		if okU && okM && max > 0 {
			s.KVCacheUsage = f64(used / max)
		}
	}
	if v, ok := kvType("tokens_per", "tokens_per_block"); ok && v > 0 {
		s.BlockSize = i64(int64(v))
	}
	if v, ok := kvType("max", "max_blocks"); ok && v > 0 {
		s.NumGPUBlocks = i64(int64(v))
	}
	s.Models = m.LabelValues("model", prefixed("nv_trt_llm_"))
}

func extractTGI(m Metrics, s *Stats) {
	setSum(&s.Running, m, "tgi_batch_current_size", nil)
	setSum(&s.Waiting, m, "tgi_queue_size", nil)
	// TGI has no token counters; its per-request length histograms' sums are
	// the same totals.
	setSum(&s.PromptTokensTotal, m, "tgi_request_input_length_sum", nil)
	setSum(&s.GenerationTokensTotal, m, "tgi_request_generated_tokens_sum", nil)
}

func extractLlamaCpp(m Metrics, s *Stats) {
	setSum(&s.Running, m, "llamacpp:requests_processing", nil)
	setSum(&s.Waiting, m, "llamacpp:requests_deferred", nil)
	// Removed from llama-server in mid 2025; read while older builds run.
	setMax(&s.KVCacheUsage, m, "llamacpp:kv_cache_usage_ratio", nil)
	setSum(&s.PromptTokensTotal, m, "llamacpp:prompt_tokens_total", nil)
	setSum(&s.GenerationTokensTotal, m, "llamacpp:tokens_predicted_total", nil)
}

func extractLMDeploy(m Metrics, s *Stats) {
	setSum(&s.Running, m, "lmdeploy:num_requests_running", nil)
	setSum(&s.Waiting, m, "lmdeploy:num_requests_waiting", nil)
	setMax(&s.KVCacheUsage, m, "lmdeploy:gpu_cache_usage_perc", nil)
	setSum(&s.PromptTokensTotal, m, "lmdeploy:prompt_tokens_total", nil)
	setSum(&s.GenerationTokensTotal, m, "lmdeploy:generation_tokens_total", nil)
	// The PyTorch engine calls the block size block_size, TurboMind
	// cache_block_seq_len; num_gpu_blocks 0 means "sized automatically".
	s.BlockSize, s.NumGPUBlocks = capacityFromInfo(m, "lmdeploy:backend_config_info",
		[]string{"block_size", "cache_block_seq_len"}, []string{"num_gpu_blocks"})
	s.Models = m.LabelValues("model_name", prefixed("lmdeploy:"))
}

// ---------------------------------------------------------------- helpers

func prefixed(p string) func(string) bool {
	return func(name string) bool { return strings.HasPrefix(name, p) }
}

// ratio is hits/queries of two counters, when queries is positive.
func ratio(m Metrics, hits, queries string) (float64, bool) {
	h, okH := m.Sum(hits, nil)
	q, okQ := m.Sum(queries, nil)
	if !okH || !okQ || q <= 0 {
		return 0, false
	}
	return h / q, true
}

// capacityFromInfo reads KV capacity from an info-style gauge whose labels
// carry the configuration. Several data-parallel engines (the engine label)
// each own their blocks, so block counts add up across engines.
func capacityFromInfo(m Metrics, name string, sizeLabels, blockLabels []string) (blockSize, numBlocks *int64) {
	perEngine := map[string]int64{}
	for _, s := range m[name] {
		if v, ok := intLabel(s.Labels, sizeLabels); ok && v > 0 {
			if blockSize == nil || v > *blockSize {
				blockSize = i64(v)
			}
		}
		if v, ok := intLabel(s.Labels, blockLabels); ok && v > 0 {
			e := s.Labels["engine"]
			if v > perEngine[e] {
				perEngine[e] = v
			}
		}
	}
	if len(perEngine) > 0 {
		var total int64
		for _, v := range perEngine {
			total += v
		}
		numBlocks = i64(total)
	}
	return blockSize, numBlocks
}

func intLabel(labels map[string]string, names []string) (int64, bool) {
	for _, n := range names {
		if v, err := strconv.ParseInt(strings.TrimSpace(labels[n]), 10, 64); err == nil {
			return v, true
		}
	}
	return 0, false
}

// loraFromInfo reads vLLM's lora_requests_info gauge. vLLM starts a new
// series for every change of its labels and sets the series' value to the
// time of the change, so every combination ever seen stays in the scrape and
// the newest is the current one. A series naming no running and no waiting
// adapter is skipped, as the Gateway API Inference Extension skips it: the
// engine went idle and still holds the adapters it last ran, which the
// newest series naming some adapter lists. max_lora is engine configuration,
// the same in every series; it is read from the newest one, so an idle
// engine's is known too, and is nil when not a whole number >= 0. All three
// are nil when the gauge is absent; the lists are empty, not nil, when it is
// present but names no adapter.
func loraFromInfo(m Metrics, name string) (running, waiting []string, maxLoRA *int64) {
	samples := m[name]
	if len(samples) == 0 {
		return nil, nil, nil
	}
	var newest, active *Sample
	for i := range samples {
		s := &samples[i]
		if newest == nil || s.Value > newest.Value {
			newest = s
		}
		named := namesAdapter(s.Labels["running_lora_adapters"]) || namesAdapter(s.Labels["waiting_lora_adapters"])
		if named && (active == nil || s.Value > active.Value) {
			active = s
		}
	}
	running, waiting = []string{}, []string{}
	if active != nil {
		running = adapterList(active.Labels["running_lora_adapters"])
		waiting = adapterList(active.Labels["waiting_lora_adapters"])
	}
	if v, err := strconv.ParseInt(strings.TrimSpace(newest.Labels["max_lora"]), 10, 64); err == nil && v >= 0 {
		maxLoRA = i64(v)
	}
	return running, waiting, maxLoRA
}

// namesAdapter reports whether a comma-separated label names any adapter.
func namesAdapter(label string) bool {
	return strings.TrimFunc(label, func(r rune) bool { return r == ',' || unicode.IsSpace(r) }) != ""
}

// adapterList splits a comma-separated label into sorted distinct names.
func adapterList(label string) []string {
	out := []string{}
	for _, a := range strings.Split(label, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}
