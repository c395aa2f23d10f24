package extproc

import (
	"bytes"
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/envoytest"
	"github.com/llmrouter/llmrouter/internal/promtest"
)

// retrieveFleet holds names with a slash and a colon, as Hugging Face ids
// and Ollama-style tags have them, and an adapter of a base model.
var retrieveFleet = []*llmrouterv1.ServedModel{
	{Name: "chat-lora", LoraAdapter: true, Parent: "llama", CreatedUnix: 1700000100, Instances: 1},
	{Name: "llama", CreatedUnix: 1700000000, Instances: 2},
	{Name: "llama3:8b", CreatedUnix: 1700000300, Instances: 1},
	{Name: "meta-llama/Llama-3-8B", CreatedUnix: 1700000200, Instances: 1},
}

// openAIModelObject is the documented shape of OpenAI's GET /v1/models/{id}
// answer, plus vLLM's parent.
type openAIModelObject struct {
	ID      string  `json:"id"`
	Object  string  `json:"object"`
	Created int64   `json:"created"`
	OwnedBy string  `json:"owned_by"`
	Parent  *string `json:"parent"`
}

// openAIError is OpenAI's error body.
type openAIError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

func strictDecode(t *testing.T, body []byte, v any) {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
}

// GET /v1/models/{id} (OpenAI's models.retrieve) is answered by the
// gateway from the fleet's list, whichever engine serves the model: 200
// with the model's object exactly as the list shows it, for ids holding
// '/' or ':' as they are or escaped, the query string ignored; 404 in
// OpenAI's error shape, as a POST naming it gets, for an id nobody serves.
// No pick, one scheduler call for all of them (the list's cache).
func TestModelRetrieve(t *testing.T) {
	s := newLister(listing(retrieveFleet...))
	h := newHarness(t, s, testOptions())
	listRes := h.f.Do(context.Background(), modelsGet("/v1/models"))
	if listRes.Immediate == nil {
		t.Fatalf("GET /v1/models not answered: %+v", listRes)
	}
	for _, tc := range []struct{ path, id string }{
		{"/v1/models/llama", "llama"},
		{"/v1/models/chat-lora", "chat-lora"},
		{"/v1/models/meta-llama/Llama-3-8B", "meta-llama/Llama-3-8B"},
		{"/v1/models/meta-llama%2FLlama-3-8B", "meta-llama/Llama-3-8B"},
		{"/v1/models/meta-llama%2fLlama-3-8B?api-version=2024", "meta-llama/Llama-3-8B"},
		{"/v1/models/llama3:8b", "llama3:8b"},
		{"/v1/models/llama3%3A8b", "llama3:8b"},
	} {
		res := h.f.Do(context.Background(), modelsGet(tc.path))
		imm := res.Immediate
		if res.Err != nil || imm == nil || imm.Status != 200 {
			t.Fatalf("GET %s: err %v continued %v immediate %+v", tc.path, res.Err, res.Continued, imm)
		}
		if ct, _ := envoytest.Get(imm.Headers, "content-type"); ct != "application/json" {
			t.Fatalf("GET %s: content-type %q", tc.path, ct)
		}
		var m openAIModelObject
		strictDecode(t, imm.Body, &m)
		if m.ID != tc.id || m.Object != "model" || m.Created == 0 || m.OwnedBy != "llmrouter" {
			t.Fatalf("GET %s: %s", tc.path, imm.Body)
		}
		if (tc.id == "chat-lora") != (m.Parent != nil) || (m.Parent != nil && *m.Parent != "llama") {
			t.Fatalf("GET %s: parent %v, want llama for the adapter alone", tc.path, m.Parent)
		}
		// The object is the list's entry, byte for byte.
		if !bytes.Contains(listRes.Immediate.Body, imm.Body) {
			t.Fatalf("GET %s: %s is not an entry of the list %s", tc.path, imm.Body, listRes.Immediate.Body)
		}
	}

	long := strings.Repeat("x", 4000)
	for _, tc := range []struct{ path, shown string }{
		{"/v1/models/gpt-4o", "gpt-4o"},
		{"/v1/models/meta-llama%2FLlama-3-70B", "meta-llama/Llama-3-70B"},
		{"/v1/models/llama:no-such-adapter", "llama:no-such-adapter"},
		{"/v1/models/%zz", "%zz"},
		{"/v1/models/" + long + "?q=1", long[:64] + "…"},
	} {
		res := h.f.Do(context.Background(), modelsGet(tc.path))
		imm := res.Immediate
		if res.Err != nil || imm == nil || imm.Status != 404 {
			t.Fatalf("GET %.80s: err %v continued %v immediate %+v, want 404", tc.path, res.Err, res.Continued, imm)
		}
		var e openAIError
		strictDecode(t, imm.Body, &e)
		if e.Error.Type != "invalid_request_error" || e.Error.Code != "model_not_found" ||
			e.Error.Message != "The model `"+tc.shown+"` does not exist." {
			t.Fatalf("GET %.80s: %s", tc.path, imm.Body)
		}
	}
	if s.calls.Load() != 1 || s.pickCount() != 0 {
		t.Fatalf("%d scheduler calls and %d picks, want 1 and 0", s.calls.Load(), s.pickCount())
	}
	if got := promtest.Value(t, h.reg, "llmrouter_gateway_requests_total", "api", "models", "outcome", "answered"); got != 8 {
		t.Fatalf("answered = %v, want 8 (the list and 7 retrievals)", got)
	}
	if got := promtest.Value(t, h.reg, "llmrouter_gateway_requests_total", "api", "models", "outcome", "rejected"); got != 5 {
		t.Fatalf("rejected = %v, want 5", got)
	}
}

// A list that cannot tell a model does not exist answers only the models
// it holds, and lets a miss continue to an engine: the scheduler cut its
// list (or the gateway cut it at its bounds). An id reading as SGLang's
// base:adapter of a listed base model and adapter, which the scheduler
// routes without listing, is the gateway's 404 like any unlisted one: no
// engine retrieves such a name (SGLang's /v1/models/{model} finds its
// served base model alone, vLLM serves no /v1/models/{id} and answers
// FastAPI's {"detail":"Not Found"}), so passing it on could only bring an
// engine's 404, vLLM's not in OpenAI's shape.
func TestModelRetrieveMissPassesThroughWhenTheListCannotTell(t *testing.T) {
	truncated := newLister(func(context.Context) (*llmrouterv1.ListModelsResponse, error) {
		return &llmrouterv1.ListModelsResponse{Models: retrieveFleet, Truncated: true}, nil
	})
	complete := newLister(listing(retrieveFleet...))
	for _, tc := range []struct {
		name    string
		s       *listerSched
		path    string
		answers int // 200 or 404; 0 continues
	}{
		{"truncated, listed", truncated, "/v1/models/llama", 200},
		{"truncated, not listed", truncated, "/v1/models/gpt-4o", 0},
		{"base:adapter", complete, "/v1/models/llama:chat-lora", 404},
		{"base:adapter, spaced", complete, "/v1/models/llama%20:%20chat-lora", 404},
		{"adapter:base", complete, "/v1/models/chat-lora:llama", 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.s, testOptions())
			res := h.f.Do(context.Background(), modelsGet(tc.path))
			if tc.answers == 0 {
				if res.Err != nil || !res.Continued || res.Immediate != nil {
					t.Fatalf("GET %s: err %v continued %v immediate %+v, want it to continue", tc.path, res.Err, res.Continued, res.Immediate)
				}
				if p, _ := envoytest.Get(res.Headers, ":path"); p != tc.path {
					t.Fatalf("GET %s: path changed to %q", tc.path, p)
				}
				return
			}
			if res.Immediate == nil || int(res.Immediate.Status) != tc.answers {
				t.Fatalf("GET %s: immediate %+v, want %d", tc.path, res.Immediate, tc.answers)
			}
			if tc.answers == 404 {
				var e openAIError
				strictDecode(t, res.Immediate.Body, &e)
				if e.Error.Type != "invalid_request_error" || e.Error.Code != "model_not_found" {
					t.Fatalf("GET %s: %s, want OpenAI's model_not_found", tc.path, res.Immediate.Body)
				}
			}
		})
	}

	// The gateway's own bounds cut the list: a miss continues too.
	var many []*llmrouterv1.ServedModel
	for i := range maxModelsEntries + 1 {
		many = append(many, &llmrouterv1.ServedModel{Name: strings.Repeat("m", 4) + string(rune('a'+i%26)) + strings.Repeat("z", i/26)})
	}
	if l := renderModels(&llmrouterv1.ListModelsResponse{Models: many}, time.Unix(1700000000, 0)); l.complete {
		t.Fatal("a list cut at maxModelsEntries is taken as complete")
	}
	if l := renderModels(&llmrouterv1.ListModelsResponse{Models: many[:maxModelsEntries]}, time.Unix(1700000000, 0)); !l.complete {
		t.Fatal("a list at maxModelsEntries is not taken as complete")
	}
}

// FuzzModelsPath: modelsPath never panics; what it reads as an id is the
// path's id part, unescaped once (escaping it again and reading that gives
// the same id, when that fits the bound), bounded, and never empty.
func FuzzModelsPath(f *testing.F) {
	for _, p := range []string{"/v1/models", "/v1/models?x", "/v1/models/", "/v1/models/a/b:c", "/v1/models/a%2Fb?q=%zz",
		"/v1/models/%zz", "/v1/models/%", "/v1/modelsx", "/v1/models/a%20b+c"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		list, id, bad, ok := modelsPath(path)
		if !ok {
			return
		}
		if list {
			if id != "" || bad {
				t.Fatalf("%.80q: the list with id %.80q, bad %v", path, id, bad)
			}
			return
		}
		if bad {
			if id != "" {
				t.Fatalf("%.80q: bad with id %.80q", path, id)
			}
			return
		}
		raw, _, _ := strings.Cut(strings.TrimPrefix(path, modelsPrefix), "?")
		if id == "" || len(id) > len(raw) || len(raw) > maxModelPath {
			t.Fatalf("%.80q: id %.80q from %d bytes", path, id, len(raw))
		}
		if !strings.ContainsRune(raw, '%') && id != raw {
			t.Fatalf("%.80q: id %.80q, want %.80q as it is", path, id, raw)
		}
		if esc := url.PathEscape(id); len(esc) <= maxModelPath {
			if _, again, _, ok := modelsPath(modelsPrefix + esc); !ok || again != id {
				t.Fatalf("%.80q: id %.80q escaped and read again gives %.80q", path, id, again)
			}
		}
	})
}
