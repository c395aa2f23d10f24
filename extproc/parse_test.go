package extproc

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/prompthash"
)

func TestAPIForPath(t *testing.T) {
	for path, want := range map[string]llmrouterv1.ApiKind{
		"/v1/chat/completions":        llmrouterv1.ApiKind_API_KIND_CHAT_COMPLETIONS,
		"/v1/chat/completions?x=1":    llmrouterv1.ApiKind_API_KIND_CHAT_COMPLETIONS,
		"/openai/v1/chat/completions": llmrouterv1.ApiKind_API_KIND_CHAT_COMPLETIONS,
		"/v1/completions":             llmrouterv1.ApiKind_API_KIND_COMPLETIONS,
		"/v1/embeddings/":             llmrouterv1.ApiKind_API_KIND_EMBEDDINGS,
		"/v1/responses":               llmrouterv1.ApiKind_API_KIND_RESPONSES,
		"/v1/models":                  llmrouterv1.ApiKind_API_KIND_UNSPECIFIED,
		"/v1/completions/x":           llmrouterv1.ApiKind_API_KIND_UNSPECIFIED,
		"":                            llmrouterv1.ApiKind_API_KIND_UNSPECIFIED,
	} {
		if got := APIForPath(path); got != want {
			t.Errorf("APIForPath(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestParseBodyAPIs(t *testing.T) {
	chat := llmrouterv1.ApiKind_API_KIND_CHAT_COMPLETIONS
	comp := llmrouterv1.ApiKind_API_KIND_COMPLETIONS
	emb := llmrouterv1.ApiKind_API_KIND_EMBEDDINGS
	resp := llmrouterv1.ApiKind_API_KIND_RESPONSES
	for _, tc := range []struct {
		name   string
		api    llmrouterv1.ApiKind
		body   string
		prefix string
		check  func(Body) bool
	}{
		{"chat string", chat, `{"model":"m","messages":[{"role":"user","content":"hi\nthere \u00e9\ud83d\ude00"}],"max_tokens":5,"stream":false,"cache_salt":"t1","user":"u"}`,
			"user\nhi\nthere é😀\n", func(b Body) bool { return b.MaxTokens == 5 && !b.Stream && b.CacheSalt == "t1" && b.User == "u" }},
		{"chat parts and nulls", chat, `{"messages":[{"role":"system","content":null},{"role":"user","content":["a",{"type":"text","text":"b"}]}],"model":"m","stream":null,"user":null,"max_tokens":null}`,
			"system\n\nuser\na\nb\n", func(b Body) bool { return b.Model == "m" && b.MaxTokens == 0 }},
		{"chat float max tokens", chat, `{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":12.0,"stream":true,"stream_options":{"include_usage":true}}`,
			"user\nx\n", func(b Body) bool { return b.MaxTokens == 12 && b.Stream && b.IncludeUsage }},
		{"completion string", comp, `{"model":"m","prompt":"once upon"}`, "once upon", nil},
		{"completion list", comp, `{"model":"m","prompt":["a","b"]}`, "a\nb", nil},
		{"completion token ids", comp, `{"model":"m","prompt":[1, 2,3]}`, "1,2,3", nil},
		{"embeddings", emb, `{"model":"e","input":["x","y"]}`, "x\ny", nil},
		{"embeddings token lists", emb, `{"model":"e","input":[[1,2],[3]]}`, "[1,2]\n[3]", nil},
		{"responses string", resp, `{"model":"m","input":"hello","instructions":"be brief","max_output_tokens":9}`,
			"system\nbe brief\nuser\nhello\n", func(b Body) bool { return b.MaxTokens == 9 }},
		{"responses items", resp, `{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"q"}]},{"type":"function_call_output","call_id":"c","output":"42"},{"type":"reasoning","id":"r"}]}`,
			"user\nq\ntool\n42\n", nil},
		{"last content wins", chat, `{"model":"m","messages":[{"role":"user","content":"a","content":["b"]},{"content":["c"],"role":"user","content":"d\"e"}]}`,
			"user\nb\nuser\nd\"e\n", nil},
		{"lora_path", chat, `{"model":"m","lora_path":"sq\u006c","messages":[{"role":"user","content":"x"}]}`, "user\nx\n", func(b Body) bool { return b.LoRAPath == "sql" }},
		{"lora_path list or null unread", comp, `{"model":"m","lora_path":"a","lora_path":["a","b"],"prompt":"x","lora_path":null}`, "x", func(b Body) bool { return b.LoRAPath == "" }},
		{"lora_path past the bound unread", comp, `{"model":"m","lora_path":"a","lora_path":"` + strings.Repeat("a", maxLoRAPath+1) + `","prompt":"x"}`, "x", func(b Body) bool { return b.LoRAPath == "" }},
		{"lora_path at the bound", comp, `{"model":"m","prompt":"x","lora_path":"` + strings.Repeat("a", maxLoRAPath) + `"}`, "x", func(b Body) bool { return len(b.LoRAPath) == maxLoRAPath }},
		{"ignores other APIs' fields", chat, `{"model":"m","prompt":"zzz","input":"yyy","messages":[{"role":"user","content":"x"}]}`, "user\nx\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := ParseBody(tc.api, []byte(tc.body), 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			if string(b.Prefix) != tc.prefix {
				t.Fatalf("prefix = %q, want %q", b.Prefix, tc.prefix)
			}
			if b.PromptChars != len(tc.prefix) {
				t.Fatalf("prompt chars = %d, want %d", b.PromptChars, len(tc.prefix))
			}
			if b.Model == "" || (tc.check != nil && !tc.check(b)) {
				t.Fatalf("body = %+v", b)
			}
		})
	}
}

func TestParseBodyRejects(t *testing.T) {
	chat := llmrouterv1.ApiKind_API_KIND_CHAT_COMPLETIONS
	for _, body := range []string{
		``, `[]`, `{"model":"m"}`, `{"model":1,"messages":[{"role":"user","content":"x"}]}`,
		`{"model":"m","messages":[]}`, `{"model":"m","messages":[{"role":"user","content":"x"}]} {}`,
		`{"model":"m","messages":[{"role":"user","content":"x\q"}]}`, `{"model":"m","messages":[{"role":"user","content":"x"}]`,
		`{"model":"m","messages":[{"role":"user","content":5}]}`,
	} {
		if _, err := ParseBody(chat, []byte(body), 0, nil); err == nil {
			t.Errorf("ParseBody(%q) accepted", body)
		}
	}
}

func TestParseBodyBoundedPrefix(t *testing.T) {
	long := strings.Repeat("abcdefgh", 40000) // 320 KB
	body := `{"model":"m","messages":[{"role":"user","content":"` + long + `"},{"role":"assistant","content":"ok"}]}`
	b, err := ParseBody(llmrouterv1.ApiKind_API_KIND_CHAT_COMPLETIONS, []byte(body), 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	full := prompthash.RenderChat([]prompthash.Message{{Role: "user", Content: long}, {Role: "assistant", Content: "ok"}})
	if string(b.Prefix) != full[:1000] || b.PromptChars != len(full) {
		t.Fatalf("prefix %d bytes (want 1000 of the rendering), chars %d (want %d)", len(b.Prefix), b.PromptChars, len(full))
	}
}

// FuzzParseBody: the parser never panics, and whenever encoding/json can
// read a chat body with string contents, the parser accepts it and renders
// exactly prompthash.RenderChat's text, within the bound.
func FuzzParseBody(f *testing.F) {
	for _, s := range []string{
		chatBody,
		`{"model":"m","messages":[{"role":"user","content":"a\"b\\c\u0041\ud800x"}]}`,
		`{"model":"m","prompt":["a",[1,2],3]}`,
		`{"model":"m","input":[{"role":"user","content":[{"text":"q"}]}]}`,
		`{"a":[[[[[[{"b":"]"}]]]]]],"model":"m","messages":[{"role":"r","content":""}]}`,
		`{"model":"m","lora_path":"s\"q","messages":[{"role":"r","content":""}],"lora_path":"sql"}`,
	} {
		f.Add([]byte(s), uint8(0), uint16(0))
	}
	f.Fuzz(func(t *testing.T, body []byte, apiN uint8, max uint16) {
		api := llmrouterv1.ApiKind(apiN%5 + 1)
		got, err := ParseBody(api, body, int(max), nil)
		if err == nil && max > 0 && len(got.Prefix) > int(max) {
			t.Fatalf("prefix of %d bytes exceeds the bound %d", len(got.Prefix), max)
		}
		if api != llmrouterv1.ApiKind_API_KIND_CHAT_COMPLETIONS || !utf8.Valid(body) {
			return
		}
		var ref struct {
			Model    *string         `json:"model"`
			LoRAPath json.RawMessage `json:"lora_path"`
			Messages []struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"messages"`
		}
		// encoding/json matches keys case-insensitively; the engines do not.
		for _, k := range []string{`"model"`, `"messages"`, `"role"`, `"content"`, `"lora_path"`} {
			if strings.Count(strings.ToLower(string(body)), k) != strings.Count(string(body), k) {
				return
			}
		}
		if json.Unmarshal(body, &ref) != nil || ref.Model == nil || len(ref.Messages) == 0 || strings.Contains(string(body), `\u`) {
			return // \u escapes of invalid surrogates decode differently by design; skip them here
		}
		if err != nil {
			t.Fatalf("encoding/json reads %q but ParseBody fails: %v", body, err)
		}
		var msgs []prompthash.Message
		for _, m := range ref.Messages {
			msgs = append(msgs, prompthash.Message{Role: m.Role, Content: m.Content})
		}
		want := prompthash.RenderChat(msgs)
		if max > 0 && len(want) > int(max) {
			want = want[:max]
		}
		if string(got.Prefix) != want || got.Model != *ref.Model {
			t.Fatalf("rendering differs:\n got %q\nwant %q", got.Prefix, want)
		}
		// lora_path: read when a string within the bound (without \u
		// escapes the raw text is at most twice the decoded), else not.
		var lp string
		if json.Unmarshal(ref.LoRAPath, &lp) != nil || len(lp) > maxLoRAPath {
			lp = ""
		}
		if len(lp)*2 <= maxLoRAPath && got.LoRAPath != lp || len(lp)*2 > maxLoRAPath && got.LoRAPath != lp && got.LoRAPath != "" {
			t.Fatalf("lora_path = %q, want %q", got.LoRAPath, lp)
		}
	})
}

// FuzzReadEvent: SSE payloads and response bodies never panic the usage reader.
func FuzzReadEvent(f *testing.F) {
	f.Add([]byte(`{"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}`))
	f.Add([]byte(`{"type":"response.completed","response":{"usage":{"input_tokens":3,"output_tokens":4}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		readEvent(data)
		findUsage(data)
	})
}
