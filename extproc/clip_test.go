package extproc

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/clip"
	"github.com/llmrouter/llmrouter/internal/envoytest"
)

// TestErrorBodiesEchoAShortPrefix: a 404 for a 1 MiB model name carries at
// most clip.MaxInput bytes of the name, whether the gateway words the
// message or the scheduler's reason (however long) is relayed.
func TestErrorBodiesEchoAShortPrefix(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	body := `{"model":"` + huge + `","messages":[{"role":"user","content":"hi"}]}`
	for _, reason := range []string{"", "model " + huge + " is not served"} {
		fake := newFake(func(context.Context, *llmrouterv1.PickRequest, func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
			return &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_REJECTED, HttpStatus: 404, Reason: reason}, nil
		})
		h := newHarness(t, fake, testOptions())
		res := h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(), Body: []byte(body)})
		if res.Immediate == nil || res.Immediate.Status != 404 {
			t.Fatalf("reason %.20q: want a 404, got %+v (err %v)", reason, res.Immediate, res.Err)
		}
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		if err := json.Unmarshal(res.Immediate.Body, &e); err != nil {
			t.Fatal(err)
		}
		if len(res.Immediate.Body) > maxReason+256 || strings.Contains(e.Error.Message, strings.Repeat("x", maxReason+1)) {
			t.Fatalf("reason %.20q: body is %d bytes", reason, len(res.Immediate.Body))
		}
		if reason == "" && (!strings.Contains(e.Error.Message, clip.Input(huge)) || strings.Contains(e.Error.Message, strings.Repeat("x", clip.MaxInput+1))) {
			t.Fatalf("gateway's own message does not quote the clipped name: %.200q", e.Error.Message)
		}
	}
}
