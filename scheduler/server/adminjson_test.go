package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/agent"
	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
)

// /admin/instances speaks JSON as operators' tools expect: snake_case keys,
// enums as strings, durations as seconds. Decoded as a client would (a
// generic map, so no Go field name can slip through).
func TestAdminInstancesJSON(t *testing.T) {
	e := start(t, nil)
	reg := registerMsg("10.0.0.1:8000").GetRegister()
	reg.Role = llmrouterv1.Role_ROLE_DECODE
	reg.NumGpuBlocks, reg.BlockSize = 1000, 16
	reg.LoraAdapters = []string{"sql", "tools"}
	if _, err := e.sch.Register(reg); err != nil {
		t.Fatal(err)
	}
	if err := e.sch.InstanceReport("10.0.0.1:8000", 0, &llmrouterv1.Report{Healthy: true, Running: 3, KvCacheUsage: 0.25, PrefixCacheHitRatio: -1,
		LoraAdapters: []string{"sql"}, WaitingLoraAdapters: []string{"tools"}, MaxLora: 4}); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(AdminHandler(e.sch, ""))
	defer hs.Close()
	resp, err := http.Get(hs.URL + "/admin/instances")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	var list []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 {
		t.Fatalf("%d instances", len(list))
	}
	in := list[0]
	for k := range in {
		for _, c := range k {
			if c >= 'A' && c <= 'Z' {
				t.Errorf("key %q is not snake_case", k)
			}
		}
	}
	want := map[string]any{
		"id": "10.0.0.1:8000", "address": "10.0.0.1:8000", "engine": "vllm", "role": "decode", "state": "healthy",
		"healthy": true, "draining": false, "num_gpu_blocks": 1000.0, "block_size": 16.0,
		"report_interval_seconds": 0.2, "running": 3.0, "kv_cache_usage": 0.25, "prefix_cache_hit_ratio": nil,
		"max_lora": 4.0,
	}
	for k, v := range want {
		got, ok := in[k]
		if !ok || got != v {
			t.Errorf("%s = %#v (present %v), want %#v", k, got, ok, v)
		}
	}
	if m, _ := in["models"].([]any); !slices.Equal(m, []any{"m"}) {
		t.Errorf("models = %#v", in["models"])
	}
	if l, _ := in["loras"].([]any); !slices.Equal(l, []any{"sql"}) {
		t.Errorf("loras = %#v", in["loras"])
	}
	if l, _ := in["served_loras"].([]any); !slices.Equal(l, []any{"sql", "tools"}) {
		t.Errorf("served_loras = %#v", in["served_loras"])
	}
	if l, _ := in["waiting_loras"].([]any); !slices.Equal(l, []any{"tools"}) {
		t.Errorf("waiting_loras = %#v", in["waiting_loras"])
	}
	for _, k := range []string{"registered", "last_report"} {
		s, _ := in[k].(string)
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			t.Errorf("%s = %#v, want an RFC 3339 time: %v", k, in[k], err)
		}
	}
	// The struct the docs document and the JSON agree key for key.
	var strict []Instance
	raw, _ := json.Marshal(list)
	dec := json.NewDecoder(bytesReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&strict); err != nil {
		t.Fatal(err)
	}
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// The example in docs/operating.md is what the API answers: it decodes
// strictly into Instance, and names every key Instance always writes.
func TestAdminExampleInDocs(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operating.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```json\n[")
	if !ok {
		t.Fatal("docs/operating.md has no JSON example of /admin/instances")
	}
	example, _, _ := strings.Cut(rest, "```")
	example = "[" + example
	var list []Instance
	dec := json.NewDecoder(strings.NewReader(example))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&list); err != nil || len(list) != 1 {
		t.Fatalf("the documented example does not decode into Instance: %v", err)
	}
	var keys map[string]any
	raw, _ := json.Marshal(list[0])
	_ = json.Unmarshal(raw, &keys)
	var doced []map[string]any
	_ = json.Unmarshal([]byte(example), &doced)
	for k := range keys {
		if _, ok := doced[0][k]; !ok {
			t.Errorf("the documented example lacks %q", k)
		}
	}
}

// `llmrouter agent inspect` and /admin/instances name the same report
// fields alike: every key inspect prints is a key of the admin API.
func TestAdminAndInspectShareKeys(t *testing.T) {
	keys := func(v any) map[string]bool {
		raw, _ := json.Marshal(v)
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		out := map[string]bool{}
		for k := range m {
			out[k] = true
		}
		return out
	}
	admin := keys(Instance{})
	inspect := keys(agent.InspectReport{})
	if len(inspect) < 8 {
		t.Fatalf("inspect keys %v", inspect)
	}
	for k := range inspect {
		if !admin[k] {
			t.Errorf("agent inspect prints %q, which /admin/instances names differently or not at all", k)
		}
	}
}
