package extproc

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/envoytest"
	"github.com/llmrouter/llmrouter/scheduler"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/leastrequest"
)

// TestAdapterRequestThroughTheRealScheduler: a client asking vLLM for a
// LoRA adapter by its model name ("model": "sql") through the gateway's
// ext_proc, as Envoy sends it, is routed to the instance serving the
// adapter although the other is idler; an adapter no instance serves is
// answered 404 model_not_found naming what is served.
func TestAdapterRequestThroughTheRealScheduler(t *testing.T) {
	cfg := config.Default()
	cfg.Scheduler.Policy = "least-request"
	s, err := scheduler.New(cfg, scheduler.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	withSQL, without := "10.0.0.1:8000", "10.0.0.2:8000"
	for _, r := range []*llmrouterv1.Register{
		{Address: withSQL, Engine: "vllm", Models: []string{"llama"}, LoraAdapters: []string{"sql"}, Initial: &llmrouterv1.Report{Healthy: true, Running: 7}},
		{Address: without, Engine: "vllm", Models: []string{"llama"}, Initial: &llmrouterv1.Report{Healthy: true}},
	} {
		r.ReportInterval = durationpb.New(cfg.Agent.ReportInterval)
		if _, err := s.Register(r); err != nil {
			t.Fatal(err)
		}
	}
	h := newHarness(t, s, testOptions())
	ask := func(model string) *envoytest.Result {
		t.Helper()
		res := h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(),
			Body: []byte(`{"model":"` + model + `","messages":[{"role":"user","content":"how many rows?"}]}`)})
		if res.Err != nil {
			t.Fatalf("model %s: %v", model, res.Err)
		}
		return res
	}
	for range 3 {
		if got := headerValues(ask("sql").Headers, HeaderDestination); len(got) != 1 || got[0] != withSQL {
			t.Fatalf("%s for model sql = %q, want %s alone (the only instance serving the adapter)", HeaderDestination, got, withSQL)
		}
	}
	if got := headerValues(ask("llama").Headers, HeaderDestination); len(got) != 1 || !strings.HasPrefix(got[0], without) {
		t.Fatalf("%s for the base model = %q, want %s first (least loaded)", HeaderDestination, got, without)
	}
	imm := ask("poetry").Immediate
	if imm == nil || imm.Status != 404 || !strings.Contains(string(imm.Body), "model_not_found") || !strings.Contains(string(imm.Body), "llama, sql") {
		t.Fatalf("model poetry: immediate %+v, want 404 model_not_found naming the served models llama, sql", imm)
	}
}
