package bypos

import (
	"testing"

	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// TestGetDerivesOnlyWhatChanged: a stable list derives nothing twice; a
// changed position, a changed length or a new generation derives afresh.
func TestGetDerivesOnlyWhatChanged(t *testing.T) {
	a, b, c := &policy.Instance{ID: "a"}, &policy.Instance{ID: "b"}, &policy.Instance{ID: "c"}
	var calls []string
	derive := func(i *policy.Instance) string { calls = append(calls, i.ID); return i.ID + "!" }
	var cache Cache[string]
	check := func(step string, got []string, want []string, wantCalls []string) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: got %v, want %v", step, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: got %v, want %v", step, got, want)
			}
		}
		if len(calls) != len(wantCalls) {
			t.Fatalf("%s: derived %v, want %v", step, calls, wantCalls)
		}
		for i := range calls {
			if calls[i] != wantCalls[i] {
				t.Fatalf("%s: derived %v, want %v", step, calls, wantCalls)
			}
		}
		calls = nil
	}
	check("first", cache.Get([]*policy.Instance{a, b}, 1, derive), []string{"a!", "b!"}, []string{"a", "b"})
	check("same", cache.Get([]*policy.Instance{a, b}, 1, derive), []string{"a!", "b!"}, nil)
	check("one moved", cache.Get([]*policy.Instance{a, c}, 1, derive), []string{"a!", "c!"}, []string{"c"})
	check("new generation", cache.Get([]*policy.Instance{a, c}, 2, derive), []string{"a!", "c!"}, []string{"a", "c"})
	check("longer", cache.Get([]*policy.Instance{a, c, b}, 2, derive), []string{"a!", "c!", "b!"}, []string{"a", "c", "b"})
	if cache.Index(b) != 2 || cache.Index(&policy.Instance{ID: "b"}) != -1 {
		t.Fatalf("Index: %d and %d, want 2 and -1", cache.Index(b), cache.Index(&policy.Instance{ID: "b"}))
	}
}
