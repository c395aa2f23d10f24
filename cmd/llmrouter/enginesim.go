package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/llmrouter/llmrouter/internal/servers"
	"github.com/llmrouter/llmrouter/sim/engine"
	"github.com/llmrouter/llmrouter/sim/enginesim"
)

func init() {
	var profiles []string
	for _, p := range engine.Profiles() {
		profiles = append(profiles, fmt.Sprintf("  %-16s %s", p.Name, p.Description))
	}
	cmd := &cobra.Command{
		Use:   "enginesim",
		Short: "Run a simulated vLLM instance (OpenAI API, SSE, WebSocket, vLLM /metrics)",
		Long: `Serves a simulated vLLM: /v1/chat/completions and /v1/completions (streaming or not),
/v1/models, /health, /metrics with vLLM V1 names, and /v1/realtime (WebSocket).
Timing follows the sim/engine model: continuous batching, step time
a + b×(uncached prefill tokens) + c×(decode tokens), a paged KV cache with prefix
caching and preemption. Profiles (--profile), each value overridable by flag:
` + strings.Join(profiles, "\n"),
		Args: cobra.NoArgs,
		RunE: runEngineSim,
	}
	f := cmd.Flags()
	f.String("listen", ":8000", "address to serve on")
	f.String("model", enginesim.DefaultModel, "served model name")
	f.String("profile", engine.DefaultProfile, "timing and capacity profile: "+strings.Join(engine.ProfileNames(), ", "))
	f.Duration("step-base", 0, "override a: fixed cost of one engine step (e.g. 5.75ms)")
	f.Duration("prefill-per-token", 0, "override b: cost of one uncached prompt token (e.g. 17.25us)")
	f.Duration("decode-per-token", 0, "override c: cost of one decode token (e.g. 6us)")
	f.Duration("ttft", 0, "demo mode: every step with prefill takes this long (a constant time to first token)")
	f.Duration("itl", 0, "demo mode: every decode-only step takes this long (a constant inter-token delay)")
	f.Int("max-num-seqs", 0, "override the maximum running requests")
	f.Int("max-num-batched-tokens", 0, "override the token budget of one step (chunked prefill)")
	f.Int("num-blocks", 0, "override the KV cache size in blocks")
	f.Int("block-size", 0, "override the KV block size in tokens")
	f.Float64("chars-per-token", 0, "prompt characters per token (default llm_gateway.chars_per_token, 4)")
	f.Bool("no-prefix-caching", false, "disable prefix caching")
	f.Int("default-max-tokens", 128, "output tokens of a request that sets no max_tokens")
	f.StringSlice("served-lora", nil, "LoRA adapter names to serve besides the base model (repeatable or comma-separated)")
	f.Bool("runtime-lora", false, "serve vLLM's POST /v1/load_lora_adapter and /v1/unload_lora_adapter (VLLM_ALLOW_RUNTIME_LORA_UPDATING)")
	f.Int64("seed", 0, "seed for response ids and filler text")
	f.String("role", enginesim.RoleBoth, "prefill/decode disaggregation side: both, prefill or decode")
	f.String("engine", enginesim.APIVLLM, "API and metric names presented: vllm (kv_transfer_params, NixlConnector) or sglang (bootstrap_host/port/room, LoRA adapters asked as \"model\": \"base:adapter\" or by lora_path)")
	f.Duration("kv-transfer-per-block", 0, "decode: what receiving one prompt KV block from a prefill instance costs (e.g. 20us)")
	f.String("bootstrap-listen", "", "sglang prefill: the bootstrap server's address (SGLang's --disaggregation-bootstrap-port), e.g. :8998")
	rootCmd.AddCommand(cmd)
}

func runEngineSim(cmd *cobra.Command, _ []string) error {
	cfg, log, err := setup(cmd, nil)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	f := cmd.Flags()
	profile, _ := f.GetString("profile")
	ec, err := engine.ProfileConfig(profile)
	if err != nil {
		return err
	}
	ec.CharsPerToken = cfg.Gateway.CharsPerToken
	for name, dst := range map[string]*time.Duration{
		"step-base":         &ec.StepBase,
		"prefill-per-token": &ec.PrefillPerToken,
		"decode-per-token":  &ec.DecodePerToken,
		"ttft":              &ec.FixedPrefillStep,
		"itl":               &ec.FixedDecodeStep,
	} {
		if f.Changed(name) {
			*dst, _ = f.GetDuration(name)
		}
	}
	for name, dst := range map[string]*int{
		"max-num-seqs":           &ec.MaxNumSeqs,
		"max-num-batched-tokens": &ec.MaxNumBatchedTokens,
		"num-blocks":             &ec.NumBlocks,
		"block-size":             &ec.BlockSize,
	} {
		if f.Changed(name) {
			*dst, _ = f.GetInt(name)
		}
	}
	if f.Changed("chars-per-token") {
		ec.CharsPerToken, _ = f.GetFloat64("chars-per-token")
	}
	ec.DisablePrefixCaching, _ = f.GetBool("no-prefix-caching")
	if err := ec.Validate(); err != nil {
		return fmt.Errorf("enginesim: %w", err)
	}
	if bc := ec.BlockChars(); bc != cfg.Gateway.BlockChars {
		log.Warn("enginesim: KV block size in characters differs from the gateway's hashing block; prefix-aware routing will mispredict hits",
			zap.Int("engine_block_chars", bc), zap.Int("llm_gateway.block_chars", cfg.Gateway.BlockChars))
	}
	model, _ := f.GetString("model")
	maxTokens, _ := f.GetInt("default-max-tokens")
	loras, _ := f.GetStringSlice("served-lora")
	runtimeLoRA, _ := f.GetBool("runtime-lora")
	seed, _ := f.GetInt64("seed")
	role, _ := f.GetString("role")
	api, _ := f.GetString("engine")
	perBlock, _ := f.GetDuration("kv-transfer-per-block")
	listen, _ := f.GetString("listen")
	bootListen, _ := f.GetString("bootstrap-listen")
	opts := enginesim.Options{
		Model: model, Engine: ec, DefaultMaxTokens: maxTokens, ServedLoRAs: loras, RuntimeLoRA: runtimeLoRA, Seed: seed, Log: log,
		Role: role, API: api, KVTransferPerBlock: perBlock,
	}
	log.Info("enginesim profile", zap.String("profile", profile),
		zap.Duration("a", ec.StepBase), zap.Duration("b", ec.PrefillPerToken), zap.Duration("c", ec.DecodePerToken),
		zap.Int("max_num_seqs", ec.MaxNumSeqs), zap.Int("max_num_batched_tokens", ec.MaxNumBatchedTokens),
		zap.Float64("chars_per_token", ec.CharsPerToken), zap.Bool("prefix_caching", !ec.DisablePrefixCaching))
	ctx, stop := signalContext()
	defer stop()
	return servers.EngineSim(ctx, opts, listen, bootListen)
}
