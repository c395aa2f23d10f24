package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBootstrapValidateShippedFiles(t *testing.T) {
	files, err := filepath.Glob("../../bootstrap/*.yaml")
	if err != nil || len(files) < 2 {
		t.Fatalf("shipped files: %v %v", files, err)
	}
	if r := run(t, nil, append([]string{"bootstrap", "validate"}, files...)...); r.code != 0 {
		t.Fatalf("validate exited %d: %s", r.code, r.stderr)
	}
}

func TestBootstrapValidateNamesField(t *testing.T) {
	src, err := os.ReadFile("../../bootstrap/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(string(src), "connect_timeout:", "conect_timeout:", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, nil, "bootstrap", "validate", bad)
	if r.code != 1 || !strings.Contains(r.stderr, "static_resources.clusters[0].conect_timeout") {
		t.Fatalf("want exit 1 naming the field, got %d: %s", r.code, r.stderr)
	}
}

func TestBootstrapRender(t *testing.T) {
	r := run(t, nil, "bootstrap", "--xds", "10.0.0.9:18000", "--delta", "--retry-count", "4")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"address: 10.0.0.9", "api_type: DELTA_GRPC", "num_retries: 4"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	f := filepath.Join(t.TempDir(), "out.yaml")
	if err := os.WriteFile(f, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	if v := run(t, nil, "bootstrap", "validate", f); v.code != 0 {
		t.Fatalf("rendered output invalid: %s", v.stderr)
	}
	if r := run(t, nil, "bootstrap", "--xds", "nope"); r.code == 0 || !strings.Contains(r.stderr, "--xds") {
		t.Fatalf("bad --xds accepted: %+v", r)
	}
}

// The xDS token from the environment reaches both renderings as Envoy's
// initial_metadata, and they validate; without it nothing is presented.
func TestBootstrapRenderXDSToken(t *testing.T) {
	const token = "c0ffee-xds_token"
	for _, args := range [][]string{{"bootstrap"}, {"bootstrap", "--existing-envoy"}} {
		r := run(t, []string{"LLMROUTER_LLM_SCHEDULER_XDS_TOKEN=" + token}, args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, "initial_metadata:") || !strings.Contains(r.stdout, "key: authorization") ||
			!strings.Contains(r.stdout, "value: Bearer "+token) {
			t.Errorf("%v with a token: no authorization initial_metadata:\n%s", args, r.stdout)
		}
		f := filepath.Join(t.TempDir(), "out.yaml")
		if err := os.WriteFile(f, []byte(r.stdout), 0o600); err != nil {
			t.Fatal(err)
		}
		if v := run(t, nil, "bootstrap", "validate", f); v.code != 0 {
			t.Fatalf("%v with a token: rendered output invalid: %s", args, v.stderr)
		}

		r = run(t, []string{"LLMROUTER_LLM_SCHEDULER_XDS_TOKEN="}, args...)
		if r.code != 0 || strings.Contains(r.stdout, "initial_metadata") {
			t.Errorf("%v without a token: exit %d, initial_metadata present: %v", args, r.code, strings.Contains(r.stdout, "initial_metadata"))
		}
	}
	// A token Envoy would mangle is refused before anything is printed.
	r := run(t, []string{"LLMROUTER_LLM_SCHEDULER_XDS_TOKEN=50%off"}, "bootstrap")
	if r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, "llm_scheduler.xds_token") {
		t.Errorf("bad token: exit %d, stdout %d bytes, stderr %s", r.code, len(r.stdout), r.stderr)
	}
}
