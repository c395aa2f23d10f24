package config

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestCostModelDefaultsValid(t *testing.T) {
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
	want := []ParamDefault{{Key: "llm_scheduler.policies.waiting_weight", PluginParam: PluginParam{"llm-metric-based", "waitingWeight"}, Value: 2}}
	if c.Scheduler.CostModel.PrefillTokenTime != 20*time.Microsecond || !reflect.DeepEqual(c.Scheduler.ParamDefaults, want) || c.Scheduler.Affinity.SessionTTL != time.Minute || c.Scheduler.Affinity.LoRA {
		t.Fatalf("loaded %+v, parameter defaults %+v (want %+v)", c.Scheduler, c.Scheduler.ParamDefaults, want)
	}
}

// TestPolicyKeysArePluginParameters: every key of llm_scheduler.policies
// that is a plugin parameter now, given in the file or the environment, is
// kept as that parameter's default (scheduler/framework applies and checks
// it), and reported deprecated once, naming the parameter, its plugin type
// and where to set it.
func TestPolicyKeysArePluginParameters(t *testing.T) {
	var yaml strings.Builder
	yaml.WriteString("llm_scheduler:\n  policies:\n")
	n := 0
	for k := range PolicyKeys {
		n++
		if k == "running_weight" {
			t.Setenv(EnvName(PolicyKeysSection+"."+k), "0.7")
			continue
		}
		fmt.Fprintf(&yaml, "    %s: %d\n", k, n)
	}
	c := mustLoad(t, writeFile(t, "c.yaml", yaml.String()), nil)
	if len(c.Scheduler.ParamDefaults) != len(PolicyKeys) || len(c.Deprecated) != len(PolicyKeys) {
		t.Fatalf("%d parameter defaults, %d deprecations: want %d each", len(c.Scheduler.ParamDefaults), len(c.Deprecated), len(PolicyKeys))
	}
	for i, pd := range c.Scheduler.ParamDefaults {
		name := strings.TrimPrefix(pd.Key, "llm_scheduler.policies.")
		if PolicyKeys[name] != pd.PluginParam || pd.Value == nil {
			t.Errorf("%s: %+v, want %+v", pd.Key, pd, PolicyKeys[name])
		}
		if name == "running_weight" && pd.Value != "0.7" {
			t.Errorf("running_weight from the environment: %#v", pd.Value)
		}
		for _, w := range []string{pd.Key + " is deprecated", "parameter " + pd.Param + " of plugin type " + pd.Type, "plugins[].parameters." + pd.Param + " in llm_scheduler.endpoint_picker_config"} {
			if !strings.Contains(c.Deprecated[i], w) {
				t.Errorf("deprecation %q lacks %q", c.Deprecated[i], w)
			}
		}
	}
	if w := UnknownEnv([]string{"LLMROUTER_LLM_SCHEDULER_POLICIES_RUNNING_WEIGHT=1"}); len(w) != 0 {
		t.Fatalf("reported unknown: %q", w)
	}
	if d := mustLoad(t, "", nil); len(d.Scheduler.ParamDefaults) != 1 || len(d.Deprecated) != 1 {
		t.Fatalf("only the environment's key: %+v %q", d.Scheduler.ParamDefaults, d.Deprecated)
	}
}

// TestUnknownPolicyKeyRefused: a key under llm_scheduler.policies that is
// neither a plugin parameter nor moved is refused at load, naming it and
// the keys still accepted there.
func TestUnknownPolicyKeyRefused(t *testing.T) {
	msg := loadErr(t, writeFile(t, "c.yaml", "llm_scheduler:\n  policies:\n    no_such_knob: 1\n"))
	for _, w := range []string{`"llm_scheduler.policies.no_such_knob"`, "llm_scheduler.policies.decode_weight (deprecated)", "llm_scheduler.policies.step_time (deprecated)"} {
		if !strings.Contains(msg, w) {
			t.Errorf("error %q does not name %q", msg, w)
		}
	}
	t.Setenv("LLMROUTER_LLM_SCHEDULER_POLICIES_DECODE_WEIGH", "2")
	if w := UnknownEnv(os.Environ()); len(w) != 1 || !strings.Contains(w[0], "LLMROUTER_LLM_SCHEDULER_POLICIES_DECODE_WEIGHT") {
		t.Fatalf("a misspelt variable: %q, want the closest named", w)
	}
}

func TestPolicyRules(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		// Moved keys are checked in their new place, and named so.
		{"prefill_token_time: 0s", "llm_scheduler.cost_model.prefill_token_time"},
		{"step_time: -1ms", "llm_scheduler.cost_model.step_time"},
		{"max_batched_tokens: 0", "llm_scheduler.cost_model.max_batched_tokens"},
		{"default_output_tokens: 0", "llm_scheduler.cost_model.default_output_tokens"},
		{"session_max: 0", "llm_scheduler.affinity.session_max"},
		{"session_ttl: 0s", "llm_scheduler.affinity.session_ttl"},
		{"prefix_index_max_blocks: 10", "llm_scheduler.prefix_index.max_blocks"},
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
