package standin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

func TestLoadTestdataBootstrap(t *testing.T) {
	cfg, err := LoadBootstrap("testdata/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	checkOurShape(t, cfg)
	if cfg.Listener.BufferLimit != DefaultBufferLimit {
		t.Errorf("buffer limit %d, want Envoy's default %d", cfg.Listener.BufferLimit, DefaultBufferLimit)
	}
	if cfg.ADS.InitialFetchTimeout != 10*time.Second {
		t.Errorf("initial fetch timeout %v", cfg.ADS.InitialFetchTimeout)
	}
}

// The stand-in must read the very bootstrap we ship for Envoy.
func TestLoadShippedBootstrap(t *testing.T) {
	path := filepath.Join("..", "..", "bootstrap", "envoy.yaml")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("shipped bootstrap missing: %v", err)
	}
	cfg, err := LoadBootstrap(path)
	if err != nil {
		t.Fatal(err)
	}
	checkOurShape(t, cfg)
	if cfg.Listener.Addr != "0.0.0.0:8080" || cfg.Admin != "127.0.0.1:9901" {
		t.Errorf("listener %s admin %s", cfg.Listener.Addr, cfg.Admin)
	}
	// Only the API paths reach the fleet; the rest is a direct 404; client
	// x-llmrouter-* and x-prefiller-* headers are removed first.
	routes := cfg.Listener.VirtualHosts[0].Routes
	if len(routes) != 9 || routes[0].Path != "/v1/realtime" || routes[1].Path != "/v1/chat/completions" {
		t.Errorf("routes: %d, first %+v", len(routes), routes[0])
	}
	if r := routes[len(routes)-3]; r.Regex == nil || r.Direct == nil || r.Direct.Status != 404 ||
		!r.Regex.MatchString("/v1/models/../metrics") || r.Regex.MatchString("/v1/models/m") {
		t.Errorf("refused model retrieval paths %+v", r)
	}
	if m := routes[len(routes)-2]; m.Prefix != "/v1/models/" || len(m.Headers) != 0 || m.Direct != nil {
		t.Errorf("model retrieval route %+v", m)
	}
	if nf := routes[len(routes)-1]; nf.Direct == nil || nf.Direct.Status != 404 || nf.Prefix != "/" ||
		!nf.PerFilter["llmrouter.ext_proc.pick"].Disabled || !nf.PerFilter["llmrouter.ext_proc.observe"].Disabled {
		t.Errorf("catch-all route %+v", nf)
	}
	if rm := cfg.Listener.Removals; len(rm) != 2 || rm[0].Prefix != "x-llmrouter-" || rm[1].Prefix != "x-prefiller-" {
		t.Errorf("client header removals %+v", rm)
	}
}

func checkOurShape(t *testing.T, cfg *Config) {
	t.Helper()
	l := cfg.Listener
	if len(l.Filters) != 2 {
		t.Fatalf("%d ext_proc filters, want 2", len(l.Filters))
	}
	pick, obs := l.Filters[0], l.Filters[1]
	if pick.Name != "llmrouter.ext_proc.pick" || obs.Name != "llmrouter.ext_proc.observe" {
		t.Errorf("filter names %q %q", pick.Name, obs.Name)
	}
	if !pick.FailureModeAllow || pick.Observability || pick.Mode.RequestBody != extprocv3.ProcessingMode_BUFFERED ||
		!pick.Mode.RequestHeaders || pick.Mode.ResponseHeaders || pick.MessageTimeout != 200*time.Millisecond || pick.MaxMessageTimeout <= time.Second {
		t.Errorf("pick filter %+v", pick)
	}
	if !contains(pick.Receiving, "envoy.lb") {
		t.Errorf("pick filter does not receive envoy.lb: %v", pick.Receiving)
	}
	if !obs.Observability || !obs.Mode.RequestHeaders || !obs.Mode.ResponseHeaders || obs.Mode.ResponseBody != extprocv3.ProcessingMode_STREAMED {
		t.Errorf("observe filter %+v", obs)
	}
	if pick.Cluster != "extproc" || cfg.ADS == nil || cfg.ADS.Cluster != "xds_cluster" || !cfg.ADS.CDS {
		t.Errorf("clusters: pick %q ads %+v", pick.Cluster, cfg.ADS)
	}
	if !l.Upgrades["websocket"] || !l.GenerateRequestID {
		t.Errorf("upgrades %v generate_request_id %v", l.Upgrades, l.GenerateRequestID)
	}
	if len(l.VirtualHosts) != 1 || len(l.VirtualHosts[0].Routes) < 2 {
		t.Fatalf("routes: %+v", l.VirtualHosts)
	}
	ws, llm := l.VirtualHosts[0].Routes[0], l.VirtualHosts[0].Routes[1]
	if len(ws.Headers) != 1 || ws.Headers[0].Name != "upgrade" || ws.Cluster != "llm_backends" {
		t.Errorf("websocket route %+v", ws)
	}
	pr := ws.PerFilter["llmrouter.ext_proc.pick"]
	if pr == nil || pr.Mode == nil || pr.Mode.RequestBody != extprocv3.ProcessingMode_NONE || !pr.Mode.RequestHeaders {
		t.Errorf("websocket route pick override %+v", pr)
	}
	if llm.Timeout != 0 || llm.Retry == nil || llm.Retry.NumRetries < 1 || !llm.Retry.On["connect-failure"] {
		t.Errorf("llm route %+v retry %+v", llm, llm.Retry)
	}
}

func TestRefusesWhatItDoesNotUnderstand(t *testing.T) {
	raw, err := os.ReadFile("testdata/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct{ from, to, want string }{
		"route rewrite": {"timeout: 0s\n                            idle_timeout: 600s\n                            retry_policy:\n                              retry_on: connect-failure,refused-stream,reset,retriable-status-codes\n                              num_retries: 2\n                              retriable_status_codes: [503]\n                          typed_per_filter_config",
			"timeout: 0s\n                            prefix_rewrite: /x\n                            idle_timeout: 600s\n                            retry_policy:\n                              retry_on: connect-failure,refused-stream,reset,retriable-status-codes\n                              num_retries: 2\n                              retriable_status_codes: [503]\n                          typed_per_filter_config",
			"route.prefix_rewrite: field not supported"},
		"mutation rules": {"failure_mode_allow: true\n                      processing_mode:\n                        request_header_mode: SEND",
			"failure_mode_allow: true\n                      mutation_rules: {allow_all_routing: true}\n                      processing_mode:\n                        request_header_mode: SEND", "mutation_rules"},
		"streamed blocking body": {"request_body_mode: BUFFERED", "request_body_mode: STREAMED", "request_body_mode STREAMED"},
		"unknown retry_on":       {"retry_on: connect-failure,refused-stream,reset,retriable-status-codes\n                              num_retries: 2\n                              retriable_status_codes: [503]\n                http_filters", "retry_on: envoy-ratelimited\n                              num_retries: 2\n                              retriable_status_codes: [503]\n                http_filters", "envoy-ratelimited"},
		"not a bootstrap field":  {"node:\n", "nodes:\n", "nodes"},
		"rds":                    {"api_type: GRPC", "api_type: REST", "api_type REST"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(string(raw), c.from) {
				t.Fatalf("testdata does not contain %q", c.from)
			}
			mod := strings.Replace(string(raw), c.from, c.to, 1)
			path := filepath.Join(t.TempDir(), "envoy.yaml")
			if err := os.WriteFile(path, []byte(mod), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadBootstrap(path)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one naming %q", err, c.want)
			}
		})
	}
}

// Every message and field the strictness tables name must exist: a typo
// would silently refuse (or accept) the wrong thing.
func TestStrictTablesNameRealFields(t *testing.T) {
	for name, fields := range understood {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
		if err != nil {
			t.Errorf("understood: %s: %v", name, err)
			continue
		}
		md, ok := d.(protoreflect.MessageDescriptor)
		if !ok {
			t.Errorf("understood: %s is not a message", name)
			continue
		}
		for _, f := range fields {
			if md.Fields().ByName(protoreflect.Name(f)) == nil {
				t.Errorf("understood: %s has no field %s", name, f)
			}
		}
	}
	for name := range opaque {
		if _, err := protoregistry.GlobalFiles.FindDescriptorByName(name); err != nil {
			t.Errorf("opaque: %s: %v", name, err)
		}
	}
}
