package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustLoad(t *testing.T, file string, flags []FlagBinding) Config {
	t.Helper()
	c, err := Load(file, flags)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

// loadErr loads and returns the error text, failing the test when it loads.
func loadErr(t *testing.T, file string) string {
	t.Helper()
	_, err := Load(file, nil)
	if err == nil {
		t.Fatalf("Load(%s) succeeded, want an error", file)
	}
	return err.Error()
}

func wantAll(t *testing.T, msg string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("error %q does not mention %q", msg, p)
		}
	}
}

func TestDefaultsMatchArchitecture(t *testing.T) {
	c := mustLoad(t, "", nil)
	g, s := c.Gateway, c.Scheduler
	if g.InferBackend != "" || g.MaxQueueSize != 512 || g.RetryCount != 2 ||
		g.WaitScheduleTimeout != 10*time.Second || g.WaitScheduleTryPeriod != time.Second {
		t.Errorf("llm_gateway defaults differ from ARCHITECTURE §4: %+v", g)
	}
	if s.Policy != "prefix-cache" || s.PrefillPolicy != "prefix-cache" || s.DecodePolicy != "least-token" {
		t.Errorf("llm_scheduler defaults differ from ARCHITECTURE §4: %+v", s)
	}
	if g.Listen != "127.0.0.1:9002" || s.XDSListen != "127.0.0.1:18000" || s.Listen != "127.0.0.1:18001" || s.HTTPListen != "127.0.0.1:9090" ||
		g.HTTPListen != "127.0.0.1:9091" || c.Agent.HTTPListen != "127.0.0.1:9092" {
		t.Errorf("default ports differ from ARCHITECTURE §3")
	}
	if c.Agent.ReportInterval != 200*time.Millisecond {
		t.Errorf("agent report interval %s, want 200ms", c.Agent.ReportInterval)
	}
}

func TestLayering(t *testing.T) {
	file := writeFile(t, "c.yaml", "llm_gateway:\n  max_queue_size: 100\n  retry_count: 1\nllm_scheduler:\n  policy: least-request\n")
	t.Setenv("LLMROUTER_LLM_GATEWAY_MAX_QUEUE_SIZE", "7")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.String("policy", "", "")
	unchanged := fs.Int("unused", 0, "")
	_ = unchanged
	if err := fs.Parse([]string{"--policy", "round-robin"}); err != nil {
		t.Fatal(err)
	}
	c := mustLoad(t, file, []FlagBinding{{Key: "llm_scheduler.policy", Flag: fs.Lookup("policy")}, {Key: "llm_gateway.retry_count", Flag: fs.Lookup("unused")}})
	if c.Gateway.MaxQueueSize != 7 {
		t.Errorf("environment should override the file: max_queue_size = %d, want 7", c.Gateway.MaxQueueSize)
	}
	if c.Gateway.RetryCount != 1 {
		t.Errorf("an unchanged flag must not override the file: retry_count = %d, want 1", c.Gateway.RetryCount)
	}
	if c.Scheduler.Policy != "round-robin" {
		t.Errorf("a given flag should override the file: policy = %q", c.Scheduler.Policy)
	}
}

func TestTokenFromEnvironmentIsRedacted(t *testing.T) {
	t.Setenv("LLMROUTER_TOKEN", "s3cret-value")
	c := mustLoad(t, "", nil)
	if c.Token != "s3cret-value" {
		t.Fatalf("token not read from LLMROUTER_TOKEN")
	}
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "s3cret") || !strings.Contains(string(out), Redacted) {
		t.Fatalf("config print leaks or omits the token:\n%s", out)
	}
	t.Setenv("LLMROUTER_TOKEN_PREVIOUS", "s3cret-old")
	c = mustLoad(t, "", nil)
	out, _ = c.YAML()
	if c.TokenPrevious != "s3cret-old" || strings.Contains(string(out), "s3cret") || !strings.Contains(string(out), "token_previous: "+Redacted) {
		t.Fatalf("token_previous not read from LLMROUTER_TOKEN_PREVIOUS, or printed:\n%s", out)
	}
}

func TestXDSToken(t *testing.T) {
	if c := mustLoad(t, "", nil); c.Scheduler.XDSToken != "" {
		t.Fatalf("default xds_token %q, want empty (the xDS port open as before)", c.Scheduler.XDSToken)
	}
	c := mustLoad(t, writeFile(t, "c.yaml", "llm_scheduler: {xds_token: from-file_1}"), nil)
	if c.Scheduler.XDSToken != "from-file_1" {
		t.Fatalf("xds_token from the file: %q", c.Scheduler.XDSToken)
	}

	t.Setenv("LLMROUTER_LLM_SCHEDULER_XDS_TOKEN", "xds-s3cret+/=")
	c = mustLoad(t, "", nil)
	if c.Scheduler.XDSToken != "xds-s3cret+/=" || c.Token != "" {
		t.Fatalf("xds_token not read from LLMROUTER_LLM_SCHEDULER_XDS_TOKEN (or leaked into token): %q %q", c.Scheduler.XDSToken, c.Token)
	}
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "s3cret") || !strings.Contains(string(out), "xds_token: "+Redacted) {
		t.Fatalf("config print leaks or omits the xds token:\n%s", out)
	}
	if !strings.Contains(string(out), "\ntoken: \"\"\n") {
		t.Fatalf("the unset shared token is not printed empty:\n%s", out)
	}

	// Characters Envoy would expand ('%') or that are not a bearer token
	// are refused, without echoing the secret.
	for _, bad := range []string{"has%percent", "two words", "quote\"d", "tab\there", "ünïcode"} {
		t.Setenv("LLMROUTER_LLM_SCHEDULER_XDS_TOKEN", bad)
		msg := loadErr(t, "")
		wantAll(t, msg, "llm_scheduler.xds_token", "letters, digits")
		if strings.Contains(msg, bad) {
			t.Errorf("the rejection echoes the token: %s", msg)
		}
	}
}

func TestDurations(t *testing.T) {
	for _, tc := range []struct {
		body string
		want time.Duration
	}{
		{"llm_gateway: {wait_schedule_timeout: 5000}", 5 * time.Second},
		{"llm_gateway: {wait_schedule_timeout: '5000'}", 5 * time.Second},
		{"llm_gateway: {wait_schedule_timeout: 10s}", 10 * time.Second},
		{"llm_gateway: {wait_schedule_timeout: 1500ms}", 1500 * time.Millisecond},
		{`{"llm_gateway": {"wait_schedule_timeout": 5000}}`, 5 * time.Second},
	} {
		ext := "yaml"
		if strings.HasPrefix(tc.body, "{\"") {
			ext = "json"
		}
		c := mustLoad(t, writeFile(t, "c."+ext, tc.body), nil)
		if c.Gateway.WaitScheduleTimeout != tc.want {
			t.Errorf("%s: got %s, want %s", tc.body, c.Gateway.WaitScheduleTimeout, tc.want)
		}
	}
	t.Setenv("LLMROUTER_LLM_GATEWAY_WAIT_SCHEDULE_TRY_PERIOD", "250")
	if c := mustLoad(t, "", nil); c.Gateway.WaitScheduleTryPeriod != 250*time.Millisecond {
		t.Errorf("bare integer from the environment: got %s, want 250ms", c.Gateway.WaitScheduleTryPeriod)
	}
	msg := loadErr(t, writeFile(t, "c.yaml", "llm_gateway: {wait_schedule_timeout: soon}"))
	wantAll(t, msg, "llm_gateway.wait_schedule_timeout", `"soon"`, "duration", "milliseconds")
}

func TestRejections(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"no policy", "llm_scheduler: {policy: ''}", []string{"llm_scheduler.policy", "prefix-cache"}},
		{"unknown key", "llm_scheduler: {polcy: random}", []string{`"llm_scheduler.polcy"`, "llm_scheduler.policy"}},
		{"unknown section", "llm_router: {policy: random}", []string{`"llm_router.policy"`}},
		{"wrong type", "llm_gateway: {max_queue_size: lots}", []string{"llm_gateway.max_queue_size", `"lots"`, "whole number"}},
		{"negative queue", "llm_gateway: {max_queue_size: -1}", []string{"llm_gateway.max_queue_size", "-1", "0 (no queue) or more"}},
		{"try period over timeout", "llm_gateway: {wait_schedule_timeout: 2s, wait_schedule_try_period: 3s}", []string{"llm_gateway.wait_schedule_try_period", "3s", "no longer than llm_gateway.wait_schedule_timeout (2s)"}},
		{"pd-split without prefill policy", "llm_scheduler: {policy: pd-split, prefill_policy: ''}", []string{"llm_scheduler.prefill_policy", "with policy pd-split"}},
		{"pd-split nested", "llm_scheduler: {policy: dynamic-pd-split, decode_policy: pd-split}", []string{"llm_scheduler.decode_policy", `"pd-split"`}},
		{"bad backend", "llm_gateway: {infer_backend: ollama}", []string{"llm_gateway.infer_backend", "vllm", "sglang", "detect"}},
		{"bad cidr", "llm_scheduler: {allowed_cidrs: [10.0.0.0/33]}", []string{"llm_scheduler.allowed_cidrs", "10.0.0.0/33"}},
		{"bad role", "agent: {role: both-ish}", []string{"agent.role", "prefill", "decode"}},
		{"bad advertise", "agent: {advertise: 'engine-0:8000'}", []string{"agent.advertise", "ip:port"}},
		{"bad metric map key", "agent: {metric_map: {queue: x}}", []string{"agent.metric_map.queue", "running"}},
		{"tail not a multiple", "llm_gateway: {block_chars: 64, tail_block_chars: 1000}", []string{"llm_gateway.tail_block_chars", "1000", "multiple of llm_gateway.block_chars (64) up to 1048576"}},
		{"tail over 1 MiB", "llm_gateway: {block_chars: 64, tail_block_chars: 2097152}", []string{"llm_gateway.tail_block_chars", "2097152", "up to 1048576"}},
		{"hashed under the head", "llm_gateway: {max_prefix_chars: 65536, max_hashed_chars: 4096}", []string{"llm_gateway.max_hashed_chars", "4096", "at least llm_gateway.max_prefix_chars (65536)"}},
		{"kv threshold", "llm_scheduler: {max_kv_cache_usage: 1.5}", []string{"llm_scheduler.max_kv_cache_usage", "(0, 1]"}},
		{"bad listen", "llm_gateway: {listen: '9002'}", []string{"llm_gateway.listen", "host:port"}},
		{"bad bool", "llm_scheduler: {insecure: maybe}", []string{"llm_scheduler.insecure", "true or false"}},
		{"tls half", "tls: {cert_file: a.pem}", []string{"tls.cert_file", "tls.key_file"}},
		{"log level", "log_level: loud", []string{"log_level", "debug"}},
		{"not yaml", "llm_gateway: [unclosed", []string{"config file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantAll(t, loadErr(t, writeFile(t, "c.yaml", tc.body)), tc.want...)
		})
	}
}

func TestPDSplitWithPolicies(t *testing.T) {
	c := mustLoad(t, writeFile(t, "c.yaml", "llm_scheduler: {policy: pd-split, prefill_policy: least-request, decode_policy: least-token}"), nil)
	if c.Scheduler.PrefillPolicy != "least-request" {
		t.Fatalf("prefill policy %q", c.Scheduler.PrefillPolicy)
	}
}

func TestMetricMapAndLists(t *testing.T) {
	c := mustLoad(t, writeFile(t, "c.yaml", "agent:\n  metric_map:\n    running: decode_batch_size_mean\n    waiting: wait_queue_size_mean\nllm_scheduler:\n  allowed_cidrs: [10.0.0.0/8, 127.0.0.1/32]\n"), nil)
	if c.Agent.MetricMap["running"] != "decode_batch_size_mean" || c.Agent.MetricMap["waiting"] != "wait_queue_size_mean" {
		t.Errorf("metric_map = %v", c.Agent.MetricMap)
	}
	if len(c.Scheduler.AllowedCIDRs) != 2 {
		t.Errorf("allowed_cidrs = %v", c.Scheduler.AllowedCIDRs)
	}
	t.Setenv("LLMROUTER_LLM_SCHEDULER_ALLOWED_CIDRS", "192.168.0.0/16, 10.1.0.0/16")
	c = mustLoad(t, "", nil)
	if len(c.Scheduler.AllowedCIDRs) != 2 || c.Scheduler.AllowedCIDRs[1] != "10.1.0.0/16" {
		t.Errorf("allowed_cidrs from the environment = %v", c.Scheduler.AllowedCIDRs)
	}
}

func TestPrintRoundTrips(t *testing.T) {
	c := mustLoad(t, writeFile(t, "c.yaml", "llm_gateway: {max_queue_size: 9, wait_schedule_timeout: 5000}\nagent: {metric_map: {running: foo}}\nllm_scheduler: {policies: {max_load_ratio: 3}}"), nil)
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"max_queue_size: 9", "wait_schedule_timeout: 5s", "policy: prefix-cache", "running: foo", "policies:\n        max_load_ratio: 3\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("printed configuration lacks %q:\n%s", want, out)
		}
	}
	again := mustLoad(t, writeFile(t, "again.yaml", string(out)), nil)
	if again.Gateway.WaitScheduleTimeout != 5*time.Second || again.Gateway.MaxQueueSize != 9 || again.Agent.MetricMap["running"] != "foo" ||
		len(again.Scheduler.ParamDefaults) != 1 || again.Scheduler.ParamDefaults[0].Value != 3 {
		t.Errorf("printed configuration does not load back to the same values: %+v", again.Gateway)
	}
}

func TestPDKeys(t *testing.T) {
	t.Setenv("LLMROUTER_AGENT_PD_API_KEY", "pd-s3cret")
	c := mustLoad(t, writeFile(t, "c.yaml", "agent: {pd_proxy_listen: '10.0.0.5:8100', bootstrap_port: 8998, pd_prefill_timeout: 3s}"), nil)
	if c.Agent.PDProxyListen != "10.0.0.5:8100" || c.Agent.BootstrapPort != 8998 || c.Agent.PDPrefillTimeout != 3*time.Second || c.Agent.PDAPIKey != "pd-s3cret" {
		t.Fatalf("pd keys not read: %+v", c.Agent)
	}
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "s3cret") || !strings.Contains(string(out), "pd_api_key: "+Redacted) {
		t.Fatalf("config print leaks or omits the pd api key:\n%s", out)
	}
	for _, c := range []struct{ yaml, key string }{
		{"agent: {bootstrap_port: 70000}", "agent.bootstrap_port"},
		{"agent: {pd_prefill_timeout: 0s}", "agent.pd_prefill_timeout"},
		{"agent: {pd_proxy_listen: nonsense}", "agent.pd_proxy_listen"},
		{"agent: {pd_proxy_listen: ':8100', role: prefill}", "agent.pd_proxy_listen"},
	} {
		if msg := loadErr(t, writeFile(t, "c.yaml", c.yaml)); !strings.Contains(msg, c.key) {
			t.Fatalf("%s: error %q does not name %s", c.yaml, msg, c.key)
		}
	}
}
