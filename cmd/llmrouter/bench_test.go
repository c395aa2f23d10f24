package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/llmrouter/llmrouter/sim/cluster"
)

var benchJSONKeys = []string{"duration_s", "errors", "failed", "input_tokens", "output_throughput", "output_tokens",
	"per_instance", "policy", "prefix_hit_ratio", "rejected", "rejections", "request_throughput", "requests",
	"total_throughput", "tpot_mean_ms", "tpot_median_ms", "tpot_p99_ms", "ttft_mean_ms", "ttft_median_ms", "ttft_p99_ms"}

func decodeBenchJSON(t *testing.T, out string) []map[string]any {
	t.Helper()
	var arr []map[string]any
	if err := json.Unmarshal([]byte(out), &arr); err != nil {
		t.Fatalf("not a JSON array: %v\n%s", err, out)
	}
	for _, o := range arr {
		var keys []string
		for k := range o {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if !slices.Equal(keys, benchJSONKeys) {
			t.Fatalf("keys %q, want exactly %q", keys, benchJSONKeys)
		}
	}
	return arr
}

func TestBenchSimJSON(t *testing.T) {
	r := run(t, nil, "bench", "--mode", "sim", "--instances", "2", "--policy", "round-robin, prefix-cache",
		"--concurrency", "4", "--duration", "20s", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	arr := decodeBenchJSON(t, r.stdout)
	if len(arr) != 2 || arr[0]["policy"] != "round-robin" || arr[1]["policy"] != "prefix-cache" {
		t.Fatalf("want one object per policy, in order: %s", r.stdout)
	}
	for _, o := range arr {
		if o["requests"].(float64) < 10 || o["prefix_hit_ratio"] == nil || o["ttft_mean_ms"].(float64) <= 0 {
			t.Fatalf("implausible run: %v", o)
		}
		// Every request is accounted for: served per instance, failed or rejected.
		per, _ := o["per_instance"].([]any)
		served := 0.0
		for _, p := range per {
			m := p.(map[string]any)
			if m["instance"] == "" {
				t.Fatalf("per_instance entry without an instance: %v", m)
			}
			served += m["requests"].(float64)
		}
		if len(per) != 2 || served != o["requests"].(float64) || o["failed"].(float64) != 0 {
			t.Fatalf("per_instance %v does not add up to %v requests (failed %v)", per, o["requests"], o["failed"])
		}
		if e, ok := o["errors"].(map[string]any); !ok || len(e) != 0 {
			t.Fatalf("errors = %v, want {}", o["errors"])
		}
	}
}

func TestBenchSimTable(t *testing.T) {
	r := run(t, nil, "bench", "--instances", "2", "--policy", "least-request,round-robin", "--workload", "shared-prefix",
		"--groups", "4", "--prompts-per-group", "4", "--rate", "5", "--duration", "0")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, w := range []string{"shared-prefix (4 groups × 4 prompts", "Policy:                                  least-request",
		"Successful requests:                     16", "Mean TTFT (ms):", "P99 TPOT (ms):", "Prefix cache hit ratio:",
		"Requests per instance:", "policy             requests"} {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("output lacks %q:\n%s", w, r.stdout)
		}
	}
}

// --explain-csv writes the header once and a row per request of every
// policy, without printing the explanation.
func TestBenchSimExplainCSV(t *testing.T) {
	path := filepath.Join(t.TempDir(), "picks.csv")
	r := run(t, nil, "bench", "--instances", "2", "--policy", "round-robin,prefix-cache", "--workload", "shared-prefix",
		"--groups", "3", "--prompts-per-group", "4", "--rate", "5", "--duration", "0", "--explain-csv", path)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if strings.Contains(r.stdout, "Explain ") {
		t.Fatalf("--explain-csv alone printed the explanation:\n%s", r.stdout)
	}
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	rows, err := csv.NewReader(fh).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1+2*12 || !slices.Equal(rows[0], cluster.ExplainCSVHeader) {
		t.Fatalf("%d rows, header %q: want the header and 12 rows per policy", len(rows), rows[0])
	}
	if rows[1][0] != "round-robin" || rows[len(rows)-1][0] != "prefix-cache" {
		t.Fatalf("policies %q ... %q: want each policy's rows in run order", rows[1][0], rows[len(rows)-1][0])
	}
}

func TestBenchRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "w.jsonl")
	if err := os.WriteFile(bad, []byte(`{"conversation_id":"a","turn":0,"messages":[{"role":"user","content":"x"}],"max_tokens":3}
{"conversation_id":"a","turn":1,"messages":[{"role":"user","content":"x"}],"max_tokens":"many"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--mode", "fast", "--concurrency", "1"}, "--mode"},
		{[]string{"--duration", "1s"}, "--concurrency"},
		{[]string{"--concurrency", "1", "--rate", "2"}, "one arrival process"},
		{[]string{"--workload", "chat", "--concurrency", "1"}, "multi-turn or shared-prefix"},
		{[]string{"--workload-file", bad, "--concurrency", "1"}, `w.jsonl:2: field "max_tokens"`},
		{[]string{"--workload-file", filepath.Join(dir, "none.jsonl"), "--concurrency", "1"}, "none.jsonl"},
		{[]string{"--concurrency", "1", "--policy", "fastest"}, "fastest"},
		{[]string{"--concurrency", "1", "--profile", "tpu"}, "tpu"},
		{[]string{"--mode", "live", "--concurrency", "1"}, "--target"},
		{[]string{"--mode", "live", "--target", "http://127.0.0.1:1", "--policy", "random", "--concurrency", "1"}, "--policy is for --mode sim"},
		{[]string{"--concurrency", "1", "--duration", "0"}, "endless"},
		{[]string{"--concurrency", "1", "--explain-csv", "/nonexistent-dir/x.csv"}, "--explain-csv"},
		{[]string{"--mode", "suite", "--duration", "1s", "--seeds", "3-1"}, `--seeds "3-1": "3-1" is not a range`},
		{[]string{"--mode", "suite", "--duration", "1s", "--seeds", "1,x"}, `"x" is not a seed`},
		{[]string{"--mode", "suite", "--duration", "1s", "--seeds", "1-5000"}, "more than 1000 seeds"},
	}
	for _, c := range cases {
		r := run(t, nil, append([]string{"bench"}, c.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("bench %v: exit %d, stderr %q: want an error naming %q", c.args, r.code, r.stderr, c.want)
		}
	}
}

func TestBenchLive(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"}}]}\n\n")
			w.(http.Flusher).Flush()
		}
		fmt.Fprint(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n")
	}))
	defer ts.Close()
	r := run(t, nil, "bench", "--mode", "live", "--target", ts.URL, "--model", "m", "--label", "envoy",
		"--workload", "shared-prefix", "--groups", "2", "--prompts-per-group", "3", "--concurrency", "2", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	arr := decodeBenchJSON(t, r.stdout)
	if len(arr) != 1 || arr[0]["policy"] != "envoy" || arr[0]["requests"].(float64) != 6 || arr[0]["output_tokens"].(float64) != 18 {
		t.Fatalf("%s", r.stdout)
	}
	if arr[0]["prefix_hit_ratio"] != nil {
		t.Fatalf("prefix_hit_ratio %v: the server reported no cached tokens, want null", arr[0]["prefix_hit_ratio"])
	}
	if arr[0]["per_instance"] != nil {
		t.Fatalf("per_instance %v: a live run cannot tell which instance served, want null", arr[0]["per_instance"])
	}
}

// Failed requests are reported, with their errors by kind: a run with
// failures must not look like a smaller clean run.
func TestBenchLiveReportsFailures(t *testing.T) {
	var n atomicCounter
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.next()%2 == 0 {
			http.Error(w, `{"error":{"message":"boom"}}`, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok\"}}]}\n\ndata: [DONE]\n\n")
	}))
	defer ts.Close()
	r := run(t, nil, "bench", "--mode", "live", "--target", ts.URL, "--model", "m",
		"--workload", "shared-prefix", "--groups", "2", "--prompts-per-group", "4", "--concurrency", "1", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	o := decodeBenchJSON(t, r.stdout)[0]
	errs, _ := o["errors"].(map[string]any)
	sum := 0.0
	for _, v := range errs {
		sum += v.(float64)
	}
	if o["failed"].(float64) != 4 || o["requests"].(float64) != 4 || sum != 4 {
		t.Fatalf("failed %v, requests %v, errors %v: want 4 failed, 4 served, errors by kind adding up to 4", o["failed"], o["requests"], errs)
	}
}

type atomicCounter struct{ v atomic.Int64 }

func (c *atomicCounter) next() int64 { return c.v.Add(1) - 1 }

// TestBenchSimEndpointPickerConfig: llm-d's default profile file and a
// custom weighting run in the simulator beside a built-in profile; a bad
// file is refused before any run, naming the plugin and parameter.
func TestBenchSimEndpointPickerConfig(t *testing.T) {
	for _, tc := range []struct{ file, policies string }{
		{"../../docs/examples/endpoint-picker/llm-d-default.yaml", "default,prefix-cache"},
		{"../../docs/examples/endpoint-picker/custom-weights.yaml", "prefix-heavy,load-only"},
	} {
		r := run(t, nil, "bench", "--mode", "sim", "--instances", "3", "--endpoint-picker-config", tc.file,
			"--policy", tc.policies, "--concurrency", "8", "--duration", "20s", "--json")
		if r.code != 0 {
			t.Fatalf("%s: exit %d: %s", tc.file, r.code, r.stderr)
		}
		arr := decodeBenchJSON(t, r.stdout)
		names := strings.Split(tc.policies, ",")
		if len(arr) != 2 || arr[0]["policy"] != names[0] || arr[1]["policy"] != names[1] {
			t.Fatalf("want one object per profile, in order: %s", r.stdout)
		}
		for _, o := range arr {
			if o["requests"].(float64) < 10 {
				t.Fatalf("implausible run: %v", o)
			}
		}
	}
	bad := filepath.Join(t.TempDir(), "epp.yaml")
	src := "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n- type: prefix-cache-scorer\n  parameters: {hashBlockSize: 64, blocksize: 3}\nschedulingProfiles:\n- name: p\n  plugins: [{pluginRef: prefix-cache-scorer}]\n"
	if err := os.WriteFile(bad, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	r := run(t, nil, "bench", "--mode", "sim", "--endpoint-picker-config", bad, "--policy", "p", "--duration", "5s", "--concurrency", "1")
	for _, want := range []string{"llm_scheduler.endpoint_picker_config", `plugin "prefix-cache-scorer"`, `"blocksize"`, "hashBlockSize"} {
		if r.code == 0 || !strings.Contains(r.stderr, want) {
			t.Errorf("exit %d, error lacks %q: %s", r.code, want, r.stderr)
		}
	}
	r = run(t, nil, "bench", "--mode", "sim", "--policy", "round-robin,fastest", "--duration", "5s", "--concurrency", "1")
	if r.code == 0 || !strings.Contains(r.stderr, `"fastest"`) || !strings.Contains(r.stderr, "peer-scorer") || strings.Contains(r.stdout, "round-robin") {
		t.Errorf("an unknown name must stop bench before any run, naming the accepted ones: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
}

func TestParseSeeds(t *testing.T) {
	got, err := parseSeeds("1-3, 7,10-11")
	if want := []uint64{1, 2, 3, 7, 10, 11}; err != nil || !slices.Equal(got, want) {
		t.Fatalf("parseSeeds: %v, %v: want %v", got, err, want)
	}
	if _, err := parseSeeds("1-1000,1001"); err == nil {
		t.Fatal("1001 seeds accepted")
	}
}

// --tiebreak-seed reseeds only the scheduler's tie-breaking: the same
// arrivals (the requests and their prompts are the workload seed's) are
// served differently by a policy that breaks ties at random, and alike by
// one that never meets a tie.
func TestBenchSimTiebreakSeed(t *testing.T) {
	sim := func(policy string, extra ...string) map[string]any {
		t.Helper()
		args := append([]string{"bench", "--mode", "sim", "--instances", "4", "--policy", policy, "--workload", "shared-prefix",
			"--groups", "8", "--prompts-per-group", "8", "--concurrency", "16", "--duration", "0", "--json"}, extra...)
		r := run(t, nil, args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d: %s", extra, r.code, r.stderr)
		}
		return decodeBenchJSON(t, r.stdout)[0]
	}
	perInstance := func(o map[string]any) string { return fmt.Sprint(o["per_instance"]) }
	// random picks uniformly at random: its placement is its tie-breaking.
	a, b := sim("random"), sim("random", "--tiebreak-seed", "2")
	if a["requests"] != b["requests"] || a["input_tokens"] != b["input_tokens"] {
		t.Fatalf("the workload changed with the tie-breaking seed: %v requests / %v tokens against %v / %v",
			a["requests"], a["input_tokens"], b["requests"], b["input_tokens"])
	}
	if perInstance(a) == perInstance(b) {
		t.Fatalf("random placed the same requests alike under tie-breaking seeds 1 and 2: %s", perInstance(a))
	}
	// --tiebreak-seed equal to --seed is the default.
	if c := sim("random", "--tiebreak-seed", "1"); perInstance(c) != perInstance(a) {
		t.Fatalf("--tiebreak-seed 1 with --seed 1 differs from the default: %s against %s", perInstance(c), perInstance(a))
	}
	// Round robin has no ties to break.
	if x, y := sim("round-robin"), sim("round-robin", "--tiebreak-seed", "2"); perInstance(x) != perInstance(y) {
		t.Fatalf("round-robin moved with the tie-breaking seed: %s against %s", perInstance(x), perInstance(y))
	}
	for _, mode := range []string{"suite", "live", "overhead"} {
		r := run(t, nil, "bench", "--mode", mode, "--tiebreak-seed", "2")
		if r.code == 0 || !strings.Contains(r.stderr, "--tiebreak-seed is for --mode sim") {
			t.Fatalf("--mode %s --tiebreak-seed: exit %d, stderr %q; want a refusal naming the flag", mode, r.code, r.stderr)
		}
	}
}
