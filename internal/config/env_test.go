package config

import (
	"strings"
	"testing"
)

func TestUnknownEnvNamesTheClosestKey(t *testing.T) {
	got := UnknownEnv([]string{
		"LLMROUTER_LLM_GATEWAY_MAX_QUEUE_SIZ=5", // misspelt
		"LLMROUTER_TOKEN=x",                     // known
		"LLMROUTER_LLM_SCHEDULER_POLICY=x",      // known
		"LLMROUTER_AGENT_METRIC_MAP_RUNNING=x",  // an entry of a map-valued key
		"LLMROUTER_RUN_DIR=/tmp/x",              // scripts/run.sh
		"LLMROUTER_RUN_HTTP_PORT=19090",         // scripts/run.sh
		"LLMROUTER_BIN=/x",                      // integration tests
		"LLMROUTER_BENCH_API_KEY=k",             // llmrouter bench
		"PATH=/bin",                             // not ours
		"LLMROUTER_TOKNE=x",                     // misspelt
	})
	if len(got) != 2 {
		t.Fatalf("warnings = %q, want two", got)
	}
	for i, want := range [][]string{
		{"LLMROUTER_LLM_GATEWAY_MAX_QUEUE_SIZ ", "LLMROUTER_LLM_GATEWAY_MAX_QUEUE_SIZE (llm_gateway.max_queue_size)"},
		{"LLMROUTER_TOKNE ", "LLMROUTER_TOKEN (token)"},
	} {
		for _, w := range want {
			if !strings.Contains(got[i], w) {
				t.Errorf("warning %q does not say %q", got[i], w)
			}
		}
	}
}

func TestEnvNameMatchesViper(t *testing.T) {
	t.Setenv("LLMROUTER_LLM_GATEWAY_MAX_QUEUE_SIZE", "7")
	cfg, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if EnvName("llm_gateway.max_queue_size") != "LLMROUTER_LLM_GATEWAY_MAX_QUEUE_SIZE" || cfg.Gateway.MaxQueueSize != 7 {
		t.Fatalf("EnvName = %s, loaded %d", EnvName("llm_gateway.max_queue_size"), cfg.Gateway.MaxQueueSize)
	}
}
