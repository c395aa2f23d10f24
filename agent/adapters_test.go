package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// want is a fixture's expected unified values; nil means "unknown".
type want struct {
	engine                string
	running, waiting      *float64
	kv                    *float64
	prompt, gen           *float64
	blockSize, numBlocks  *int64
	models                []string
	lora, loraWaiting     []string
	maxLoRA               *int64
	genTPS, prefixHitRate *float64
	role                  string
}

// The expected numbers below were read off each fixture by hand.
var fixtureWants = map[string]want{
	"vllm-v0-aibrix-docs.txt": {
		// V0 names: gpu_cache_usage_perc; cache_config_info carries
		// block_size=16 and num_gpu_blocks=81767; lora_requests_info is
		// there with max_lora="0" (LoRA off) and empty running and
		// waiting adapter lists: known, and empty; gpu_prefix_cache_hit_rate
		// is -1 (no data), i.e. unknown.
		engine: "vllm", running: f64(0), waiting: f64(0), kv: f64(0),
		prompt: f64(148), gen: f64(955), blockSize: i64(16), numBlocks: i64(81767),
		models: []string{"Qwen/Qwen2.5-Coder-1.5B-Instruct"}, lora: []string{}, loraWaiting: []string{}, maxLoRA: i64(0),
	},
	"vllm-v1-0.10-prodstack617.txt": {
		// V1 names: kv_cache_usage_perc; the *_created series are
		// ignored; only prefix_cache_queries_total is present (no hits
		// counter under the new name), so the hit ratio stays unknown.
		engine: "vllm", kv: f64(9.75010481363281e-06),
		models: []string{"zai-org/GLM-4.5"},
	},
	"vllm-v1-0.10-pr22227-dp.txt": {
		// Only histogram buckets of two DP engines: vLLM by name, one model.
		engine: "vllm", models: []string{"/home/jovyan/qwen3-8b"},
	},
	"sglang-0.4-docs-production_metrics.txt": {
		engine: "sglang", running: f64(162), waiting: f64(2826), kv: f64(0.28),
		prompt: f64(8.128902e+06), gen: f64(7.557572e+06),
		models:        []string{"meta-llama/Llama-3.1-8B-Instruct"},
		genTPS:        f64(86.50814177726902),
		prefixHitRate: f64(0.007507552643049313),
	},
	"sglang-0.4.4-pr4412-engine_type.txt": {
		// engine_type="unified" is not a prefill/decode role.
		engine: "sglang", running: f64(0), kv: f64(0), genTPS: f64(0),
		models: []string{"/shared/public/models/Meta-Llama-3-8B-Instruct"},
	},
	"tgi-datadog-payload.txt": {
		// batch_current_size → running, queue_size → waiting, and the
		// input-length histogram's sum is the prompt token total; this
		// excerpt ends before tgi_request_generated_tokens.
		engine: "tgi", running: f64(0), waiting: f64(0), prompt: f64(662),
	},
	"triton-trtllm-23.11-tensorrtllm_backend-readme.txt": {
		// request_type active/waiting; kv_cache_block_type fraction,
		// tokens_per and max. Per-iteration token gauges are not totals.
		engine: "trtllm", running: f64(0), waiting: f64(1), kv: f64(0.4875),
		blockSize: i64(64), numBlocks: i64(6239), models: []string{"tensorrt_llm"},
	},
	"trtllm-serve-dev-pr5560-pytrtllm.txt": {
		engine: "trtllm", running: f64(1), waiting: f64(0),
		prompt: f64(201121), gen: f64(81896),
		models: []string{"deepseek-ai/DeepSeek-V3-0324"},
	},
	"llamacpp-b5xxx-pr13196.txt": {
		// This build has no requests_processing/deferred lines and no
		// kv_cache_usage_ratio any more: only the token counters.
		engine: "llamacpp", prompt: f64(143), gen: f64(673),
	},
}

func eqF(a, b *float64) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
func eqI(a, b *int64) bool   { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func show[T any](p *T) string {
	if p == nil {
		return "nil"
	}
	b, _ := json.Marshal(*p)
	return string(b)
}

func TestFixturesDetectAndMap(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			m, err := Parse(readFixture(t, name), "")
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			engine, ok := Detect(m)
			w, expected := fixtureWants[name]
			if !expected {
				if name != "dynamo-runtime-system_metrics-readme.txt" {
					t.Fatalf("fixture %s has no expectation: add one", name)
				}
				// Dynamo's runtime metrics describe the Dynamo component,
				// not an engine: nothing here says vLLM, SGLang or
				// TensorRT-LLM, so detection must not guess.
				if ok {
					t.Fatalf("Detect = %q, want no engine", engine)
				}
				return
			}
			if !ok || engine != w.engine {
				t.Fatalf("Detect = %q, %v; want %q", engine, ok, w.engine)
			}
			a, err := AdapterFor(engine)
			if err != nil {
				t.Fatal(err)
			}
			s := a.Extract(m, nil)
			checks := []struct {
				field    string
				ok       bool
				got, exp string
			}{
				{"running", eqF(s.Running, w.running), show(s.Running), show(w.running)},
				{"waiting", eqF(s.Waiting, w.waiting), show(s.Waiting), show(w.waiting)},
				{"kv_cache_usage", eqF(s.KVCacheUsage, w.kv), show(s.KVCacheUsage), show(w.kv)},
				{"prompt_tokens_total", eqF(s.PromptTokensTotal, w.prompt), show(s.PromptTokensTotal), show(w.prompt)},
				{"generation_tokens_total", eqF(s.GenerationTokensTotal, w.gen), show(s.GenerationTokensTotal), show(w.gen)},
				{"block_size", eqI(s.BlockSize, w.blockSize), show(s.BlockSize), show(w.blockSize)},
				{"num_gpu_blocks", eqI(s.NumGPUBlocks, w.numBlocks), show(s.NumGPUBlocks), show(w.numBlocks)},
				{"max_lora", eqI(s.MaxLoRA, w.maxLoRA), show(s.MaxLoRA), show(w.maxLoRA)},
				{"generation_tokens_per_second", eqF(s.GenerationTokensPerSecond, w.genTPS), show(s.GenerationTokensPerSecond), show(w.genTPS)},
				{"prefix_cache_hit_ratio", eqF(s.PrefixCacheHitRatio, w.prefixHitRate), show(s.PrefixCacheHitRatio), show(w.prefixHitRate)},
				{"role", s.Role == w.role, s.Role, w.role},
			}
			for _, c := range checks {
				if !c.ok {
					t.Errorf("%s = %s, want %s", c.field, c.got, c.exp)
				}
			}
			if !reflect.DeepEqual(s.Models, w.models) {
				t.Errorf("models = %#v, want %#v", s.Models, w.models)
			}
			if !reflect.DeepEqual(s.LoRAAdapters, w.lora) {
				t.Errorf("lora = %#v, want %#v", s.LoRAAdapters, w.lora)
			}
			if !reflect.DeepEqual(s.LoRAWaiting, w.loraWaiting) {
				t.Errorf("waiting lora = %#v, want %#v", s.LoRAWaiting, w.loraWaiting)
			}
		})
	}
}

func TestVLLMDataParallelSumsCountsAndMaxesUsage(t *testing.T) {
	body := `# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3
vllm:num_requests_running{engine="1",model_name="m"} 4
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 1
vllm:num_requests_waiting{engine="1",model_name="m"} 2
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.5
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 100
vllm:prompt_tokens_total{engine="1",model_name="m"} 50
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine="0",model_name="m"} 1.7e9
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="m"} 10
vllm:generation_tokens_total{engine="1",model_name="m"} 20
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",engine="0",num_gpu_blocks="1000"} 1
vllm:cache_config_info{block_size="16",engine="1",num_gpu_blocks="1200"} 1
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 300
vllm:prefix_cache_queries_total{engine="1",model_name="m"} 100
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 80
vllm:prefix_cache_hits_total{engine="1",model_name="m"} 20
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="4",running_lora_adapters="sql,chat",waiting_lora_adapters=""} 1.7e9
vllm:lora_requests_info{max_lora="4",running_lora_adapters="old",waiting_lora_adapters=""} 1.6e9
`
	m, err := Parse([]byte(body), "")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := AdapterFor("vllm")
	s := a.Extract(m, nil)
	if *s.Running != 7 || *s.Waiting != 3 || *s.KVCacheUsage != 0.5 {
		t.Errorf("running/waiting/kv = %v/%v/%v, want 7/3/0.5", *s.Running, *s.Waiting, *s.KVCacheUsage)
	}
	if *s.PromptTokensTotal != 150 || *s.GenerationTokensTotal != 30 {
		t.Errorf("tokens = %v/%v, want 150/30", *s.PromptTokensTotal, *s.GenerationTokensTotal)
	}
	if *s.BlockSize != 16 || *s.NumGPUBlocks != 2200 {
		t.Errorf("capacity = %d blocks of %d, want 2200 of 16", *s.NumGPUBlocks, *s.BlockSize)
	}
	if *s.PrefixCacheHitRatio != 0.25 {
		t.Errorf("prefix hit ratio = %v, want 100/400", *s.PrefixCacheHitRatio)
	}
	if !slices.Equal(s.LoRAAdapters, []string{"chat", "sql"}) {
		t.Errorf("lora = %v, want the newest series' chat, sql", s.LoRAAdapters)
	}
	if m.Has("vllm:prompt_tokens_created") {
		t.Error("*_created series must be dropped")
	}
}

// TestVLLMLoRARequestsInfo reads lora_requests_info as a running vLLM leaves
// it: the real dump's series (written when no adapter had run: max_lora 0,
// both lists empty) followed by those vLLM adds as adapters come and go, one
// per change of the labels, each valued at the time of the change. The
// current adapters are the newest series naming any; max_lora is the newest
// series'; a max_lora that is not a whole number >= 0 is unknown and loses
// neither list.
func TestVLLMLoRARequestsInfo(t *testing.T) {
	dump := string(readFixture(t, "vllm-v0-aibrix-docs.txt"))
	const real = `vllm:lora_requests_info{max_lora="0",running_lora_adapters="",waiting_lora_adapters=""} 1.7382173358407154e+09` + "\n"
	if !strings.Contains(dump, real) {
		t.Fatalf("the fixture no longer holds %q", real)
	}
	series := func(maxLoRA, running, waiting string, at float64) string {
		return fmt.Sprintf("vllm:lora_requests_info{max_lora=%q,running_lora_adapters=%q,waiting_lora_adapters=%q} %v\n",
			maxLoRA, running, waiting, at)
	}
	const t0 = 1.7382173358407154e+09 // the dump's series
	cases := []struct {
		name             string
		added            string // series after the dump's
		drop             bool   // the dump without its series
		running, waiting []string
		maxLoRA          *int64
	}{
		{name: "the dump as it is", running: []string{}, waiting: []string{}, maxLoRA: i64(0)},
		{name: "no series", drop: true},
		{name: "the newest series naming adapters wins, whatever the order",
			added:   series("4", "old", "", t0+1) + series("4", "sql,chat", "tools", t0+3) + series("4", "mid", "", t0+2),
			running: []string{"chat", "sql"}, waiting: []string{"tools"}, maxLoRA: i64(4)},
		{name: "idle again: the last adapters run are still held",
			added:   series("4", "sql", "chat", t0+1) + series("4", "", "", t0+2),
			running: []string{"sql"}, waiting: []string{"chat"}, maxLoRA: i64(4)},
		{name: "only waiting",
			added:   series("2", "", "sql", t0+1),
			running: []string{}, waiting: []string{"sql"}, maxLoRA: i64(2)},
		{name: "blanks and repeats",
			added:   series("3", " b, a,,b ", " , ", t0+1),
			running: []string{"a", "b"}, waiting: []string{}, maxLoRA: i64(3)},
		{name: "max_lora not a number", added: series("four", "sql", "", t0+1), running: []string{"sql"}, waiting: []string{}},
		{name: "max_lora negative", added: series("-1", "sql", "", t0+1), running: []string{"sql"}, waiting: []string{}},
		{name: "max_lora fractional", added: series("2.5", "sql", "", t0+1), running: []string{"sql"}, waiting: []string{}},
		{name: "max_lora empty", added: series("", "", "chat", t0+1), running: []string{}, waiting: []string{"chat"}},
	}
	a, _ := AdapterFor("vllm")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := strings.Replace(dump, real, real+c.added, 1)
			if c.drop {
				body = strings.Replace(dump, real, "", 1)
			}
			m, err := Parse([]byte(body), "")
			if err != nil {
				t.Fatal(err)
			}
			s := a.Extract(m, nil)
			if !reflect.DeepEqual(s.LoRAAdapters, c.running) || !reflect.DeepEqual(s.LoRAWaiting, c.waiting) || !eqI(s.MaxLoRA, c.maxLoRA) {
				t.Errorf("running %#v, waiting %#v, max_lora %s; want %#v, %#v, %s",
					s.LoRAAdapters, s.LoRAWaiting, show(s.MaxLoRA), c.running, c.waiting, show(c.maxLoRA))
			}
		})
	}
}

func TestSGLangTPRanksAndRole(t *testing.T) {
	body := `sglang:num_running_reqs{engine_type="prefill",model_name="m",tp_rank="0"} 2
sglang:num_running_reqs{engine_type="prefill",model_name="m",tp_rank="4"} 5
sglang:num_queue_reqs{engine_type="prefill",model_name="m",tp_rank="0"} 1
sglang:num_queue_reqs{engine_type="prefill",model_name="m",tp_rank="4"} 0
sglang:token_usage{engine_type="prefill",model_name="m",tp_rank="0"} 0.1
sglang:token_usage{engine_type="prefill",model_name="m",tp_rank="4"} 0.7
sglang:max_total_num_tokens{engine_type="prefill",model_name="m",tp_rank="0"} 5000
sglang:max_total_num_tokens{engine_type="prefill",model_name="m",tp_rank="4"} 5000
`
	m, err := Parse([]byte(body), "")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := AdapterFor("sglang")
	s := a.Extract(m, nil)
	if *s.Running != 7 || *s.Waiting != 1 || *s.KVCacheUsage != 0.7 {
		t.Errorf("running/waiting/kv = %v/%v/%v, want 7/1/0.7", *s.Running, *s.Waiting, *s.KVCacheUsage)
	}
	if *s.BlockSize != 1 || *s.NumGPUBlocks != 10000 {
		t.Errorf("capacity = %d x %d, want 10000 token slots", *s.NumGPUBlocks, *s.BlockSize)
	}
	if s.Role != "prefill" {
		t.Errorf("role = %q, want prefill", s.Role)
	}
}

func TestBladeLLMEASNames(t *testing.T) {
	body := `decode_batch_size_mean 12
wait_queue_size_mean 3
block_usage_gpu_mean 0.62
tps_total 5000
tps_out 1200
`
	m, err := Parse([]byte(body), "")
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := Detect(m); !ok || e != "bladellm" {
		t.Fatalf("Detect = %q, %v; want bladellm", e, ok)
	}
	a, _ := AdapterFor("bladellm")
	s := a.Extract(m, nil)
	if *s.Running != 12 || *s.Waiting != 3 || *s.KVCacheUsage != 0.62 {
		t.Errorf("running/waiting/kv = %v/%v/%v", *s.Running, *s.Waiting, *s.KVCacheUsage)
	}
	if *s.GenerationTokensPerSecond != 1200 || *s.PromptTokensPerSecond != 3800 {
		t.Errorf("tps out/in = %v/%v, want 1200/3800", *s.GenerationTokensPerSecond, *s.PromptTokensPerSecond)
	}
	// One generic name alone is not BladeLLM.
	m2, _ := Parse([]byte("tps_total 1\n"), "")
	if e, ok := Detect(m2); ok {
		t.Errorf("Detect(tps_total only) = %q, want none", e)
	}
}

func TestTRTLLMServeAndLMDeployAndLlamaCpp(t *testing.T) {
	cases := []struct {
		engine, body string
		check        func(t *testing.T, s Stats)
	}{
		{"trtllm", `trtllm_num_requests_running{model_name="q",engine_type="trtllm"} 4
trtllm_num_requests_waiting{model_name="q",engine_type="trtllm"} 2
trtllm_kv_cache_utilization{model_name="q",engine_type="trtllm"} 0.3
trtllm_kv_cache_tokens_per_block{model_name="q",engine_type="trtllm"} 32
trtllm_kv_cache_max_blocks{model_name="q",engine_type="trtllm"} 900
trtllm_prompt_tokens_total{model_name="q",engine_type="trtllm"} 11
trtllm_generation_tokens_total{model_name="q",engine_type="trtllm"} 22
`, func(t *testing.T, s Stats) {
			if *s.Running != 4 || *s.Waiting != 2 || *s.KVCacheUsage != 0.3 || *s.BlockSize != 32 || *s.NumGPUBlocks != 900 ||
				*s.PromptTokensTotal != 11 || *s.GenerationTokensTotal != 22 || !slices.Equal(s.Models, []string{"q"}) {
				t.Errorf("stats = %+v", s)
			}
		}},
		{"lmdeploy", `lmdeploy:num_requests_running{engine="0",model_name="internlm"} 2
lmdeploy:num_requests_running{engine="1",model_name="internlm"} 1
lmdeploy:num_requests_waiting{engine="0",model_name="internlm"} 5
lmdeploy:gpu_cache_usage_perc{engine="0",model_name="internlm"} 0.4
lmdeploy:gpu_cache_usage_perc{engine="1",model_name="internlm"} 0.45
lmdeploy:prompt_tokens_total{engine="0",model_name="internlm"} 7
lmdeploy:generation_tokens_total{engine="0",model_name="internlm"} 9
lmdeploy:backend_config_info{block_size="64",num_gpu_blocks="0"} 1
`, func(t *testing.T, s Stats) {
			if *s.Running != 3 || *s.Waiting != 5 || *s.KVCacheUsage != 0.45 || *s.BlockSize != 64 || s.NumGPUBlocks != nil ||
				*s.PromptTokensTotal != 7 || *s.GenerationTokensTotal != 9 {
				t.Errorf("stats = %+v (num_gpu_blocks 0 means automatic, i.e. unknown)", s)
			}
		}},
		{"llamacpp", `llamacpp:requests_processing 2
llamacpp:requests_deferred 6
llamacpp:kv_cache_usage_ratio 0.125
`, func(t *testing.T, s Stats) {
			if *s.Running != 2 || *s.Waiting != 6 || *s.KVCacheUsage != 0.125 {
				t.Errorf("stats = %+v", s)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.engine, func(t *testing.T) {
			m, err := Parse([]byte(c.body), "")
			if err != nil {
				t.Fatal(err)
			}
			if e, ok := Detect(m); !ok || e != c.engine {
				t.Fatalf("Detect = %q, want %q", e, c.engine)
			}
			a, _ := AdapterFor(c.engine)
			c.check(t, a.Extract(m, nil))
		})
	}
}

func TestMetricMapOverridesAdapter(t *testing.T) {
	mm, err := ParseMetricMap(map[string]string{
		"running":        "dynamo_component_concurrent_requests",
		"waiting":        `queue_depth{pool="hot"}`,
		"kv_cache_usage": "my_kv",
		"num_gpu_blocks": "absent_metric",
	})
	if err != nil {
		t.Fatal(err)
	}
	body := string(readFixture(t, "dynamo-runtime-system_metrics-readme.txt")) + `
queue_depth{pool="hot"} 4
queue_depth{pool="cold"} 9
my_kv 0.9
vllm:num_requests_running 99
`
	m, err := Parse([]byte(body), "")
	if err != nil {
		t.Fatal(err)
	}
	a, _ := AdapterFor("vllm")
	s := a.Extract(m, mm)
	if s.Running == nil || *s.Running != 0 {
		t.Errorf("running = %s, want 0 from the mapped Dynamo gauge (not vLLM's 99)", show(s.Running))
	}
	if s.Waiting == nil || *s.Waiting != 4 {
		t.Errorf("waiting = %s, want 4 from the hot pool only", show(s.Waiting))
	}
	if s.KVCacheUsage == nil || *s.KVCacheUsage != 0.9 {
		t.Errorf("kv = %s, want 0.9", show(s.KVCacheUsage))
	}
	if s.NumGPUBlocks != nil {
		t.Errorf("num_gpu_blocks = %d, want unknown (mapped metric absent)", *s.NumGPUBlocks)
	}
	if got := mm.Missing(m); !slices.Equal(got, []string{"num_gpu_blocks=absent_metric"}) {
		t.Errorf("Missing = %v", got)
	}
}

func TestParseMetricMapRejects(t *testing.T) {
	for _, raw := range []map[string]string{
		{"runing": "x"},
		{"running": ""},
		{"running": "a b"},
		{"running": "x{y="},
		{"running": "x\ny 1"},
	} {
		if _, err := ParseMetricMap(raw); err == nil {
			t.Errorf("ParseMetricMap(%q) accepted", raw)
		} else if !strings.Contains(err.Error(), "agent.metric_map.") {
			t.Errorf("error %q does not name the key", err)
		}
	}
}
