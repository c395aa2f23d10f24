// Package config loads llmrouter's configuration: defaults, then a file, then
// LLMROUTER_* environment variables, then command-line flags. Keys and
// defaults follow the PAI-EAS LLM intelligent router (ARCHITECTURE §4) so its
// users can bring their settings. Every rule that can reject a value lives in
// Validate, so a bad configuration stops startup with one message naming the
// key, the value given and what is accepted.
package config

import (
	"time"
)

// Config is the whole configuration of every role. A role reads the sections
// it needs; unknown keys anywhere are an error.
type Config struct {
	LogLevel  string `mapstructure:"log_level" yaml:"log_level"`
	LogFormat string `mapstructure:"log_format" yaml:"log_format"`
	// Token is the shared secret agents and gateways present to the
	// scheduler (LLMROUTER_TOKEN). Redacted when printed.
	Token string `mapstructure:"token" yaml:"token"`
	// TokenPrevious, during a token rotation only, is the token being
	// replaced: servers (scheduler API and admin, gateway ext_proc) accept
	// it as well as Token; clients send Token (LLMROUTER_TOKEN_PREVIOUS,
	// docs/operating.md "Rotating the token"). Redacted when printed.
	TokenPrevious string `mapstructure:"token_previous" yaml:"token_previous"`
	TLS           TLS    `mapstructure:"tls" yaml:"tls"`

	Gateway   Gateway   `mapstructure:"llm_gateway" yaml:"llm_gateway"`
	Scheduler Scheduler `mapstructure:"llm_scheduler" yaml:"llm_scheduler"`
	Agent     Agent     `mapstructure:"agent" yaml:"agent"`

	// Deprecated holds a message for each deprecated key Load applied
	// (Moved), naming its new place, for the command to log. Not a key.
	Deprecated []string `yaml:"-"`
}

// TLS configures the gRPC links (agent↔scheduler, gateway↔scheduler). With
// CertFile and KeyFile a server serves TLS; with ClientCAFile it also demands
// client certificates (mTLS). A client uses CAFile to verify the server and
// CertFile/KeyFile as its own certificate.
type TLS struct {
	CertFile     string `mapstructure:"cert_file" yaml:"cert_file"`
	KeyFile      string `mapstructure:"key_file" yaml:"key_file"`
	CAFile       string `mapstructure:"ca_file" yaml:"ca_file"`
	ClientCAFile string `mapstructure:"client_ca_file" yaml:"client_ca_file"`
	ServerName   string `mapstructure:"server_name" yaml:"server_name"`
}

// Enabled reports whether any TLS material is configured.
func (t TLS) Enabled() bool {
	return t.CertFile != "" || t.KeyFile != "" || t.CAFile != "" || t.ClientCAFile != ""
}

// Gateway is the ext_proc server beside each Envoy.
type Gateway struct {
	// InferBackend names the engine kind; "" detects it (used by agents too).
	InferBackend string `mapstructure:"infer_backend" yaml:"infer_backend"`
	// MaxQueueSize bounds requests held while every instance is saturated.
	MaxQueueSize int `mapstructure:"max_queue_size" yaml:"max_queue_size"`
	// RetryCount is the number of fallback instances sent with each pick.
	RetryCount            int           `mapstructure:"retry_count" yaml:"retry_count"`
	WaitScheduleTimeout   time.Duration `mapstructure:"wait_schedule_timeout" yaml:"wait_schedule_timeout"`
	WaitScheduleTryPeriod time.Duration `mapstructure:"wait_schedule_try_period" yaml:"wait_schedule_try_period"`

	// Listen is the ext_proc gRPC address Envoy calls.
	Listen string `mapstructure:"listen" yaml:"listen"`
	// HTTPListen serves /metrics, /healthz and /readyz.
	HTTPListen string `mapstructure:"http_listen" yaml:"http_listen"`
	// SchedulerAddress is the scheduler's API (host:port).
	SchedulerAddress string `mapstructure:"scheduler_address" yaml:"scheduler_address"`
	// PickTimeout bounds one Pick call when the request is not queued; past it
	// the gateway answers Envoy without a pick.
	PickTimeout time.Duration `mapstructure:"pick_timeout" yaml:"pick_timeout"`
	// BlockChars is the prompt block size, in characters, for prefix hashing.
	BlockChars int `mapstructure:"block_chars" yaml:"block_chars"`
	// MaxPrefixChars bounds how much of a prompt is hashed, so hashing cost
	// stops growing with prompt size.
	MaxPrefixChars int `mapstructure:"max_prefix_chars" yaml:"max_prefix_chars"`
	// TailBlockChars is the block size past max_prefix_chars: a prompt's
	// hashes continue in these coarser blocks up to MaxHashedChars
	// (internal/prompthash.Tiered). 0: nothing past max_prefix_chars is
	// hashed. A multiple of BlockChars.
	TailBlockChars int `mapstructure:"tail_block_chars" yaml:"tail_block_chars"`
	// MaxHashedChars bounds how much of a prompt is hashed at all, fine
	// blocks and tail blocks together.
	MaxHashedChars int `mapstructure:"max_hashed_chars" yaml:"max_hashed_chars"`
	// CharsPerToken converts prompt characters to estimated tokens.
	CharsPerToken float64 `mapstructure:"chars_per_token" yaml:"chars_per_token"`

	// TrustedPriorityHeader names the request header the gateway takes a
	// request's priority from; "" (the default) takes none: every request
	// has priority 0 and a client's x-llmrouter-priority is removed. Set it
	// only to a header your Envoy strips from clients and sets itself (the
	// shipped bootstrap strips every x-llmrouter-* header before the
	// gateway sees the request).
	TrustedPriorityHeader string `mapstructure:"trusted_priority_header" yaml:"trusted_priority_header"`
	// Insecure lets the ext_proc listener leave loopback without the shared
	// token; beyond loopback with a token, the token is demanded of Envoy.
	Insecure bool `mapstructure:"insecure" yaml:"insecure"`
}

// Scheduler is the global brain: registry, policies, queue, xDS.
type Scheduler struct {
	Policy        string `mapstructure:"policy" yaml:"policy"`
	PrefillPolicy string `mapstructure:"prefill_policy" yaml:"prefill_policy"`
	DecodePolicy  string `mapstructure:"decode_policy" yaml:"decode_policy"`
	// EndpointPickerConfig is the path of a Gateway API Inference Extension /
	// llm-d EndpointPickerConfig file; each of its scheduling profiles is a
	// policy named after it (docs/policies.md). "" for none.
	EndpointPickerConfig string `mapstructure:"endpoint_picker_config" yaml:"endpoint_picker_config"`

	// Listen is the gRPC API for agents and gateways.
	Listen string `mapstructure:"listen" yaml:"listen"`
	// XDSListen is the ADS server Envoy connects to.
	XDSListen string `mapstructure:"xds_listen" yaml:"xds_listen"`
	// XDSToken, when set, is demanded of every xDS client as
	// "authorization: Bearer <token>"; `llmrouter bootstrap` renders it into
	// Envoy's initial_metadata (LLMROUTER_LLM_SCHEDULER_XDS_TOKEN). Empty
	// leaves the xDS port open. Redacted when printed.
	XDSToken string `mapstructure:"xds_token" yaml:"xds_token"`
	// HTTPListen serves /metrics, /healthz and /readyz.
	HTTPListen string `mapstructure:"http_listen" yaml:"http_listen"`
	// Insecure allows listening beyond loopback without a token.
	Insecure bool `mapstructure:"insecure" yaml:"insecure"`
	// AllowedCIDRs, when set, restricts the addresses agents may advertise.
	AllowedCIDRs []string `mapstructure:"allowed_cidrs" yaml:"allowed_cidrs"`
	// MissedReports makes an instance silent (no longer picked, still in
	// EDS) after this many report intervals without a report.
	MissedReports int `mapstructure:"missed_reports" yaml:"missed_reports"`
	// Membership (issue 13). SilentGrace removes a silent instance whose
	// engine nothing confirmed down after this long. PanicThreshold: while
	// more than this share of the published instances is silent, silence
	// removes nobody (1 disables). VerifyEngines: a new registration enters
	// EDS only once its address answers as the engine the agent described.
	SilentGrace    time.Duration `mapstructure:"silent_grace" yaml:"silent_grace"`
	PanicThreshold float64       `mapstructure:"panic_threshold" yaml:"panic_threshold"`
	VerifyEngines  bool          `mapstructure:"verify_engines" yaml:"verify_engines"`
	// DefaultPool serves requests whose model no instance reports; "" rejects them.
	DefaultPool string `mapstructure:"default_pool" yaml:"default_pool"`
	// InflightTimeout releases a pick that no gateway reported back.
	InflightTimeout time.Duration `mapstructure:"inflight_timeout" yaml:"inflight_timeout"`
	// Saturation thresholds: an instance over either is held back.
	MaxWaiting      int     `mapstructure:"max_waiting" yaml:"max_waiting"`
	MaxKVCacheUsage float64 `mapstructure:"max_kv_cache_usage" yaml:"max_kv_cache_usage"`
	// MaxPredictedWait: an instance where a new request is predicted to wait
	// this long before it runs (the work queued ahead of it, by
	// CostModel) is saturated too (scheduler/admission); 0 turns
	// the prediction off, leaving the counts.
	MaxPredictedWait time.Duration `mapstructure:"max_predicted_wait" yaml:"max_predicted_wait"`
	// XDSPushInterval coalesces endpoint churn into at most one push per interval.
	XDSPushInterval time.Duration `mapstructure:"xds_push_interval" yaml:"xds_push_interval"`
	// ClusterName is the EDS cluster of the engine fleet.
	ClusterName string `mapstructure:"cluster_name" yaml:"cluster_name"`
	// ParamDefaults are plugin parameters given under their deprecated
	// keys, llm_scheduler.policies.* (PolicyKeys): each sets its
	// parameter's default wherever a plugin of its type is built. Not a
	// key: Load fills it.
	ParamDefaults []ParamDefault `yaml:"-"`
	// CostModel describes the fleet's engines: admission predicts waits
	// with it and prefix-cache prices candidates with it
	// (scheduler/costmodel).
	CostModel CostModel `mapstructure:"cost_model" yaml:"cost_model"`
	// PrefixIndex sizes the prefix index.
	PrefixIndex PrefixIndex `mapstructure:"prefix_index" yaml:"prefix_index"`
	// Affinity configures session and LoRA affinity, around every policy.
	Affinity Affinity `mapstructure:"affinity" yaml:"affinity"`
}

// CostModel is the engine cost model the scheduler's decisions share: an
// engine step costs StepTime plus PrefillTokenTime per uncached prompt
// token and DecodeTokenTime per running sequence; a step schedules at most
// MaxBatchedTokens tokens (the engine's max_num_batched_tokens). A reply
// is taken to be DefaultOutputTokens long until replies are observed.
type CostModel struct {
	StepTime            time.Duration `mapstructure:"step_time" yaml:"step_time"`
	PrefillTokenTime    time.Duration `mapstructure:"prefill_token_time" yaml:"prefill_token_time"`
	DecodeTokenTime     time.Duration `mapstructure:"decode_token_time" yaml:"decode_token_time"`
	MaxBatchedTokens    int           `mapstructure:"max_batched_tokens" yaml:"max_batched_tokens"`
	DefaultOutputTokens int           `mapstructure:"default_output_tokens" yaml:"default_output_tokens"`
}

// DefaultCostModel is llm_scheduler.cost_model's default: Llama-3-8B on one
// H100 (BLIS fit; docs/policies.md says why).
func DefaultCostModel() CostModel {
	return CostModel{
		StepTime:            5750 * time.Microsecond,
		PrefillTokenTime:    17250 * time.Nanosecond,
		DecodeTokenTime:     6 * time.Microsecond,
		MaxBatchedTokens:    8192,
		DefaultOutputTokens: 256,
	}
}

// ParamDefault is a plugin parameter's value given under a deprecated
// llm_scheduler.policies key.
type ParamDefault struct {
	// Key is the deprecated key (llm_scheduler.policies.decode_weight).
	Key string
	PluginParam
	// Value is as the file or the environment gave it; the plugin's
	// parameters decode and check it.
	Value any
}

// PluginParam names a plugin parameter: a plugin type of the scheduling
// framework and one of its parameters.
type PluginParam struct {
	Type, Param string
}

// PolicyKeys are the keys once under llm_scheduler.policies that are
// plugin parameters now, by their name there. The plugin type owns the
// parameter's default and its rules (scheduler/framework checks that each
// names a parameter its type has); Load keeps a value given for one in
// Scheduler.ParamDefaults and reports the key deprecated. The keys of what
// several parts share moved to sections of their own instead (Moved).
var PolicyKeys = map[string]PluginParam{
	"decode_weight":         {"prefix-cache", "decodeWeight"},
	"max_load_ratio":        {"prefix-cache", "maxLoadRatio"},
	"speed_calibration":     {"prefix-cache", "speedCalibration"},
	"waiting_weight":        {"llm-metric-based", "waitingWeight"},
	"kv_cache_weight":       {"llm-metric-based", "kvCacheWeight"},
	"running_weight":        {"llm-metric-based", "runningWeight"},
	"throughput_weight":     {"llm-metric-based", "throughputWeight"},
	"pd_min_prefill_tokens": {"dynamic-pd-split", "pdMinPrefillTokens"},
	"pd_decode_busy_load":   {"dynamic-pd-split", "pdDecodeBusyLoad"},
}

// PolicyKeysSection is where the PolicyKeys were.
const PolicyKeysSection = "llm_scheduler.policies"

// PrefixIndex sizes the prefix index (scheduler/prefixindex) prefix-cache,
// dynamic-pd-split and prefix-cache-scorer learn cached prefixes in.
type PrefixIndex struct {
	// MaxBlocks bounds the index: (block, instance) pairs over all
	// instances (about 48 bytes each).
	MaxBlocks int `mapstructure:"max_blocks" yaml:"max_blocks"`
	// DefaultBlocks is an instance's index capacity, in hashed prompt
	// blocks, when it does not report its KV capacity.
	DefaultBlocks int `mapstructure:"default_blocks" yaml:"default_blocks"`
}

// Affinity configures the wrapper around every policy
// (scheduler/policy/affinity): session affinity (x-session-id / user) and
// LoRA adapter preference.
type Affinity struct {
	Session    bool          `mapstructure:"session" yaml:"session"`
	SessionTTL time.Duration `mapstructure:"session_ttl" yaml:"session_ttl"`
	SessionMax int           `mapstructure:"session_max" yaml:"session_max"`
	// SessionMaxBytes bounds the session map's memory as well as its
	// entries: least recently used sessions go first past either bound.
	SessionMaxBytes int  `mapstructure:"session_max_bytes" yaml:"session_max_bytes"`
	LoRA            bool `mapstructure:"lora" yaml:"lora"`
}

// Agent is the sidecar beside one engine.
type Agent struct {
	EngineURL string `mapstructure:"engine_url" yaml:"engine_url"`
	// Advertise is the ip:port Envoy reaches the engine at.
	Advertise string `mapstructure:"advertise" yaml:"advertise"`
	// SchedulerAddress is the scheduler's API (host:port).
	SchedulerAddress string        `mapstructure:"scheduler_address" yaml:"scheduler_address"`
	ReportInterval   time.Duration `mapstructure:"report_interval" yaml:"report_interval"`
	HTTPListen       string        `mapstructure:"http_listen" yaml:"http_listen"`
	// Role is both, prefill or decode.
	Role string `mapstructure:"role" yaml:"role"`
	// MetricsPath and HealthPath override the engine's defaults.
	MetricsPath string `mapstructure:"metrics_path" yaml:"metrics_path"`
	HealthPath  string `mapstructure:"health_path" yaml:"health_path"`
	// MetricMap maps unified report fields (running, waiting, kv_cache_usage,
	// prompt_tokens_total, generation_tokens_total, block_size,
	// num_gpu_blocks) to the engine's metric names; it overrides the adapter.
	MetricMap map[string]string `mapstructure:"metric_map" yaml:"metric_map"`
	// ScrapeTimeout bounds one scrape or health probe.
	ScrapeTimeout time.Duration `mapstructure:"scrape_timeout" yaml:"scrape_timeout"`

	// Prefill/decode disaggregation (agent/pdproxy, docs/policies.md).
	// PDProxyListen, on a decode or both-role instance, runs the pd proxy
	// there; agent.advertise is then the proxy's address.
	PDProxyListen string `mapstructure:"pd_proxy_listen" yaml:"pd_proxy_listen"`
	// PDPrefillTimeout bounds a remote prefill before the proxy prefills
	// locally instead.
	PDPrefillTimeout time.Duration `mapstructure:"pd_prefill_timeout" yaml:"pd_prefill_timeout"`
	// PDAPIKey, when set, is presented to prefill engines (Authorization:
	// Bearer); else the client's Authorization goes along. Redacted when
	// printed.
	PDAPIKey string `mapstructure:"pd_api_key" yaml:"pd_api_key"`
	// BootstrapPort, on an SGLang prefill instance, is its engine's KV
	// bootstrap port (--disaggregation-bootstrap-port), registered so decode
	// instances can reach it; 0 when none.
	BootstrapPort int `mapstructure:"bootstrap_port" yaml:"bootstrap_port"`
}

// Backends accepted by llm_gateway.infer_backend ("" detects).
var Backends = []string{"vllm", "sglang", "bladellm", "trtllm", "tgi", "llamacpp", "lmdeploy"}

// Roles accepted by agent.role.
var Roles = []string{"both", "prefill", "decode"}

// UnifiedFields are the keys agent.metric_map accepts.
var UnifiedFields = []string{"running", "waiting", "kv_cache_usage", "prompt_tokens_total", "generation_tokens_total", "block_size", "num_gpu_blocks"}

// Default returns the configuration used when nothing is set.
func Default() Config {
	return Config{
		LogLevel:  "info",
		LogFormat: "json",
		Gateway: Gateway{
			MaxQueueSize:          512,
			RetryCount:            2,
			WaitScheduleTimeout:   10 * time.Second,
			WaitScheduleTryPeriod: time.Second,
			Listen:                "127.0.0.1:9002",
			HTTPListen:            "127.0.0.1:9091",
			SchedulerAddress:      "127.0.0.1:18001",
			PickTimeout:           150 * time.Millisecond,
			BlockChars:            64,
			MaxPrefixChars:        65536,
			TailBlockChars:        4096,
			MaxHashedChars:        1 << 20,
			CharsPerToken:         4,
		},
		Scheduler: Scheduler{
			Policy:          "prefix-cache",
			PrefillPolicy:   "prefix-cache",
			DecodePolicy:    "least-token",
			Listen:          "127.0.0.1:18001",
			XDSListen:       "127.0.0.1:18000",
			HTTPListen:      "127.0.0.1:9090",
			AllowedCIDRs:    []string{},
			MissedReports:   3,
			SilentGrace:     30 * time.Second,
			PanicThreshold:  0.5,
			VerifyEngines:   true,
			InflightTimeout: 10 * time.Minute,
			MaxWaiting:      16,
			MaxKVCacheUsage: 0.95,
			XDSPushInterval: 50 * time.Millisecond,
			ClusterName:     "llm_backends",
			CostModel:       DefaultCostModel(),
			PrefixIndex:     PrefixIndex{MaxBlocks: 4 << 20, DefaultBlocks: 16384},
			Affinity:        Affinity{Session: true, SessionTTL: 30 * time.Minute, SessionMax: 100000, SessionMaxBytes: 32 << 20, LoRA: true},

			// 2 s: under llm_gateway.wait_schedule_timeout + 4 s to a first
			// token even when the prediction is off by a second or two
			// (docs/configuration.md says why).
			MaxPredictedWait: 2 * time.Second,
		},
		Agent: Agent{
			EngineURL:        "http://127.0.0.1:8000",
			SchedulerAddress: "127.0.0.1:18001",
			ReportInterval:   200 * time.Millisecond,
			HTTPListen:       "127.0.0.1:9092",
			Role:             "both",
			MetricMap:        map[string]string{},
			ScrapeTimeout:    time.Second,
			PDPrefillTimeout: 10 * time.Second,
		},
	}
}
