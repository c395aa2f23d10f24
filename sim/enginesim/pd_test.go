package enginesim

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/agent"
	"github.com/llmrouter/llmrouter/internal/servetest"
)

func pdCount(t *testing.T, ts *testServer, side string) float64 {
	t.Helper()
	f := scrape(t, ts)["enginesim_pd_requests_total"]
	if f == nil {
		t.Fatal("enginesim_pd_requests_total missing")
	}
	for _, m := range f.Metric {
		if label(m, "side") == side {
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no side=%s series", side)
	return 0
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The vLLM NixlConnector exchange: the prefill instance answers a
// do_remote_decode request with kv_transfer_params naming its blocks; the
// decode instance given them computes only the last prompt token. Each side
// refuses the other's half.
func TestVLLMDisaggregatedExchange(t *testing.T) {
	pre := start(t, func(o *Options) { o.Role = RolePrefill })
	dec := start(t, func(o *Options) { o.Role = RoleDecode; o.KVTransferPerBlock = 10 * time.Microsecond })
	prompt := filler(400) // 1600 chars: 400 tokens, 25 blocks
	resp := post(t, pre.url+"/v1/completions", `{"prompt":"`+prompt+`","max_tokens":1,"stream":false,"kv_transfer_params":{"do_remote_decode":true,"do_remote_prefill":false}}`)
	body := readAll(t, resp)
	var out struct {
		KV json.RawMessage `json:"kv_transfer_params"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("prefill answer %d %s: %v", resp.StatusCode, body, err)
	}
	var kv kvTransferParams
	if err := json.Unmarshal(out.KV, &kv); err != nil || !kv.DoRemotePrefill || kv.RemoteEngineID == nil || *kv.RemoteEngineID == "" ||
		len(kv.RemoteBlockIDs) != 25 || kv.RemoteHost == nil || *kv.RemoteHost != "127.0.0.1" || kv.RemotePort == nil || *kv.RemotePort == 0 {
		t.Fatalf("kv_transfer_params = %s", out.KV)
	}
	resp = post(t, dec.url+"/v1/completions", `{"prompt":"`+prompt+`","max_tokens":5,"stream":true,"kv_transfer_params":`+string(out.KV)+`}`)
	if body := readAll(t, resp); resp.StatusCode != 200 || !strings.HasSuffix(body, "data: [DONE]\n\n") || strings.Count(body, `"text"`) != 6 {
		t.Fatalf("decode answer %d: %s", resp.StatusCode, body)
	}
	if got := dec.snapshot().stats.TransferredTokens; got != 399 {
		t.Fatalf("decode transferred %d tokens, want 399 (all but the last prompt token)", got)
	}
	if pdCount(t, pre, RolePrefill) != 1 || pdCount(t, dec, RoleDecode) != 1 {
		t.Fatal("pd counters did not count the exchange")
	}
	// A request without the field is served locally by either.
	if resp := post(t, dec.url+"/v1/completions", `{"prompt":"hi","max_tokens":2}`); readAll(t, resp) == "" || resp.StatusCode != 200 {
		t.Fatalf("plain request on decode: %d", resp.StatusCode)
	}
	for _, c := range []struct{ url, kv string }{
		{dec.url, `{"do_remote_decode":true}`},
		{pre.url, string(out.KV)},
		{dec.url, `{"do_remote_prefill":true}`},
	} {
		resp := post(t, c.url+"/v1/completions", `{"prompt":"hi","max_tokens":2,"kv_transfer_params":`+c.kv+`}`)
		if body := readAll(t, resp); resp.StatusCode != 400 || !strings.Contains(body, "kv_transfer_params") {
			t.Fatalf("%s with %s: %d %s, want 400 naming kv_transfer_params", c.url, c.kv, resp.StatusCode, body)
		}
	}
}

// SGLang: the router sends the request to the prefill and decode servers at
// once with the bootstrap fields; the decode server waits for the room on
// the prefill's bootstrap server, and fails (500) when it cannot be reached.
// /metrics carries SGLang's names, so the agent detects SGLang and the role.
func TestSGLangDisaggregatedExchange(t *testing.T) {
	boot, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bootPort := boot.Addr().(*net.TCPAddr).Port
	pre := start(t, func(o *Options) { o.Role, o.API, o.Bootstrap = RolePrefill, APISGLang, boot })
	dec := start(t, func(o *Options) { o.Role, o.API = RoleDecode, APISGLang })
	prompt := filler(400)
	body := func(port int) string {
		return `{"messages":[{"role":"user","content":"` + prompt + `"}],"max_tokens":4,"stream":true,"bootstrap_host":"127.0.0.1","bootstrap_port":` +
			itoa(port) + `,"bootstrap_room":12345}`
	}
	var wg sync.WaitGroup
	var preStatus int
	wg.Add(1)
	go func() {
		defer wg.Done()
		// The decode request goes first: it must wait for the room.
		time.Sleep(20 * time.Millisecond)
		resp, err := http.Post(pre.url+"/v1/chat/completions", "application/json", strings.NewReader(body(bootPort)))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			preStatus = resp.StatusCode
		}
	}()
	resp := post(t, dec.url+"/v1/chat/completions", body(bootPort))
	got := readAll(t, resp)
	wg.Wait()
	if resp.StatusCode != 200 || preStatus != 200 || !strings.HasSuffix(got, "data: [DONE]\n\n") {
		t.Fatalf("decode %d (%s), prefill %d", resp.StatusCode, got, preStatus)
	}
	if n := dec.snapshot().stats.TransferredTokens; n == 0 || pdCount(t, pre, RolePrefill) != 1 || pdCount(t, dec, RoleDecode) != 1 {
		t.Fatalf("transferred %d tokens; pd counters prefill %v decode %v", n, pdCount(t, pre, RolePrefill), pdCount(t, dec, RoleDecode))
	}
	// A dead bootstrap server fails the decode request at once.
	// A port nothing listens on, outside the ephemeral range that other
	// tests' :0 listeners (or the dial itself) could meanwhile take.
	_, port, _ := net.SplitHostPort(servetest.FreeAddr(t))
	deadPort, _ := strconv.Atoi(port)
	resp = post(t, dec.url+"/v1/chat/completions", body(deadPort))
	if got := readAll(t, resp); resp.StatusCode != 500 || !strings.Contains(got, "KV transfer failed") {
		t.Fatalf("decode with a dead bootstrap server: %d %s", resp.StatusCode, got)
	}
	// The agent sees SGLang and the role.
	for _, c := range []struct {
		ts   *testServer
		role string
	}{{pre, "prefill"}, {dec, "decode"}} {
		r, err := http.Get(c.ts.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		raw := readAll(t, r)
		m, err := agent.Parse([]byte(raw), r.Header.Get("Content-Type"))
		if err != nil {
			t.Fatal(err)
		}
		if eng, ok := agent.Detect(m); !ok || eng != "sglang" {
			t.Fatalf("agent detects %q, %v; want sglang", eng, ok)
		}
		a, _ := agent.AdapterFor("sglang")
		if st := a.Extract(m, nil); st.Role != c.role || st.Running == nil || st.PromptTokensTotal == nil {
			t.Fatalf("agent stats from %s: role %q running %v prompt %v", c.role, st.Role, st.Running, st.PromptTokensTotal)
		}
		if strings.Contains(raw, "vllm:") {
			t.Fatal("an SGLang server exports vllm: series")
		}
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
