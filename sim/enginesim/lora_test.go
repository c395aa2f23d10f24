package enginesim

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestRuntimeLoRA: with RuntimeLoRA the simulator answers vLLM's
// /v1/load_lora_adapter and /v1/unload_lora_adapter as vLLM does: a loaded
// adapter is listed by /v1/models with the base model as parent and taken
// as a request's model, an unloaded one is neither; loading a name twice
// is 400, unloading an unknown one 404, a body without both names 400.
// Without RuntimeLoRA neither endpoint exists.
func TestRuntimeLoRA(t *testing.T) {
	ts := start(t, func(o *Options) { o.RuntimeLoRA = true; o.ServedLoRAs = []string{"sql"} })
	call := func(path, body string) (int, string) {
		t.Helper()
		resp := post(t, ts.url+path, body)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	listed := func() []string {
		t.Helper()
		resp, err := http.Get(ts.url + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var list struct{ Data []modelCard }
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range list.Data[1:] {
			if c.Parent == nil || *c.Parent != DefaultModel {
				t.Fatalf("adapter %s listed with parent %v, want %s", c.ID, c.Parent, DefaultModel)
			}
			out = append(out, c.ID)
		}
		return out
	}
	ask := func(model string) int {
		t.Helper()
		code, _ := call("/v1/completions", `{"model":"`+model+`","prompt":"select","max_tokens":2}`)
		return code
	}

	if code, body := call("/v1/load_lora_adapter", `{"lora_name":"chat","lora_path":"/adapters/chat"}`); code != 200 || !strings.Contains(body, "'chat' added") {
		t.Fatalf("load chat: %d %s", code, body)
	}
	if got := listed(); !slices.Equal(got, []string{"chat", "sql"}) {
		t.Fatalf("adapters listed after loading chat: %q", got)
	}
	if code := ask("chat"); code != 200 {
		t.Fatalf("request for the loaded chat: %d", code)
	}
	for _, c := range []struct{ path, body string }{
		{"/v1/load_lora_adapter", `{"lora_name":"chat","lora_path":"/adapters/chat"}`},
		{"/v1/load_lora_adapter", `{"lora_name":"` + DefaultModel + `","lora_path":"/x"}`},
		{"/v1/load_lora_adapter", `{"lora_name":"poetry"}`},
		{"/v1/load_lora_adapter", `{"lora_name":`},
	} {
		if code, body := call(c.path, c.body); code != 400 || !strings.Contains(body, "BadRequestError") {
			t.Errorf("%s %s: %d %s, want 400 BadRequestError", c.path, c.body, code, body)
		}
	}
	if code, body := call("/v1/unload_lora_adapter", `{"lora_name":"sql"}`); code != 200 || !strings.Contains(body, "'sql' removed") {
		t.Fatalf("unload sql: %d %s", code, body)
	}
	if got := listed(); !slices.Equal(got, []string{"chat"}) {
		t.Fatalf("adapters listed after unloading sql: %q", got)
	}
	if code := ask("sql"); code != 404 {
		t.Fatalf("request for the unloaded sql: %d, want 404", code)
	}
	if code, body := call("/v1/unload_lora_adapter", `{"lora_name":"sql"}`); code != 404 || !strings.Contains(body, "NotFoundError") {
		t.Fatalf("unload sql again: %d %s, want 404 NotFoundError", code, body)
	}
	if f := scrape(t, ts)["vllm:lora_requests_info"]; f == nil || label(f.Metric[0], "max_lora") != "1" {
		t.Fatalf("vllm:lora_requests_info after the changes: %v", f)
	}

	fixed := start(t, func(o *Options) { o.ServedLoRAs = []string{"sql"} })
	resp := post(t, fixed.url+"/v1/load_lora_adapter", `{"lora_name":"chat","lora_path":"/adapters/chat"}`)
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("load without RuntimeLoRA: %d, want 404 (no such route)", resp.StatusCode)
	}
}
