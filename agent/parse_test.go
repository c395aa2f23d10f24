package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseOpenMetrics(t *testing.T) {
	// What prometheus_client serves with Accept: application/openmetrics-text:
	// counters typed without _total, *_created series, UNIT and info types,
	// exemplars, float timestamps and the closing # EOF.
	body := `# HELP vllm:prompt_tokens Number of prefill tokens processed.
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{model_name="m"} 148.0 1700000000.5
vllm:prompt_tokens_created{model_name="m"} 1.7e9
# TYPE vllm:num_requests_running gauge
# UNIT vllm:num_requests_running requests
vllm:num_requests_running{model_name="m",note="has } and \" inside"} 3.0
# TYPE vllm:cache_config info
vllm:cache_config_info{block_size="32",num_gpu_blocks="500"} 1.0
# TYPE vllm:thing unknown
vllm:thing 7
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="m"} 1.0 # {trace_id="abc"} 0.5 1700000000.1
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 2.0
vllm:e2e_request_latency_seconds_count{model_name="m"} 2.0
vllm:e2e_request_latency_seconds_sum{model_name="m"} 3.5
vllm:e2e_request_latency_seconds_created{model_name="m"} 1.7e9
# EOF
`
	m, err := Parse([]byte(body), "application/openmetrics-text; version=1.0.0; charset=utf-8")
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if v, _ := m.Sum("vllm:prompt_tokens_total", nil); v != 148 {
		t.Errorf("prompt_tokens_total = %v, want 148", v)
	}
	if v, _ := m.Sum("vllm:num_requests_running", nil); v != 3 {
		t.Errorf("running = %v, want 3", v)
	}
	if v, _ := m.Sum("vllm:thing", nil); v != 7 {
		t.Errorf("unknown-typed = %v, want 7", v)
	}
	if v, _ := m.Sum("vllm:e2e_request_latency_seconds_sum", nil); v != 3.5 {
		t.Errorf("histogram sum = %v, want 3.5", v)
	}
	for _, n := range m.Names() {
		if strings.HasSuffix(n, "_created") {
			t.Errorf("%s kept", n)
		}
	}
	a, _ := AdapterFor("vllm")
	s := a.Extract(m, nil)
	if s.BlockSize == nil || *s.BlockSize != 32 || *s.NumGPUBlocks != 500 {
		t.Errorf("capacity from the info metric = %s x %s", show(s.NumGPUBlocks), show(s.BlockSize))
	}
	// The same body is recognised without a content type by its # EOF.
	if _, err := Parse([]byte(body), ""); err != nil {
		t.Errorf("parse without content type: %v", err)
	}
}

func TestParseTolerance(t *testing.T) {
	// No trailing newline, CRLF-free text with comments and blank lines.
	m, err := Parse([]byte("# a comment\n\nfoo 1\nbar{x=\"y\"} NaN\nbar{x=\"z\"} 2"), "")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := m.Sum("bar", nil); !ok || v != 2 {
		t.Errorf("Sum skips NaN: got %v %v, want 2", v, ok)
	}
	if v, _ := m.Sum("foo", nil); v != 1 {
		t.Errorf("foo = %v", v)
	}
}

func TestParseRejects(t *testing.T) {
	cases := map[string]string{
		"json":       `{"running": 3}`,
		"html":       "<html><body>Not Found</body></html>\n",
		"prose":      "engine is warming up\n",
		"bad value":  "foo{a=\"b\"} three\n",
		"only notes": "# just a comment\n\n",
		"empty":      "",
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(body), "")
			if err == nil {
				t.Fatal("accepted")
			}
			if name == "only notes" || name == "empty" {
				if !errors.Is(err, ErrNoSamples) {
					t.Errorf("err = %v, want ErrNoSamples", err)
				}
			}
		})
	}
}

func TestInspectKeysAndValues(t *testing.T) {
	out, err := InspectJSON(readFixture(t, "vllm-v0-aibrix-docs.txt"), "auto")
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "engine": "vllm",
  "running": 0,
  "waiting": 0,
  "kv_cache_usage": 0,
  "prompt_tokens_total": 148,
  "generation_tokens_total": 955,
  "block_size": 16,
  "num_gpu_blocks": 81767,
  "models": [
    "Qwen/Qwen2.5-Coder-1.5B-Instruct"
  ]
}
`
	if string(out) != want {
		t.Errorf("inspect output:\n%s\nwant:\n%s", out, want)
	}
	// Unknown values are null, and the key set is the same.
	out, err = InspectJSON(readFixture(t, "llamacpp-b5xxx-pr13196.txt"), "")
	if err != nil {
		t.Fatal(err)
	}
	want = `{
  "engine": "llamacpp",
  "running": null,
  "waiting": null,
  "kv_cache_usage": null,
  "prompt_tokens_total": 143,
  "generation_tokens_total": 673,
  "block_size": null,
  "num_gpu_blocks": null,
  "models": null
}
`
	if string(out) != want {
		t.Errorf("inspect output:\n%s\nwant:\n%s", out, want)
	}
}

func TestInspectErrors(t *testing.T) {
	_, err := InspectJSON([]byte("<html>oops</html>\n"), "auto")
	if err == nil || !strings.Contains(err.Error(), "not Prometheus text") {
		t.Errorf("html: err = %v", err)
	}
	_, err = InspectJSON(readFixture(t, "dynamo-runtime-system_metrics-readme.txt"), "auto")
	if err == nil || !strings.Contains(err.Error(), "no engine matches") || !strings.Contains(err.Error(), "dynamo_component_") {
		t.Errorf("dynamo: err = %v", err)
	}
	_, err = InspectJSON(readFixture(t, "vllm-v0-aibrix-docs.txt"), "vllmm")
	if err == nil || !strings.Contains(err.Error(), "accepted: vllm, sglang") {
		t.Errorf("bad engine: err = %v", err)
	}
	// A stated engine wins over detection: the vLLM dump read as SGLang has
	// no SGLang numbers.
	r, err := Inspect(readFixture(t, "vllm-v0-aibrix-docs.txt"), "sglang")
	if err != nil || r.Engine != "sglang" || r.Running != nil {
		t.Errorf("stated engine: %+v, %v", r, err)
	}
}

// fuzzSeeds adds every fixture and a few OpenMetrics shapes to a corpus.
func fuzzSeeds(f *testing.F, add func([]byte)) {
	files, _ := filepath.Glob("testdata/*.txt")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err == nil {
			add(b)
		}
	}
	add([]byte("# TYPE a counter\na_total{x=\"}\"} 1 # {t=\"1\"} 2 3.5\na_created 1\n# EOF\n"))
	add([]byte("# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 2\ns_count 3\n"))
	add([]byte("{\"x\",y=\"1\"} 1\n"))
}

// FuzzParseAndExtract feeds arbitrary scrapes through the parser, detection
// and every adapter: none may panic, and whatever is reported must be sane.
func FuzzParseAndExtract(f *testing.F) {
	fuzzSeeds(f, func(b []byte) { f.Add(b, false) })
	fuzzSeeds(f, func(b []byte) { f.Add(b, true) })
	mm, err := ParseMetricMap(map[string]string{"running": `a_total{x="}"}`, "kv_cache_usage": "vllm:kv_cache_usage_perc"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, openMetrics bool) {
		ct := ""
		if openMetrics {
			ct = "application/openmetrics-text; version=1.0.0"
		}
		m, err := Parse(body, ct)
		if err != nil {
			return
		}
		Detect(m)
		_ = mm.Missing(m)
		for _, a := range Adapters {
			for _, override := range []MetricMap{nil, mm} {
				s := a.Extract(m, override)
				if s.KVCacheUsage != nil && (*s.KVCacheUsage < 0 || *s.KVCacheUsage > 1) {
					t.Fatalf("%s: kv usage %v outside 0..1", a.Name, *s.KVCacheUsage)
				}
				if s.BlockSize != nil && *s.BlockSize <= 0 {
					t.Fatalf("%s: block size %d", a.Name, *s.BlockSize)
				}
				if s.MaxLoRA != nil && *s.MaxLoRA < 0 {
					t.Fatalf("%s: max_lora %d", a.Name, *s.MaxLoRA)
				}
				for _, list := range [][]string{s.LoRAAdapters, s.LoRAWaiting} {
					for _, l := range list {
						if l == "" || strings.Contains(l, ",") || strings.TrimSpace(l) != l {
							t.Fatalf("%s: LoRA adapter name %q", a.Name, l)
						}
					}
				}
			}
		}
	})
}

// FuzzInspect covers the offline command's whole path.
func FuzzInspect(f *testing.F) {
	fuzzSeeds(f, func(b []byte) { f.Add(b, "auto") })
	f.Add([]byte("vllm:num_requests_running 1\n"), "vllm")
	f.Fuzz(func(t *testing.T, body []byte, engine string) {
		out, err := InspectJSON(body, engine)
		if err == nil && len(out) == 0 {
			t.Fatal("no output and no error")
		}
	})
}

// FuzzMetricMapSelector checks that any agent.metric_map value is either
// rejected or round-trips into a usable selector.
func FuzzMetricMapSelector(f *testing.F) {
	for _, s := range []string{"x", `x{a="b"}`, `x{a="b",c="d\"e"}`, "x{", "a b", `{"quoted.name"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		mm, err := ParseMetricMap(map[string]string{"running": expr})
		if err != nil {
			return
		}
		sel := mm["running"]
		if sel.name == "" {
			t.Fatalf("%q accepted with an empty name", expr)
		}
		// A selector must match a scrape holding exactly its own series.
		again, err := parseSelector(sel.String())
		if err != nil {
			return // names outside the legacy charset print unquoted
		}
		if again.name != sel.name {
			t.Fatalf("round trip %q → %q → %q", expr, sel.String(), again.name)
		}
	})
}
