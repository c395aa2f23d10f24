package bootstrap

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/llmrouter/llmrouter/envoy"
)

// The shipped files are the renderer's output; a change to package envoy
// that is not rendered again fails here.
func TestShippedFilesAreRendered(t *testing.T) {
	for _, tc := range []struct {
		file    string
		shipped []byte
		render  func(Options) ([]byte, error)
	}{
		{"envoy.yaml", DefaultYAML, Render},
		{"existing-envoy.yaml", ExistingEnvoyYAML, RenderExistingEnvoy},
	} {
		got, err := tc.render(DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(tc.shipped) {
			t.Errorf("bootstrap/%s differs from the rendered default; regenerate it:\n  go run ./cmd/llmrouter bootstrap%s > bootstrap/%s",
				tc.file, map[bool]string{true: " --existing-envoy"}[tc.file != "envoy.yaml"], tc.file)
		}
	}
}

func yamlFiles(t *testing.T) []string {
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("found only %v", files)
	}
	return files
}

func TestEveryYAMLValidates(t *testing.T) {
	for _, f := range yamlFiles(t) {
		if _, err := envoy.LoadBootstrapFile(f); err != nil {
			t.Errorf("%v", err)
		}
	}
}

// Broken copies of the shipped file fail, and the error names the field.
func TestBrokenCopiesNameTheField(t *testing.T) {
	filter0 := "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
	cases := []struct {
		name, old, new string
		want           []string
	}{
		{"misspelt field", "connect_timeout: 1s", "conect_timeout: 1s",
			[]string{"static_resources.clusters[0].conect_timeout", `unknown field "conect_timeout"`}},
		{"unknown Any type", "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "type.googleapis.com/envoy.extensions.filters.http.router.v3.Rooter",
			[]string{filter0 + ".http_filters[2].typed_config", "Rooter"}},
		{"Any of the wrong kind", "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin",
			[]string{filter0 + "(http_connection_manager.v3.HttpConnectionManager).http_filters[2].typed_config", "does not belong here"}},
		{"invalid enum", "request_body_mode: BUFFERED", "request_body_mode: BUFFERD",
			[]string{filter0 + ".http_filters[0].typed_config.processing_mode.request_body_mode", "BUFFERD"}},
		{"PGV rule", "port_value: 18000", "port_value: 70000",
			[]string{"static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value", "65535"}},
		{"PGV rule inside Any", "stat_prefix: llmrouter", "stat_prefix: ''",
			[]string{filter0 + "(http_connection_manager.v3.HttpConnectionManager).stat_prefix"}},
	}
	dir := t.TempDir()
	for _, tc := range cases {
		src := string(DefaultYAML)
		if !strings.Contains(src, tc.old) {
			t.Fatalf("%s: %q not in envoy.yaml", tc.name, tc.old)
		}
		f := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
		if err := os.WriteFile(f, []byte(strings.Replace(src, tc.old, tc.new, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := envoy.LoadBootstrapFile(f)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, w := range append(tc.want, f) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error does not contain %q:\n%v", tc.name, w, err)
			}
		}
	}
}

func TestOptions(t *testing.T) {
	o := DefaultOptions()
	o.Delta = true
	o.XDSAddress = "scheduler:18000"
	o.ExtProcAddress = "10.1.2.3:9002"
	o.AdminAddress = "127.0.0.1:9911"
	o.Envoy.Listen = ":10000"
	b, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := envoy.Validate(b); err != nil {
		t.Fatal(err)
	}
	if got := b.GetDynamicResources().GetAdsConfig().GetApiType(); got != corev3.ApiConfigSource_DELTA_GRPC {
		t.Errorf("delta: api_type %v", got)
	}
	xds := b.GetStaticResources().GetClusters()[0]
	if xds.GetName() != envoy.XDSCluster || xds.GetType().String() != "STRICT_DNS" {
		t.Errorf("xds cluster by name must resolve by DNS: %v", xds)
	}
	sa := xds.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if sa.GetAddress() != "scheduler" || sa.GetPortValue() != 18000 {
		t.Errorf("xds address: %v", sa)
	}
	if b.GetStaticResources().GetClusters()[1].GetType().String() != "STATIC" {
		t.Errorf("ext_proc at an IP must be STATIC")
	}
	if p := b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue(); p != 9911 {
		t.Errorf("admin port %d", p)
	}
	if p := b.GetStaticResources().GetListeners()[0].GetAddress().GetSocketAddress().GetPortValue(); p != 10000 {
		t.Errorf("listen port %d", p)
	}
	o.XDSAddress = "no-port"
	if _, err := Build(o); err == nil || !strings.Contains(err.Error(), "--xds") {
		t.Errorf("bad xds address: %v", err)
	}
}

func TestDialable(t *testing.T) {
	for in, want := range map[string]string{":18000": "127.0.0.1:18000", "0.0.0.0:1": "127.0.0.1:1", "10.0.0.5:2": "10.0.0.5:2", "junk": "127.0.0.1:9"} {
		if got := dialable(in, "9"); got != want {
			t.Errorf("dialable(%q) = %q, want %q", in, got, want)
		}
	}
}
