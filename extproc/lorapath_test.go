package extproc

import (
	"context"
	"slices"
	"testing"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/envoytest"
)

// TestLoRAPathSentToTheScheduler: SGLang's lora_path body field reaches the
// scheduler as PickRequest.lora_path, with the model unchanged; the prompt is hashed as the same request
// written "model:lora_path" is (the adapter's cached prefixes are its own),
// not as the base model's. Without lora_path nothing changes.
func TestLoRAPathSentToTheScheduler(t *testing.T) {
	fake := newFake(routed("10.0.0.1:8000"))
	h := newHarness(t, fake, testOptions())
	pick := func(body string) *llmrouterv1.PickRequest {
		t.Helper()
		res := h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(), Body: []byte(body)})
		if res.Err != nil || !res.Continued || res.Immediate != nil {
			t.Fatalf("body %s: err %v continued %v immediate %v; want continued", body, res.Err, res.Continued, res.Immediate)
		}
		return fake.lastPick()
	}
	msgs := `"messages":[{"role":"user","content":"count the rows of users, then of orders, then of items"}]`
	withPath := pick(`{"model":"m","lora_path":"sql",` + msgs + `}`)
	inModel := pick(`{"model":"m:sql",` + msgs + `}`)
	base := pick(`{"model":"m",` + msgs + `}`)
	if withPath.GetModel() != "m" || withPath.GetLoraPath() != "sql" || withPath.GetLoraAdapter() != "m" {
		t.Fatalf("pick for model m, lora_path sql: model %q lora_path %q lora_adapter %q; want m, sql, m", withPath.GetModel(), withPath.GetLoraPath(), withPath.GetLoraAdapter())
	}
	if base.GetLoraPath() != "" || inModel.GetLoraPath() != "" {
		t.Fatalf("lora_path %q and %q sent for bodies naming none", base.GetLoraPath(), inModel.GetLoraPath())
	}
	if len(withPath.PromptBlockHashes) == 0 || !slices.Equal(withPath.PromptBlockHashes, inModel.PromptBlockHashes) || slices.Equal(withPath.PromptBlockHashes, base.PromptBlockHashes) {
		t.Fatalf("hashes: lora_path %v, m:sql %v, m %v; want lora_path's equal to m:sql's, not m's", withPath.PromptBlockHashes, inModel.PromptBlockHashes, base.PromptBlockHashes)
	}
}
