package extproc

import (
	"context"
	"fmt"
	"testing"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/envoytest"
	"github.com/llmrouter/llmrouter/internal/promtest"
)

// The model label names only models the scheduler confirmed served (its
// answer's pool equals the request's model); a model served through the
// default pool, an unknown one and anything past the bound are "other".
func TestModelLabelBoundedByServedModels(t *testing.T) {
	fake := newFake(func(_ context.Context, req *llmrouterv1.PickRequest, _ func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
		switch req.Model {
		case "unknown":
			return &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_REJECTED, HttpStatus: 404}, nil
		case "alias":
			return &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_ROUTED, Endpoints: []string{"10.0.0.1:8000"}, Pool: "llama"}, nil
		}
		return &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_ROUTED, Endpoints: []string{"10.0.0.1:8000"}, Pool: req.Model}, nil
	})
	h := newHarness(t, fake, testOptions())
	send := func(model string) {
		t.Helper()
		res := h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(),
			Body: []byte(`{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`)})
		if res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	send("llama")
	send("alias")
	send("unknown")
	for _, c := range []struct {
		outcome, model string
		want           float64
	}{
		{"routed", "llama", 1},
		{"routed", "other", 1}, // alias: served by another model's pool
		{"rejected", "other", 1},
	} {
		if got := promtest.Value(t, h.reg, "llmrouter_gateway_requests_total", "outcome", c.outcome, "model", c.model); got != c.want {
			t.Errorf("requests{outcome=%s,model=%s} = %v, want %v", c.outcome, c.model, got, c.want)
		}
	}
	for i := range maxModelLabels + 5 {
		send(fmt.Sprintf("m%d", i))
	}
	models := map[string]bool{}
	mfs, _ := h.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "llmrouter_gateway_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "model" {
					models[l.GetValue()] = true
				}
			}
		}
	}
	if len(models) != maxModelLabels+1 || !models["other"] || models["unknown"] || models["alias"] {
		t.Fatalf("%d model label values (want %d served plus other): %v", len(models), maxModelLabels, models)
	}
}

// Every known passthrough reason exists at 0 on a gateway that has seen no
// request (the dashboard's passthrough panel and the alerts read them).
func TestPassthroughReasonsExportedFromStart(t *testing.T) {
	h := newHarness(t, newFake(nil), testOptions())
	for _, r := range passthroughReasons {
		mfs, _ := h.reg.Gather()
		found := false
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				if mf.GetName() == "llmrouter_gateway_passthrough_total" && m.GetLabel()[0].GetValue() == r {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("llmrouter_gateway_passthrough_total{reason=%q} missing before any request", r)
		}
	}
}
