package bootstrap

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/llmrouter/llmrouter/envoy"
	"github.com/llmrouter/llmrouter/internal/config"
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
			[]string{filter0 + ".http_filters[3].typed_config", "Rooter"}},
		{"Any of the wrong kind", "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router", "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin",
			[]string{filter0 + "(http_connection_manager.v3.HttpConnectionManager).http_filters[3].typed_config", "does not belong here"}},
		{"invalid enum", "request_body_mode: BUFFERED", "request_body_mode: BUFFERD",
			[]string{filter0 + ".http_filters[1].typed_config.processing_mode.request_body_mode", "BUFFERD"}},
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

// metadataOf returns the initial_metadata of the xDS gRPC services of b: the
// ADS config source's and, for an existing Envoy, the fleet cluster's EDS
// config source's.
func metadataOf(t *testing.T, b *bootstrapv3.Bootstrap) (ads, eds []*corev3.HeaderValue) {
	t.Helper()
	if ac := b.GetDynamicResources().GetAdsConfig(); ac != nil {
		ads = ac.GetGrpcServices()[0].GetInitialMetadata()
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		if src := c.GetEdsClusterConfig().GetEdsConfig().GetApiConfigSource(); src != nil {
			eds = src.GetGrpcServices()[0].GetInitialMetadata()
		}
	}
	return ads, eds
}

func wantBearer(t *testing.T, where string, md []*corev3.HeaderValue, token string) {
	t.Helper()
	if len(md) != 1 || md[0].GetKey() != "authorization" || md[0].GetValue() != "Bearer "+token {
		t.Errorf("%s: initial_metadata %v, want [authorization: Bearer %s]", where, md, token)
	}
}

// With llm_scheduler.xds_token, both renderings present it on every xDS
// stream (what Envoy sends, read back from the YAML through Envoy's protos
// and their validation); without it they present nothing.
func TestXDSToken(t *testing.T) {
	const token = "tok-3n.v_~+/="
	cfg := config.Default()
	cfg.Scheduler.XDSToken = token
	o := OptionsFromConfig(cfg)
	if o.XDSToken != token {
		t.Fatalf("OptionsFromConfig: XDSToken %q", o.XDSToken)
	}

	out, err := Render(o)
	if err != nil {
		t.Fatal(err)
	}
	b, err := envoy.LoadBootstrap(out)
	if err != nil {
		t.Fatalf("rendered bootstrap with a token does not load: %v", err)
	}
	if err := envoy.Validate(b); err != nil {
		t.Fatal(err)
	}
	ads, eds := metadataOf(t, b)
	wantBearer(t, "ads_config", ads, token)
	if eds != nil {
		t.Errorf("the default bootstrap's fleet cluster takes EDS over ADS, found its own stream with %v", eds)
	}
	if !strings.Contains(string(out), "holds a\n# secret") {
		t.Errorf("the header does not say the file holds a secret:\n%s", out[:600])
	}

	out, err = RenderExistingEnvoy(o)
	if err != nil {
		t.Fatal(err)
	}
	if b, err = envoy.LoadBootstrap(out); err != nil {
		t.Fatalf("existing-Envoy rendering with a token does not load: %v", err)
	}
	if err := envoy.Validate(b); err != nil {
		t.Fatal(err)
	}
	ads, eds = metadataOf(t, b)
	if ads != nil {
		t.Errorf("existing Envoy: ADS belongs to the other control plane, found %v", ads)
	}
	wantBearer(t, "llm_backends eds_config", eds, token)

	// Tokenless: nothing presented, no secret warning; the shipped files
	// (TestShippedFilesAreRendered) are these.
	for name, render := range map[string]func(Options) ([]byte, error){"default": Render, "existing": RenderExistingEnvoy} {
		out, err := render(DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(out), "initial_metadata") || strings.Contains(string(out), "secret") {
			t.Errorf("%s rendering without a token presents metadata or warns of a secret", name)
		}
		b, err := envoy.LoadBootstrap(out)
		if err != nil {
			t.Fatal(err)
		}
		if ads, eds := metadataOf(t, b); ads != nil || eds != nil {
			t.Errorf("%s rendering without a token: initial_metadata %v %v", name, ads, eds)
		}
	}
}
