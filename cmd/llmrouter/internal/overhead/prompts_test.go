package overhead

import (
	"encoding/json"
	"strings"
	"testing"
)

// Bodies are valid chat requests of the asked size, distinct per request
// from the user message on, and a released buffer is not shared with a body
// still in use.
func TestPromptsAreDistinctChatBodies(t *testing.T) {
	for _, size := range []int{100, 4 << 10, 256 << 10} {
		p := newPrompts(size, 1)
		seen := map[string]bool{}
		var held [][]byte
		for i := range 50 {
			id, body := p.next()
			var req struct {
				Model    string `json:"model"`
				Messages []struct{ Role, Content string }
			}
			if err := json.Unmarshal(body, &req); err != nil {
				t.Fatalf("size %d: body %d is not JSON: %v", size, i, err)
			}
			if req.Model != "model" || len(req.Messages) != 2 || req.Messages[1].Role != "user" {
				t.Fatalf("size %d: body %d: %+v", size, i, req)
			}
			if got := len(req.Messages[0].Content) + len(req.Messages[1].Content); got < size-1 || got > size+stampLen {
				t.Fatalf("size %d: prompt of %d bytes", size, got)
			}
			user := req.Messages[1].Content
			if seen[user] || seen[id] || !strings.HasPrefix(user, "question ") {
				t.Fatalf("size %d: body %d repeats an earlier user message or id %q", size, i, id)
			}
			seen[user], seen[id] = true, true
			if i%2 == 0 {
				p.release(body)
			} else {
				held = append(held, body)
			}
		}
		for i, b := range held {
			if !json.Valid(b) || seen[string(b)] {
				t.Fatalf("size %d: held body %d was overwritten", size, i)
			}
			seen[string(b)] = true
		}
	}
}
