package enginesim

import (
	"io"
	"strings"
	"testing"
)

// TestSGLangAdapterSyntax: in sglang mode the simulator reads the adapter
// as SGLang does: "model": "base:adapter" (first colon, halves trimmed) or
// the older lora_path, the model's adapter winning; an adapter not loaded
// is 400, a base it does not serve 404. The vLLM simulator answers the
// base:adapter name 404, as vLLM does: it serves adapters by name alone.
func TestSGLangAdapterSyntax(t *testing.T) {
	sgl := start(t, func(o *Options) { o.API = APISGLang; o.ServedLoRAs = []string{"sql"} })
	vllm := start(t, func(o *Options) { o.ServedLoRAs = []string{"sql"} })
	ask := func(url, fields string) (int, string) {
		t.Helper()
		resp := post(t, url+"/v1/chat/completions", `{`+fields+`,"messages":[{"role":"user","content":"count the rows"}],"max_tokens":2}`)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct {
		fields string
		want   int
		says   string
	}{
		{`"model":"` + DefaultModel + `:sql"`, 200, ""},
		{`"model":" ` + DefaultModel + ` : sql "`, 200, ""},
		{`"model":"` + DefaultModel + `:"`, 200, ""}, // no adapter: the base model
		{`"model":"` + DefaultModel + `","lora_path":"sql"`, 200, ""},
		{`"model":"` + DefaultModel + `:sql","lora_path":"poetry"`, 200, ""}, // the model's adapter wins
		{`"model":"sql"`, 200, ""},
		{`"model":"` + DefaultModel + `:poetry"`, 400, "`poetry` is not loaded"},
		{`"model":"` + DefaultModel + `","lora_path":"poetry"`, 400, "`poetry` is not loaded"},
		{`"model":"` + DefaultModel + `","lora_path":7`, 400, "lora_path"},
		{`"model":"other:sql"`, 404, "other:sql"},
	} {
		if code, body := ask(sgl.url, c.fields); code != c.want || !strings.Contains(body, c.says) {
			t.Errorf("sglang, {%s}: %d %s; want %d saying %q", c.fields, code, body, c.want, c.says)
		}
	}
	if code, _ := ask(vllm.url, `"model":"`+DefaultModel+`:sql"`); code != 404 {
		t.Errorf("vllm, base:adapter: %d, want 404", code)
	}
	if code, _ := ask(vllm.url, `"model":"sql"`); code != 200 {
		t.Errorf("vllm, the adapter by name: %d, want 200", code)
	}
}
