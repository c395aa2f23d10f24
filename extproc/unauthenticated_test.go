package extproc

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/envoytest"
	"github.com/llmrouter/llmrouter/internal/promtest"
)

// A gateway whose token the scheduler refuses keeps serving (requests pass
// through to Envoy's round robin) but says why: "unauthenticated" in its
// status (the /readyz body), its log and llmrouter_gateway_unauthenticated,
// which an alert watches. A good pick clears it.
func TestUnauthenticatedGatewaySaysSo(t *testing.T) {
	refused := func(context.Context, *llmrouterv1.PickRequest, func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
		return nil, status.Error(codes.Unauthenticated, "missing or invalid token")
	}
	fake := newFake(refused)
	core, logs := observer.New(zapcore.InfoLevel)
	h := newHarnessLogged(t, fake, testOptions(), zap.New(core))
	req := envoytest.Request{Headers: chatHeaders(envoytest.Header{Key: "x-request-id", Value: "u"}), Body: []byte(chatBody)}

	res := h.f.Do(context.Background(), req)
	if res.Err != nil || !res.Continued || res.Immediate != nil || len(headerValues(res.Headers, HeaderDestination)) != 0 {
		t.Fatalf("refused token: want the request passed through, got err=%v continued=%v immediate=%v", res.Err, res.Continued, res.Immediate)
	}
	if !h.srv.Unauthenticated() || !strings.Contains(h.srv.Status(), "unauthenticated") {
		t.Fatalf("status %q, unauthenticated=%v", h.srv.Status(), h.srv.Unauthenticated())
	}
	if promtest.Value(t, h.reg, "llmrouter_gateway_unauthenticated") != 1 || promtest.Value(t, h.reg, "llmrouter_gateway_degraded") != 1 {
		t.Fatalf("unauthenticated = %v, degraded = %v", promtest.Value(t, h.reg, "llmrouter_gateway_unauthenticated"), promtest.Value(t, h.reg, "llmrouter_gateway_degraded"))
	}
	if n := logs.FilterMessageSnippet("unauthenticated").Len(); n != 1 {
		t.Fatalf("%d log lines say unauthenticated, want 1: %v", n, logs.All())
	}
	if logs.FilterMessageSnippet("unreachable").Len() != 0 {
		t.Fatal("a refused token logged as an unreachable scheduler")
	}

	// The token is fixed (rotation finished): the next probe pick succeeds.
	fake.setPick(routed("10.0.0.1:8000"))
	var routedOK bool
	for range 20 {
		res = h.f.Do(context.Background(), req)
		if len(headerValues(res.Headers, HeaderDestination)) == 1 {
			routedOK = true
			break
		}
		time.Sleep(testOptions().ProbeInterval)
	}
	if !routedOK || h.srv.Unauthenticated() || promtest.Value(t, h.reg, "llmrouter_gateway_unauthenticated") != 0 {
		t.Fatalf("after the token was accepted: routed=%v unauthenticated=%v", routedOK, h.srv.Unauthenticated())
	}
	if strings.Contains(h.srv.Status(), "unauthenticated") {
		t.Fatalf("status still %q", h.srv.Status())
	}
}
