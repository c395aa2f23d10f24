package scheduler

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/llmrouter/llmrouter/internal/config"
)

// loadYAML loads a configuration file of src.
func loadYAML(t *testing.T, src string) (config.Config, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(f, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return config.Load(f, nil)
}

// TestDeprecatedPolicyKeyTakesEffect: a flat llm_scheduler.policies key
// that is a plugin parameter now still applies — llm-metric-based with
// kv_cache_weight 5 sends the request to the long queue rather than to
// the nearly full KV cache it prefers by default — and startup says once
// where the key moved.
func TestDeprecatedPolicyKeyTakesEffect(t *testing.T) {
	for _, tc := range []struct {
		policies string
		want     string
	}{
		{"", "10.0.3.2:8000"},
		{"\n  policies:\n    kv_cache_weight: 5", "10.0.3.1:8000"},
	} {
		cfg, err := loadYAML(t, "llm_scheduler:\n  policy: llm-metric-based\n  affinity: {session: false}"+tc.policies+"\n")
		if err != nil {
			t.Fatal(err)
		}
		core, logs := observer.New(zapcore.WarnLevel)
		s, err := New(cfg, Deps{Clock: newFakeClock(), Log: zap.New(core)})
		if err != nil {
			t.Fatal(err)
		}
		a, b := "10.0.3.1:8000", "10.0.3.2:8000"
		mustRegister(t, s, a)
		mustRegister(t, s, b)
		ra, rb := load(0, 4), load(0, 0)
		ra.KvCacheUsage, rb.KvCacheUsage = 0.1, 0.8
		mustReport(t, s, a, ra)
		mustReport(t, s, b, rb)
		if got := route(t, s, pickReq("r", "m")); got != tc.want {
			t.Errorf("policies %q: routed to %s, want %s", tc.policies, got, tc.want)
		}
		var warned []string
		for _, e := range logs.All() {
			if strings.Contains(e.Message, "llm_scheduler.policies.") {
				warned = append(warned, e.Message)
			}
		}
		if tc.policies == "" {
			if len(warned) != 0 {
				t.Errorf("no deprecated key given, warned %q", warned)
			}
			continue
		}
		if len(warned) != 1 || !strings.Contains(warned[0], "llm_scheduler.policies.kv_cache_weight is deprecated: use parameter kvCacheWeight of plugin type llm-metric-based (plugins[].parameters.kvCacheWeight in llm_scheduler.endpoint_picker_config") {
			t.Errorf("warnings %q: want one naming kv_cache_weight's new place", warned)
		}
	}
}

// TestDeprecatedPolicyKeyChecked: a bad value under a deprecated key stops
// the scheduler, naming the key and the rule, even when no plugin of its
// type is configured.
func TestDeprecatedPolicyKeyChecked(t *testing.T) {
	cfg, err := loadYAML(t, "llm_scheduler:\n  policy: least-request\n  policies:\n    max_load_ratio: 0.5\n")
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{func() error { _, err := New(cfg, Deps{}); return err }(), CheckPolicies(cfg)} {
		if err == nil || !strings.Contains(err.Error(), "llm_scheduler.policies.max_load_ratio = 0.5") || !strings.Contains(err.Error(), "parameter maxLoadRatio 0.5: accepted: 0 (no cap) or 1 or more") {
			t.Errorf("max_load_ratio 0.5: %v", err)
		}
	}
}

// TestMovedCostModelKeyWarns: llm_scheduler.policies.step_time, now
// llm_scheduler.cost_model.step_time, still applies there, and the
// scheduler says so at startup.
func TestMovedCostModelKeyWarns(t *testing.T) {
	cfg, err := loadYAML(t, "llm_scheduler:\n  policies:\n    step_time: 9ms\n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Scheduler.CostModel.StepTime != 9*time.Millisecond {
		t.Fatalf("cost_model.step_time = %s, want the deprecated key's 9ms", cfg.Scheduler.CostModel.StepTime)
	}
	core, logs := observer.New(zapcore.WarnLevel)
	if _, err := New(cfg, Deps{Log: zap.New(core)}); err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range logs.All() {
		msgs = append(msgs, e.Message)
	}
	all := strings.Join(msgs, "\n")
	if !strings.Contains(all, "llm_scheduler.policies.step_time is deprecated: it is llm_scheduler.cost_model.step_time now") {
		t.Errorf("warnings %q do not name step_time's new place", all)
	}
}

// TestDeprecatedEndpointPickerAPIVersionWarns: an EndpointPickerConfig
// under an apiVersion llm-d deprecates still loads, and startup says so in
// one warning naming it, the file and the current one; under the current
// apiVersion nothing is said.
func TestDeprecatedEndpointPickerAPIVersionWarns(t *testing.T) {
	for _, tc := range []struct {
		version    string
		deprecated bool
	}{
		{"llm-d.ai/v1", false},
		{"llm-d.ai/v1alpha1", true},
		{"inference.networking.x-k8s.io/v1alpha1", true},
	} {
		f := filepath.Join(t.TempDir(), "epp.yaml")
		src := "apiVersion: " + tc.version + "\nkind: EndpointPickerConfig\nplugins: [{type: queue-scorer}]\nschedulingProfiles: [{name: p, plugins: [{pluginRef: queue-scorer}]}]\n"
		if err := os.WriteFile(f, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := loadYAML(t, "llm_scheduler:\n  policy: p\n  endpoint_picker_config: "+f+"\n")
		if err != nil {
			t.Fatal(err)
		}
		core, logs := observer.New(zapcore.WarnLevel)
		if _, err := New(cfg, Deps{Log: zap.New(core)}); err != nil {
			t.Fatalf("apiVersion %s: %v", tc.version, err)
		}
		var warned []observer.LoggedEntry
		for _, e := range logs.All() {
			if strings.Contains(e.Message, "apiVersion") {
				warned = append(warned, e)
			}
		}
		if !tc.deprecated {
			if len(warned) != 0 {
				t.Errorf("apiVersion %s: warned %v", tc.version, warned)
			}
			continue
		}
		if len(warned) != 1 {
			t.Fatalf("apiVersion %s: %d warnings %v, want one", tc.version, len(warned), warned)
		}
		e := warned[0]
		if e.Level != zapcore.WarnLevel || !strings.Contains(e.Message, tc.version+" is deprecated") || !strings.Contains(e.Message, "use llm-d.ai/v1") || e.ContextMap()["file"] != f {
			t.Errorf("apiVersion %s: warning %q %v, want it named, the replacement and the file", tc.version, e.Message, e.ContextMap())
		}
	}
}
