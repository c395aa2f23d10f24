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

// TestDeprecatedPolicyKeyWarns: a flat llm_scheduler.policies key that is
// now a plugin parameter still applies, and startup says where it moved.
func TestDeprecatedPolicyKeyWarns(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	cfg := config.Default()
	cfg.Scheduler.Policies.MaxLoadRatio = 3
	if _, err := New(cfg, Deps{Log: zap.New(core)}); err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range logs.All() {
		msgs = append(msgs, e.Message)
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{"llm_scheduler.policies.max_load_ratio is deprecated", "parameter maxLoadRatio", "prefix-cache"} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings %q lack %q", all, want)
		}
	}
}

// TestMovedCostModelKeyWarns: llm_scheduler.policies.step_time, now
// llm_scheduler.cost_model.step_time, still applies there, and the
// scheduler says so at startup.
func TestMovedCostModelKeyWarns(t *testing.T) {
	f := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(f, []byte("llm_scheduler:\n  policies:\n    step_time: 9ms\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(f, nil)
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
