package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// The test binary doubles as llmrouter: run() re-executes it with
// LLMROUTER_TEST_MAIN=1, which calls main() with the given arguments. Each
// command then runs in a fresh process, as an operator would run it.
func TestMain(m *testing.M) {
	if os.Getenv("LLMROUTER_TEST_MAIN") == "1" {
		os.Args = append([]string{"llmrouter"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "LLMROUTER_TEST_MAIN=1"), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

func TestHelpListsCommands(t *testing.T) {
	r := run(t, nil, "--help")
	if r.code != 0 {
		t.Fatalf("--help exited %d: %s", r.code, r.stderr)
	}
	for _, c := range []string{"config", "version"} {
		if !strings.Contains(r.stdout, c) {
			t.Errorf("--help does not list %q:\n%s", c, r.stdout)
		}
	}
}

func TestVersion(t *testing.T) {
	r := run(t, nil, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "llmrouter ") || !strings.Contains(r.stdout, "(revision ") ||
		!strings.Contains(r.stdout, runtime.Version()) {
		t.Fatalf("version: %+v", r)
	}
	if f := run(t, nil, "--version"); f.code != 0 || f.stdout != r.stdout {
		t.Fatalf("--version printed %+v, want the same as version: %q", f, r.stdout)
	}
}

func TestConfigPrintDefaults(t *testing.T) {
	r := run(t, nil, "config", "print")
	if r.code != 0 {
		t.Fatalf("config print exited %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{
		"infer_backend: \"\"", "max_queue_size: 512", "retry_count: 2", "wait_schedule_timeout: 10s",
		"wait_schedule_try_period: 1s", "policy: prefix-cache", "prefill_policy: prefix-cache", "decode_policy: least-token",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("config print lacks the default %q", want)
		}
	}
}

func TestConfigPrintEnvironmentAndMilliseconds(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "eas.json")
	if err := os.WriteFile(file, []byte(`{"llm_gateway": {"wait_schedule_timeout": 5000}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	r := run(t, []string{"LLMROUTER_LLM_GATEWAY_MAX_QUEUE_SIZE=7", "LLMROUTER_TOKEN=hunter2"}, "config", "print", "--config", file)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"max_queue_size: 7", "wait_schedule_timeout: 5s", "token: <redacted>"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("config print lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "hunter2") {
		t.Error("config print shows the token")
	}
}

func TestBadPolicyStopsStartup(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte("llm_scheduler: {policy: fastest}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := run(t, nil, "config", "print", "--config", file)
	if r.code == 0 {
		t.Fatal("a config with an unknown policy was accepted")
	}
	for _, want := range []string{"llm_scheduler.policy", "fastest", "prefix-cache", "least-token", "round-robin"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("error lacks %q: %s", want, r.stderr)
		}
	}
}

func TestMissingConfigFile(t *testing.T) {
	r := run(t, nil, "config", "print", "--config", "/nonexistent/llmrouter.yaml")
	if r.code == 0 || !strings.Contains(r.stderr, "/nonexistent/llmrouter.yaml") {
		t.Fatalf("missing file: %+v", r)
	}
}

// A misspelt LLMROUTER_* variable is named in a warning with the closest
// known one; the variables of the project's own scripts are not.
func TestUnknownEnvironmentVariableWarned(t *testing.T) {
	r := run(t, []string{"LLMROUTER_LLM_SCHEDULER_POLCY=round-robin", "LLMROUTER_RUN_DIR=/tmp/x"}, "config", "print")
	if r.code != 0 || !strings.Contains(r.stderr, "LLMROUTER_LLM_SCHEDULER_POLCY") ||
		!strings.Contains(r.stderr, "LLMROUTER_LLM_SCHEDULER_POLICY (llm_scheduler.policy)") {
		t.Fatalf("config print with a misspelt variable: %+v", r)
	}
	if strings.Contains(r.stderr, "LLMROUTER_RUN_DIR") || strings.Contains(r.stderr, "LLMROUTER_TEST_MAIN") {
		t.Fatalf("warned about a tool's variable: %s", r.stderr)
	}
}

// The README links only what the repository holds: every link and every
// docs/ or deploy/ path it names exists, and none leaves the repository.
func TestReadmeLinksStayInTheRepository(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, m := range regexp.MustCompile(`\]\(([^)]+)\)`).FindAllStringSubmatch(string(data), -1) {
		paths = append(paths, m[1])
	}
	for _, m := range regexp.MustCompile("`((?:docs|deploy)/[^`]*)`").FindAllStringSubmatch(string(data), -1) {
		paths = append(paths, m[1])
	}
	if len(paths) < 6 {
		t.Fatalf("README names only %d paths: %v", len(paths), paths)
	}
	for _, p := range paths {
		if strings.Contains(p, "://") || strings.HasPrefix(p, "..") || strings.HasPrefix(p, "/") {
			t.Errorf("README links %q, outside the repository", p)
			continue
		}
		if _, err := os.Stat(filepath.Join("../..", p)); err != nil {
			t.Errorf("README links %q: %v", p, err)
		}
	}
}
