package config

import (
	"strings"
	"testing"
	"time"
)

func TestPolicyDefaultsValid(t *testing.T) {
	p := Default().Scheduler.Policies
	if errs := p.validate(); len(errs) != 0 {
		t.Fatalf("defaults rejected: %v", errs)
	}
	if p.PrefillTokenTime != 17250*time.Nanosecond || p.StepTime != 5750*time.Microsecond {
		t.Fatalf("cost model defaults changed: %+v", p)
	}
}

func TestPolicyKeysLoad(t *testing.T) {
	f := writeFile(t, "c.yaml", `
llm_scheduler:
  policies:
    prefill_token_time: 20us
    waiting_weight: 2
    session_ttl: 60000
    lora_affinity: false
`)
	c := mustLoad(t, f, nil)
	p := c.Scheduler.Policies
	if p.PrefillTokenTime != 20*time.Microsecond || p.WaitingWeight != 2 || p.SessionTTL != time.Minute || p.LoRAAffinity {
		t.Fatalf("loaded %+v", p)
	}
	if p.KVCacheWeight != 0.5 {
		t.Fatalf("an unset key lost its default: kv_cache_weight = %v", p.KVCacheWeight)
	}
}

func TestPolicyRules(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"prefill_token_time: 0s", "llm_scheduler.policies.prefill_token_time"},
		{"step_time: -1ms", "llm_scheduler.policies.step_time"},
		{"max_batched_tokens: 0", "llm_scheduler.policies.max_batched_tokens"},
		{"max_load_ratio: 0.5", "llm_scheduler.policies.max_load_ratio"},
		{"kv_cache_weight: -1", "llm_scheduler.policies.kv_cache_weight"},
		{"waiting_weight: 0\n    kv_cache_weight: 0\n    running_weight: 0\n    throughput_weight: 0", "at least one is positive"},
		{"session_max: 0", "llm_scheduler.policies.session_max"},
		{"session_ttl: 0s", "llm_scheduler.policies.session_ttl"},
		{"prefix_index_max_blocks: 10", "llm_scheduler.policies.prefix_index_max_blocks"},
		{"pd_min_prefill_tokens: -1", "llm_scheduler.policies.pd_min_prefill_tokens"},
		{"no_such_knob: 1", "llm_scheduler.policies.no_such_knob"},
	} {
		f := writeFile(t, "c.yaml", "llm_scheduler:\n  policies:\n    "+tc.yaml+"\n")
		if msg := loadErr(t, f); !strings.Contains(msg, tc.want) {
			t.Errorf("%q: error %q does not name %q", tc.yaml, msg, tc.want)
		}
	}
}
