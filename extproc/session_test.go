package extproc

import (
	"context"
	"strings"
	"testing"

	"github.com/llmrouter/llmrouter/internal/envoytest"
	"github.com/llmrouter/llmrouter/internal/sessionkey"
)

// TestSessionKeyLeavesAsDigest: the session key (x-session-id, else the
// body's user) reaches the scheduler as a fixed-size digest, never raw.
func TestSessionKeyLeavesAsDigest(t *testing.T) {
	fake := newFake(routed("10.0.0.1:8000"))
	h := newHarness(t, fake, testOptions())
	huge := strings.Repeat("u", 1<<20)
	for _, tc := range []struct {
		name    string
		headers []envoytest.Header
		body    string
		raw     string
	}{
		{"header", chatHeaders(envoytest.Header{Key: HeaderSessionID, Value: "conv-42"}), `{"model":"llama","messages":[{"role":"user","content":"hi"}]}`, "conv-42"},
		{"body user, 1 MiB", chatHeaders(), `{"model":"llama","user":"` + huge + `","messages":[{"role":"user","content":"hi"}]}`, huge},
	} {
		res := h.f.Do(context.Background(), envoytest.Request{Headers: tc.headers, Body: []byte(tc.body)})
		if res.Err != nil {
			t.Fatalf("%s: %v", tc.name, res.Err)
		}
		got := fake.lastPick().SessionKey
		if got != sessionkey.Digest(tc.raw) || len(got) != sessionkey.DigestLen {
			t.Fatalf("%s: session key sent = %.80q (%d bytes), want the digest of the raw key", tc.name, got, len(got))
		}
	}
}
