package standin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/llmrouter/llmrouter/bootstrap"
	"github.com/llmrouter/llmrouter/envoy"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/xds"
)

// The shipped bootstrap routes only the engine API to the fleet: an engine's
// /metrics (or any other path, a /v1/models/{id} with a dot segment, plain
// or escaped, included) gets Envoy's own 404 and never reaches an engine,
// /v1/models and /v1/models/{id} do (the path unchanged, whatever its query
// holds); and a client's
// x-llmrouter-* headers never get past the first filter.
func TestShippedBootstrapRoutesOnlyTheAPI(t *testing.T) {
	var mu sync.Mutex
	var hits []*http.Request
	engine := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits = append(hits, r)
		mu.Unlock()
		w.Header().Set("content-type", "application/json")
		io.WriteString(w, `{"object":"list","data":[{"id":"m","object":"model"}]}`)
	}))
	defer engine.Close()

	cfg := config.Default()
	xs, xdsAddr := serveXDS(t, cfg, prometheus.NewRegistry())
	xs.SetEndpoints([]xds.Endpoint{{ID: "e", Address: strings.TrimPrefix(engine.URL, "http://")}})

	// No gateway: the ext_proc filters fail open (failure_mode_allow), so
	// what reaches the engine is what Envoy's own routing lets through.
	s := startRendering(t, bootstrap.DefaultOptions(), xdsAddr)
	waitFor(t, func() bool { return len(s.Endpoints(cfg.Scheduler.ClusterName)) == 1 })

	client := &http.Client{Timeout: 10 * time.Second}
	get := func(p string, hdr ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.Addr()+p, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	for _, p := range []string{"/metrics", "/health", "/v1/models/../../metrics", "/v1/modelsx", "/v2/models", "/", "/V1/models",
		"/v1/models/x/../../../metrics", "/v1/models/%2e%2e/%2E%2E/metrics", "/v1/models/..%2f..%2fmetrics",
		"/v1/models/x%2F..%2F..%2F..%2Fmetrics", "/v1/models/%5c..%5cmetrics", "/v1/models/./x",
		// A query neither hides a bad path nor counts as one.
		"/v1/models/../../metrics?x=1", "/v1/models/x/..%2f..%2fmetrics?id=m", "/v1/models/a\\..\\metrics?"} {
		code, body := get(p)
		if code != 404 || body != envoy.NotFoundBody {
			t.Errorf("GET %s: %d %q, want Envoy's 404", p, code, body)
		}
	}
	mu.Lock()
	if len(hits) != 0 {
		t.Fatalf("%d requests outside the API reached the engine, first %s", len(hits), hits[0].URL)
	}
	mu.Unlock()

	code, body := get("/v1/models?limit=1", "x-llmrouter-priority", "9", "x-llmrouter-anything", "x",
		"x-prefiller-host-port", "10.0.0.9:8000", "x-keep", "yes")
	if code != 200 || !strings.Contains(body, `"object":"list"`) {
		t.Fatalf("GET /v1/models: %d %q", code, body)
	}
	// The path alone decides: a query holding what a path may not (a dot
	// segment, escaped or not, a backslash) is the engine's to read.
	queries := []string{"/v1/models/m?next=/../x", "/v1/models/m?x=%2e%2E", "/v1/models/m?a=%2F..", "/v1/models/m?p=a\\b%5C"}
	for _, p := range append([]string{"/v1/models/m", "/v1/models/meta-llama/Llama-3.1-8B", "/v1/models/meta-llama%2FLlama-3.1-8B?x=1",
		"/v1/models/base:sql"}, queries...) {
		if code, body := get(p); code != 200 {
			t.Errorf("GET %s: %d %q, want the engine's answer", p, code, body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var paths []string
	for _, h := range hits {
		paths = append(paths, h.RequestURI)
	}
	if strings.Join(paths, " ") != "/v1/models?limit=1 /v1/models/m /v1/models/meta-llama/Llama-3.1-8B /v1/models/meta-llama%2FLlama-3.1-8B?x=1 /v1/models/base:sql "+
		strings.Join(queries, " ") {
		t.Fatalf("engine hits: %q", paths)
	}
	h := hits[0].Header
	if h.Get("x-llmrouter-priority") != "" || h.Get("x-llmrouter-anything") != "" || h.Get("x-prefiller-host-port") != "" ||
		h.Get("x-keep") != "yes" {
		t.Fatalf("client x-llmrouter-* or x-prefiller-* headers reached the engine (or others were lost): %v", h)
	}
}
