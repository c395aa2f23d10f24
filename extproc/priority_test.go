package extproc

import (
	"context"
	"testing"

	"github.com/llmrouter/llmrouter/internal/envoytest"
)

// TestPriorityOnlyFromTrustedHeader: a request's priority comes only from
// llm_gateway.trusted_priority_header; by default none is read, and a
// client's x-llmrouter-priority never reaches the scheduler or the engine.
func TestPriorityOnlyFromTrustedHeader(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted string
		headers []envoytest.Header
		want    int32
	}{
		{"default ignores the client's header", "", []envoytest.Header{{Key: HeaderPriority, Value: "9"}}, 0},
		{"trusted header read", "x-tenant-priority", []envoytest.Header{{Key: "x-tenant-priority", Value: "7"}, {Key: HeaderPriority, Value: "9"}}, 7},
		{"trusted header absent", "x-tenant-priority", []envoytest.Header{{Key: HeaderPriority, Value: "9"}}, 0},
		{"x-llmrouter-priority when trusted", HeaderPriority, []envoytest.Header{{Key: HeaderPriority, Value: "9"}}, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFake(routed("10.0.0.1:8000"))
			opt := testOptions()
			opt.TrustedPriorityHeader = tc.trusted
			h := newHarness(t, fake, opt)
			res := h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(tc.headers...), Body: []byte(chatBody)})
			if res.Err != nil || !res.Continued {
				t.Fatalf("err=%v continued=%v", res.Err, res.Continued)
			}
			if got := fake.lastPick().Priority; got != tc.want {
				t.Fatalf("priority = %d, want %d", got, tc.want)
			}
			if v := headerValues(res.Headers, HeaderPriority); len(v) != 0 {
				t.Fatalf("%s forwarded upstream: %q", HeaderPriority, v)
			}
		})
	}
}
