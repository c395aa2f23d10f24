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
	m := Default().Scheduler.CostModel
	if errs := m.validate(); len(errs) != 0 {
		t.Fatalf("cost model defaults rejected: %v", errs)
	}
	if m.PrefillTokenTime != 17250*time.Nanosecond || m.StepTime != 5750*time.Microsecond {
		t.Fatalf("cost model defaults changed: %+v", m)
	}
}

func TestPolicyKeysLoad(t *testing.T) {
	f := writeFile(t, "c.yaml", `
llm_scheduler:
  cost_model:
    prefill_token_time: 20us
  policies:
    waiting_weight: 2
    session_ttl: 60000
    lora_affinity: false
`)
	c := mustLoad(t, f, nil)
	p := c.Scheduler.Policies
	if c.Scheduler.CostModel.PrefillTokenTime != 20*time.Microsecond || p.WaitingWeight != 2 || c.Scheduler.Affinity.SessionTTL != time.Minute || c.Scheduler.Affinity.LoRA {
		t.Fatalf("loaded %+v", p)
	}
	if p.KVCacheWeight != 0.5 {
		t.Fatalf("an unset key lost its default: kv_cache_weight = %v", p.KVCacheWeight)
	}
}

func TestPolicyRules(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		// Moved keys are checked in their new place, and named so.
		{"prefill_token_time: 0s", "llm_scheduler.cost_model.prefill_token_time"},
		{"step_time: -1ms", "llm_scheduler.cost_model.step_time"},
		{"max_batched_tokens: 0", "llm_scheduler.cost_model.max_batched_tokens"},
		{"default_output_tokens: 0", "llm_scheduler.cost_model.default_output_tokens"},
		{"max_load_ratio: 0.5", "llm_scheduler.policies.max_load_ratio"},
		{"kv_cache_weight: -1", "llm_scheduler.policies.kv_cache_weight"},
		{"waiting_weight: 0\n    kv_cache_weight: 0\n    running_weight: 0\n    throughput_weight: 0", "at least one is positive"},
		{"session_max: 0", "llm_scheduler.affinity.session_max"},
		{"session_ttl: 0s", "llm_scheduler.affinity.session_ttl"},
		{"prefix_index_max_blocks: 10", "llm_scheduler.prefix_index.max_blocks"},
		{"pd_min_prefill_tokens: -1", "llm_scheduler.policies.pd_min_prefill_tokens"},
		{"no_such_knob: 1", "llm_scheduler.policies.no_such_knob"},
	} {
		f := writeFile(t, "c.yaml", "llm_scheduler:\n  policies:\n    "+tc.yaml+"\n")
		if msg := loadErr(t, f); !strings.Contains(msg, tc.want) {
			t.Errorf("%q: error %q does not name %q", tc.yaml, msg, tc.want)
		}
	}
}

// TestMovedKeys: each llm_scheduler.policies key that moved to its owner's
// section (cost_model, prefix_index, affinity) still applies there, with
// a deprecation message naming that place; given with its new key too, it
// is refused naming both.
func TestMovedKeys(t *testing.T) {
	f := writeFile(t, "c.yaml", `
llm_scheduler:
  policies:
    step_time: 7ms
    prefill_token_time: 20us
    decode_token_time: 9us
    max_batched_tokens: 4096
    default_output_tokens: 100
    prefix_index_max_blocks: 2048
    prefix_index_default_blocks: 99
    session_affinity: false
    session_ttl: 1m
    session_max: 5
    session_max_bytes: 8192
    lora_affinity: false
`)
	c := mustLoad(t, f, nil)
	want := CostModel{StepTime: 7 * time.Millisecond, PrefillTokenTime: 20 * time.Microsecond, DecodeTokenTime: 9 * time.Microsecond, MaxBatchedTokens: 4096, DefaultOutputTokens: 100}
	if c.Scheduler.CostModel != want {
		t.Fatalf("cost_model = %+v, want %+v", c.Scheduler.CostModel, want)
	}
	if x := (PrefixIndex{MaxBlocks: 2048, DefaultBlocks: 99}); c.Scheduler.PrefixIndex != x {
		t.Fatalf("prefix_index = %+v, want %+v", c.Scheduler.PrefixIndex, x)
	}
	if a := (Affinity{SessionTTL: time.Minute, SessionMax: 5, SessionMaxBytes: 8192}); c.Scheduler.Affinity != a {
		t.Fatalf("affinity = %+v, want %+v", c.Scheduler.Affinity, a)
	}
	if len(c.Deprecated) != len(Moved) {
		t.Fatalf("deprecations %q: want one per moved key", c.Deprecated)
	}
	for old, nk := range Moved {
		if !strings.Contains(strings.Join(c.Deprecated, "\n"), old+" is deprecated: it is "+nk) {
			t.Errorf("no deprecation naming %s's new place %s: %q", old, nk, c.Deprecated)
		}
	}
	if d := mustLoad(t, writeFile(t, "d.yaml", "llm_scheduler:\n  cost_model:\n    step_time: 7ms\n"), nil); len(d.Deprecated) != 0 || d.Scheduler.CostModel.StepTime != 7*time.Millisecond {
		t.Fatalf("the new key: %+v, deprecations %q", d.Scheduler.CostModel, d.Deprecated)
	}
	both := writeFile(t, "b.yaml", "llm_scheduler:\n  policies:\n    step_time: 7ms\n  cost_model:\n    step_time: 8ms\n")
	if msg := loadErr(t, both); !strings.Contains(msg, "llm_scheduler.policies.step_time and llm_scheduler.cost_model.step_time are both given") {
		t.Fatalf("both keys: %q", msg)
	}
}

// TestMovedKeyFromEnvironment: a moved key set in the environment applies
// at its new place, is reported deprecated, and is no unknown variable.
func TestMovedKeyFromEnvironment(t *testing.T) {
	t.Setenv("LLMROUTER_LLM_SCHEDULER_POLICIES_SESSION_TTL", "2m")
	c := mustLoad(t, "", nil)
	if c.Scheduler.Affinity.SessionTTL != 2*time.Minute || len(c.Deprecated) != 1 || !strings.Contains(c.Deprecated[0], "llm_scheduler.affinity.session_ttl") {
		t.Fatalf("session_ttl %s, deprecations %q", c.Scheduler.Affinity.SessionTTL, c.Deprecated)
	}
	if w := UnknownEnv([]string{"LLMROUTER_LLM_SCHEDULER_POLICIES_SESSION_TTL=2m"}); len(w) != 0 {
		t.Fatalf("reported unknown: %q", w)
	}
}
