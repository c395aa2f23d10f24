package enginesim

import (
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// vLLM V1's histogram buckets, so dashboards and adapters see familiar
// series.
var (
	ttftBuckets    = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0}
	tpotBuckets    = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0}
	latencyBuckets = []float64{0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0}
)

// tokenBuckets is vLLM's 1-2-5 series up to the model length.
func tokenBuckets(maxLen int) []float64 {
	var out []float64
	for m := 1; ; m *= 10 {
		for _, k := range []int{1, 2, 5} {
			if k*m > maxLen {
				return out
			}
			out = append(out, float64(k*m))
		}
	}
}

// metrics renders vLLM V1's /metrics: the engine's state and counters from
// the published snapshot (const metrics, so they are exactly the model's
// numbers) and per-request histograms observed by the engine goroutine.
type metrics struct {
	s      *Server
	labels prometheus.Labels

	running, waiting, kvUsage                     *prometheus.Desc
	prefixQueries, prefixHits                     *prometheus.Desc
	promptTotal, genTotal, preemptions, cacheInfo *prometheus.Desc
	loraInfo                                      *prometheus.Desc
	cacheInfoValues                               []string
	ttft, tpot, itl, e2e, queue, reqTPOT          prometheus.Histogram
	promptTokens, genTokens                       prometheus.Histogram
	success                                       *prometheus.CounterVec
	histograms                                    []prometheus.Collector
	// pd counts disaggregated requests served, by side (prefill: computed
	// a prompt for another instance; decode: received one). The name is
	// the simulator's own: no engine exports this count.
	pd *prometheus.CounterVec

	sglang                   bool
	usedTokens, cacheHitRate *prometheus.Desc
}

func newMetrics(s *Server) *metrics {
	if s.opts.API == APISGLang {
		return newSGLangMetrics(s)
	}
	labels := prometheus.Labels{"model_name": s.opts.Model, "engine": "0"}
	m := &metrics{s: s, labels: labels}
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, nil, labels)
	}
	m.running = desc("vllm:num_requests_running", "Number of requests in model execution batches.")
	m.waiting = desc("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
	m.kvUsage = desc("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
	m.prefixQueries = desc("vllm:prefix_cache_queries_total", "Prefix cache queries, in terms of number of queried tokens.")
	m.prefixHits = desc("vllm:prefix_cache_hits_total", "Prefix cache hits, in terms of number of cached tokens.")
	m.promptTotal = desc("vllm:prompt_tokens_total", "Number of prefill tokens processed.")
	m.genTotal = desc("vllm:generation_tokens_total", "Number of generation tokens processed.")
	m.preemptions = desc("vllm:num_preemptions_total", "Cumulative number of preemption from the engine.")

	c := s.opts.Engine
	cacheLabels := []string{"block_size", "cache_dtype", "enable_prefix_caching", "engine", "gpu_memory_utilization", "num_cpu_blocks", "num_gpu_blocks"}
	m.cacheInfo = prometheus.NewDesc("vllm:cache_config_info", "Information of the LLMEngine CacheConfig", cacheLabels, nil)
	m.cacheInfoValues = []string{strconv.Itoa(c.BlockSize), "auto", pyBool(!c.DisablePrefixCaching), "0", "0.9", "None", strconv.Itoa(c.NumBlocks)}
	if len(s.servedLoRAs()) > 0 || s.opts.RuntimeLoRA {
		m.loraInfo = prometheus.NewDesc("vllm:lora_requests_info", "Running stats on lora requests.",
			[]string{"max_lora", "running_lora_adapters", "waiting_lora_adapters"}, nil)
	}

	hist := func(name, help string, buckets []float64) prometheus.Histogram {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets, ConstLabels: labels})
		m.histograms = append(m.histograms, h)
		return h
	}
	m.ttft = hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", ttftBuckets)
	m.tpot = hist("vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.", tpotBuckets)
	m.itl = hist("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", tpotBuckets)
	m.reqTPOT = hist("vllm:request_time_per_output_token_seconds", "Histogram of time_per_output_token_seconds per request.", tpotBuckets)
	m.e2e = hist("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", latencyBuckets)
	m.queue = hist("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", latencyBuckets)
	maxLen := s.opts.MaxModelLen
	m.promptTokens = hist("vllm:request_prompt_tokens", "Number of prefill tokens processed.", tokenBuckets(maxLen))
	m.genTokens = hist("vllm:request_generation_tokens", "Number of generation tokens processed.", tokenBuckets(maxLen))
	m.success = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vllm:request_success_total", Help: "Count of successfully processed requests.", ConstLabels: labels}, []string{"finished_reason"})
	for _, r := range []string{"stop", "length", "abort"} {
		m.success.WithLabelValues(r)
	}
	m.histograms = append(m.histograms, m.success)
	m.addPD()
	return m
}

func (m *metrics) addPD() {
	m.pd = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "enginesim_pd_requests_total",
		Help: "Disaggregated requests served, by side: prefill computed a prompt for another instance, decode received one."}, []string{"side"})
	for _, r := range []string{RolePrefill, RoleDecode} {
		m.pd.WithLabelValues(r)
	}
	m.histograms = append(m.histograms, m.pd)
}

// newSGLangMetrics renders SGLang's /metrics names (the ones in
// /work/shared/fixtures' SGLang dumps), labelled with engine_type as SGLang
// labels them (unified, prefill or decode), so the agent detects SGLang and
// the role. Series SGLang does not have are observed but not exported.
func newSGLangMetrics(s *Server) *metrics {
	engineType := map[string]string{RoleBoth: "unified", RolePrefill: "prefill", RoleDecode: "decode"}[s.opts.Role]
	labels := prometheus.Labels{"model_name": s.opts.Model, "engine_type": engineType}
	m := &metrics{s: s, labels: labels, sglang: true}
	desc := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, labels) }
	m.running = desc("sglang:num_running_reqs", "The number of running requests.")
	m.waiting = desc("sglang:num_queue_reqs", "The number of requests in the waiting queue.")
	m.kvUsage = desc("sglang:token_usage", "The token usage.")
	m.usedTokens = desc("sglang:num_used_tokens", "The number of used tokens.")
	m.cacheHitRate = desc("sglang:cache_hit_rate", "The prefix cache hit rate.")
	m.promptTotal = desc("sglang:prompt_tokens_total", "Number of prefill tokens processed.")
	m.genTotal = desc("sglang:generation_tokens_total", "Number of generation tokens processed.")
	exported := func(name, help string, buckets []float64) prometheus.Histogram {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets, ConstLabels: labels})
		m.histograms = append(m.histograms, h)
		return h
	}
	hidden := func() prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: "unexported"})
	}
	m.ttft = exported("sglang:time_to_first_token_seconds", "Histogram of time to first token in seconds.", ttftBuckets)
	m.tpot = exported("sglang:time_per_output_token_seconds", "Histogram of time per output token in seconds.", tpotBuckets)
	m.e2e = exported("sglang:e2e_request_latency_seconds", "Histogram of End-to-end request latency in seconds", latencyBuckets)
	m.itl, m.reqTPOT, m.queue, m.promptTokens, m.genTokens = hidden(), hidden(), hidden(), hidden(), hidden()
	m.success = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "unexported"}, []string{"finished_reason"})
	m.addPD()
	return m
}

func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	if m.sglang {
		for _, d := range []*prometheus.Desc{m.running, m.waiting, m.kvUsage, m.usedTokens, m.cacheHitRate, m.promptTotal, m.genTotal} {
			ch <- d
		}
		for _, h := range m.histograms {
			h.Describe(ch)
		}
		return
	}
	for _, d := range []*prometheus.Desc{m.running, m.waiting, m.kvUsage, m.prefixQueries, m.prefixHits, m.promptTotal, m.genTotal, m.preemptions, m.cacheInfo} {
		ch <- d
	}
	if m.loraInfo != nil {
		ch <- m.loraInfo
	}
	for _, h := range m.histograms {
		h.Describe(ch)
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	snap := m.s.snapshot()
	st := snap.stats
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	counter := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(m.running, float64(st.Running))
	gauge(m.waiting, float64(st.Waiting))
	gauge(m.kvUsage, st.KVUsage)
	if m.sglang {
		gauge(m.usedTokens, float64(st.UsedBlocks*st.BlockSize))
		hit := 0.0
		if st.PrefixQueries > 0 {
			hit = float64(st.PrefixHits) / float64(st.PrefixQueries)
		}
		gauge(m.cacheHitRate, hit)
		counter(m.promptTotal, st.PromptTokens)
		counter(m.genTotal, st.GenerationTokens)
		for _, h := range m.histograms {
			h.Collect(ch)
		}
		return
	}
	counter(m.prefixQueries, st.PrefixQueries)
	counter(m.prefixHits, st.PrefixHits)
	counter(m.promptTotal, st.PromptTokens)
	counter(m.genTotal, st.GenerationTokens)
	counter(m.preemptions, st.Preemptions)
	ch <- prometheus.MustNewConstMetric(m.cacheInfo, prometheus.GaugeValue, 1, m.cacheInfoValues...)
	if m.loraInfo != nil {
		// vLLM sets this gauge to the time of the last update.
		ts := float64(m.s.start.Unix())
		if !snap.loraUpdateAt.IsZero() {
			ts = float64(snap.loraUpdateAt.UnixNano()) / 1e9
		}
		ch <- prometheus.MustNewConstMetric(m.loraInfo, prometheus.GaugeValue, ts,
			strconv.Itoa(len(m.s.servedLoRAs())), strings.Join(snap.loraRunning, ","), strings.Join(snap.loraWaiting, ","))
	}
	for _, h := range m.histograms {
		h.Collect(ch)
	}
}
