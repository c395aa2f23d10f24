package scheduler

import (
	"strings"
	"testing"

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
	// The cost model's keys are admission's too: they stay.
	logs.TakeAll()
	cfg.Scheduler.Policies.StepTime *= 2
	if _, err := New(cfg, Deps{Log: zap.New(core)}); err != nil {
		t.Fatal(err)
	}
	for _, e := range logs.All() {
		if strings.Contains(e.Message, "step_time") {
			t.Errorf("step_time, which admission reads, reported deprecated: %s", e.Message)
		}
	}
}
