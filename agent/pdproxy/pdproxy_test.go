package pdproxy

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/llmrouter/llmrouter/internal/servetest"
	"github.com/llmrouter/llmrouter/sim/engine"
	"github.com/llmrouter/llmrouter/sim/enginesim"
)

func testEngine() engine.Config {
	c := engine.DefaultConfig()
	c.StepBase = 2 * time.Millisecond
	c.PrefillPerToken = 10 * time.Microsecond
	c.NumBlocks = 4000
	return c
}

type sim struct {
	*enginesim.Server
	addr string
	stop func() error // ends Serve and waits for it
}

// startSim runs an enginesim until the test ends (or stop).
func startSim(t *testing.T, mod func(*enginesim.Options)) *sim {
	t.Helper()
	o := enginesim.Options{Engine: testEngine(), DefaultMaxTokens: 8, Seed: 1, ShutdownGrace: -1}
	if mod != nil {
		mod(&o)
	}
	s, err := enginesim.New(o)
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := servetest.Loopback(t, s)
	return &sim{Server: s, addr: addr, stop: stop}
}

type harness struct {
	p   *Proxy
	reg *prometheus.Registry
	url string
}

func startProxy(t *testing.T, engineAddr, kind string, fleet map[string]int32, mod func(*Options)) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	o := Options{EngineURL: "http://" + engineAddr, Engine: func() string { return kind }, Registerer: reg, PrefillTimeout: 2 * time.Second}
	if mod != nil {
		mod(&o)
	}
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	p.SetFleet(fleet)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return &harness{p: p, reg: reg, url: srv.URL}
}

func (h *harness) count(vec string, label string) float64 {
	c := h.p.m.fallbacks.WithLabelValues(label)
	if vec == "requests" {
		c = h.p.m.requests.WithLabelValues(label)
	}
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func samples(h prometheus.Histogram) uint64 {
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		panic(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func pdCount(t *testing.T, addr, side string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var v float64
		if line := sc.Text(); strings.HasPrefix(line, `enginesim_pd_requests_total{side="`+side+`"}`) {
			if err := json.Unmarshal([]byte(strings.Fields(line)[1]), &v); err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("%s: no enginesim_pd_requests_total side=%s", addr, side)
	return 0
}

// chat posts a streaming chat through the proxy, naming prefiller when set,
// and returns the status and the whole body.
func chat(t *testing.T, url, prefiller, bootstrap string, tokens int) (int, string) {
	t.Helper()
	body := `{"messages":[{"role":"user","content":"` + strings.Repeat("word", 300) + `"}],"max_tokens":` + itoa(tokens) + `,"stream":true}`
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if prefiller != "" {
		req.Header.Set(HeaderPrefiller, prefiller)
	}
	if bootstrap != "" {
		req.Header.Set(HeaderPrefillerBootstrap, bootstrap)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// intact: a whole SSE chat stream with n content tokens.
func intact(t *testing.T, code int, body string, n int) {
	t.Helper()
	if code != 200 || !strings.HasSuffix(body, "data: [DONE]\n\n") || strings.Count(body, `"content":"`) != n+2 {
		t.Fatalf("stream not intact: %d %q", code, body)
	}
}

// Without the header every path reaches the engine as is: the API, the
// probes, SSE streams, WebSocket upgrades, and a client leaving mid-stream
// aborts the engine's request.
func TestPassThrough(t *testing.T) {
	eng := startSim(t, nil)
	h := startProxy(t, eng.addr, "vllm", nil, nil)
	for _, path := range []string{"/v1/models", "/metrics", "/health", "/version"} {
		direct, _ := http.Get("http://" + eng.addr + path)
		via, err := http.Get(h.url + path)
		if err != nil || via.StatusCode != direct.StatusCode || via.Header.Get("Content-Type") != direct.Header.Get("Content-Type") {
			t.Fatalf("GET %s via proxy: %v %v, direct %d", path, err, via, direct.StatusCode)
		}
		direct.Body.Close()
		via.Body.Close()
	}
	code, body := chat(t, h.url, "", "", 5)
	intact(t, code, body, 5)
	if h.count("requests", pathLocal) != 1 || h.count("requests", pathDisaggregated) != 0 {
		t.Fatal("a request without the header not counted local")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, strings.Replace(h.url, "http", "ws", 1)+"/v1/realtime", nil)
	if err != nil {
		t.Fatalf("WebSocket through the proxy: %v", err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"id":"a","prompt":"hi","max_tokens":2}`)); err != nil {
		t.Fatal(err)
	}
	var types []string
	for len(types) == 0 || types[len(types)-1] != "done" {
		_, msg, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("WebSocket read after %v: %v", types, err)
		}
		var m struct{ Type string }
		_ = json.Unmarshal(msg, &m)
		types = append(types, m.Type)
	}
	c.Close(websocket.StatusNormalClosure, "")

	// Cancellation: leave a long stream after its first bytes.
	rctx, rcancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(rctx, http.MethodPost, h.url+"/v1/completions", strings.NewReader(`{"prompt":"x","max_tokens":30000,"stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := resp.Body.Read(make([]byte, 16)); err != nil {
		t.Fatal(err)
	}
	rcancel()
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(metricsText(t, eng.addr), `vllm:request_success_total{engine="0",finished_reason="abort",model_name="`+enginesim.DefaultModel+`"} 1`) {
		if time.Now().After(deadline) {
			t.Fatalf("the engine did not abort the request the client left:\n%s", metricsText(t, eng.addr))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func metricsText(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// vLLM: the prefill instance computes the prompt, the local decode engine
// continues from its KV cache, the stream arrives intact.
func TestVLLMDisaggregates(t *testing.T) {
	pre := startSim(t, func(o *enginesim.Options) { o.Role = enginesim.RolePrefill })
	dec := startSim(t, func(o *enginesim.Options) {
		o.Role, o.KVTransferPerBlock = enginesim.RoleDecode, 5*time.Microsecond
	})
	h := startProxy(t, dec.addr, "vllm", map[string]int32{pre.addr: 0}, nil)
	for i := 0; i < 3; i++ {
		code, body := chat(t, h.url, pre.addr, "", 6)
		intact(t, code, body, 6)
	}
	if pdCount(t, pre.addr, "prefill") != 3 || pdCount(t, dec.addr, "decode") != 3 {
		t.Fatalf("engines saw prefill %v, decode %v; want 3 each", pdCount(t, pre.addr, "prefill"), pdCount(t, dec.addr, "decode"))
	}
	if h.count("requests", pathDisaggregated) != 3 || samples(h.p.m.prefill) != 3 || samples(h.p.m.transfer) != 3 {
		t.Fatal("disaggregated requests not counted")
	}
	if n := h.count("requests", pathLocal); n != 0 {
		t.Fatalf("%v local requests", n)
	}
}

// A header naming a host outside the fleet is never followed; a prefill
// instance that is down or too slow, or a decode that refuses the transfer,
// falls back to a local prefill the client does not notice.
func TestFallbacks(t *testing.T) {
	dec := startSim(t, func(o *enginesim.Options) { o.Role = enginesim.RoleDecode })
	var strangerHits, slowHits atomic.Int64
	stranger := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { strangerHits.Add(1) }))
	defer stranger.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		slowHits.Add(1)
		// Read the body, so the server notices the proxy hanging up.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	defer slow.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Answers, but with parameters the decode engine refuses.
		_, _ = io.WriteString(w, `{"kv_transfer_params":{"do_remote_prefill":true}}`)
	}))
	defer bad.Close()
	// Nothing listens there; outside the ephemeral range, no other test's
	// :0 listener (or the proxy's own dial) can take it meanwhile.
	deadAddr := servetest.FreeAddr(t)
	host := func(u string) string { return strings.TrimPrefix(u, "http://") }
	h := startProxy(t, dec.addr, "vllm", map[string]int32{deadAddr: 0, host(slow.URL): 0, host(bad.URL): 0},
		func(o *Options) { o.PrefillTimeout = 200 * time.Millisecond })

	for _, c := range []struct{ prefiller, reason string }{
		{host(stranger.URL), reasonUnknownPrefiller},
		{deadAddr, reasonPrefillError},
		{host(slow.URL), reasonPrefillTimeout},
		{host(bad.URL), reasonDecodeError},
	} {
		code, body := chat(t, h.url, c.prefiller, "", 4)
		intact(t, code, body, 4)
		if h.count("fallbacks", c.reason) != 1 {
			t.Fatalf("prefiller %s: fallback %s not counted once", c.prefiller, c.reason)
		}
	}
	if strangerHits.Load() != 0 || slowHits.Load() != 1 {
		t.Fatalf("stranger hit %d times (want 0), slow %d (want 1)", strangerHits.Load(), slowHits.Load())
	}
	if h.count("requests", pathLocal) != 4 || h.count("requests", pathDisaggregated) != 0 {
		t.Fatal("fallbacks not counted as local requests")
	}
	// An engine that does not disaggregate is served locally.
	other := startProxy(t, dec.addr, "tgi", map[string]int32{deadAddr: 0}, nil)
	code, body := chat(t, other.url, deadAddr, "", 2)
	intact(t, code, body, 2)
	if other.count("fallbacks", reasonEngine) != 1 {
		t.Fatal("non-disaggregating engine not counted")
	}
}

// The configured API key goes to the prefill instance in place of the
// client's credentials.
func TestAPIKeyToPrefill(t *testing.T) {
	dec := startSim(t, func(o *enginesim.Options) { o.Role = enginesim.RoleDecode })
	pre := startSim(t, func(o *enginesim.Options) { o.Role = enginesim.RolePrefill })
	var auth atomic.Value
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth.Store(r.Header.Get("Authorization"))
		r.URL.Scheme, r.URL.Host, r.RequestURI = "http", pre.addr, ""
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	defer front.Close()
	addr := strings.TrimPrefix(front.URL, "http://")
	h := startProxy(t, dec.addr, "vllm", map[string]int32{addr: 0}, func(o *Options) { o.APIKey = "k3y" })
	code, body := chat(t, h.url, addr, "", 3)
	intact(t, code, body, 3)
	if got, _ := auth.Load().(string); got != "Bearer k3y" || h.count("requests", pathDisaggregated) != 1 {
		t.Fatalf("prefill saw Authorization %q; disaggregated %v", got, h.count("requests", pathDisaggregated))
	}
}

// SGLang: bootstrap fields go to both servers at once; the decode server
// waits on the prefill's room. A fleet entry without a bootstrap port, or a
// prefill server killed, falls back.
func TestSGLangDisaggregates(t *testing.T) {
	boot, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bootPort := int32(boot.Addr().(*net.TCPAddr).Port)
	pre := startSim(t, func(o *enginesim.Options) {
		o.Role, o.API, o.Bootstrap = enginesim.RolePrefill, enginesim.APISGLang, boot
	})
	dec := startSim(t, func(o *enginesim.Options) {
		o.Role, o.API, o.KVTransferPerBlock = enginesim.RoleDecode, enginesim.APISGLang, 5*time.Microsecond
	})
	h := startProxy(t, dec.addr, "sglang", map[string]int32{pre.addr: bootPort, "127.0.0.1:1": 0}, nil)
	for i := 0; i < 3; i++ {
		code, body := chat(t, h.url, pre.addr, itoa(int(bootPort)), 5)
		intact(t, code, body, 5)
	}
	if pdCount(t, pre.addr, "prefill") != 3 || pdCount(t, dec.addr, "decode") != 3 || h.count("requests", pathDisaggregated) != 3 {
		t.Fatalf("prefill %v decode %v disaggregated %v; want 3 each", pdCount(t, pre.addr, "prefill"), pdCount(t, dec.addr, "decode"), h.count("requests", pathDisaggregated))
	}
	code, body := chat(t, h.url, "127.0.0.1:1", "", 2)
	intact(t, code, body, 2)
	if h.count("fallbacks", reasonNoBootstrapPort) != 1 {
		t.Fatal("missing bootstrap port not counted")
	}
	_ = pre.stop()
	code, body = chat(t, h.url, pre.addr, itoa(int(bootPort)), 4)
	intact(t, code, body, 4)
	if h.count("fallbacks", reasonPrefillError)+h.count("fallbacks", reasonDecodeError) != 1 {
		t.Fatal("dead prefill server's fallback not counted")
	}
}
