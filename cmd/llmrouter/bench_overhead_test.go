package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestBenchOverheadJSON(t *testing.T) {
	r := run(t, nil, "bench", "--mode", "overhead", "--instances", "4", "--rate", "100", "--duration", "300ms",
		"--concurrency", "2", "--prompt-bytes", "1024,8192", "--json", "--progress=false")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, r.stdout)
	}
	if len(got) != 2 || got[0]["prompt_bytes"] != float64(1024) || got[1]["prompt_bytes"] != float64(8192) {
		t.Fatalf("want one result per prompt size: %v", got)
	}
	for _, res := range got {
		if res["requests"] != float64(30) || res["instances"] != float64(4) || res["p99_ms"].(float64) <= 0 {
			t.Fatalf("result %v", res)
		}
	}
}

func TestBenchOverheadRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--prompt-bytes", "big"}, "--prompt-bytes"},
		{[]string{"--policy", "round-robin,random"}, "one policy"},
		{[]string{"--target", "http://x"}, "--target does not apply"},
	} {
		r := run(t, nil, append([]string{"bench", "--mode", "overhead"}, tc.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want an error naming %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
}
