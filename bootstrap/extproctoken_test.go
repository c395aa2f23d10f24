package bootstrap

import (
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/llmrouter/llmrouter/envoy"
	"github.com/llmrouter/llmrouter/internal/config"
)

// extProcMetadata returns each ext_proc filter's initial_metadata, by name.
func extProcMetadata(t *testing.T, b *bootstrapv3.Bootstrap) map[string][]*corev3.HeaderValue {
	t.Helper()
	hcm := &hcmv3.HttpConnectionManager{}
	if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	out := map[string][]*corev3.HeaderValue{}
	for _, f := range hcm.GetHttpFilters() {
		ep := &extprocv3.ExternalProcessor{}
		if f.GetTypedConfig().UnmarshalTo(ep) == nil {
			out[f.GetName()] = ep.GetGrpcService().GetInitialMetadata()
		}
	}
	if len(out) != 2 {
		t.Fatalf("found %d ext_proc filters, want 2", len(out))
	}
	return out
}

// TestExtProcToken: a gateway beyond loopback demands the shared token, so
// the rendering for it has both ext_proc filters present it (read back
// through Envoy's protos and validated); a loopback gateway gets none, and a
// token Envoy could not send unchanged is refused without echoing it.
func TestExtProcToken(t *testing.T) {
	const token = "shared-tok.3n_~+/="
	cfg := config.Default()
	cfg.Token = token
	if o := OptionsFromConfig(cfg); o.Envoy.ExtProcToken != "" {
		t.Fatalf("loopback gateway: the rendering presents the token (%q)", o.Envoy.ExtProcToken)
	}
	cfg.Gateway.Listen = "0.0.0.0:9002"
	o := OptionsFromConfig(cfg)
	for name, render := range map[string]func(Options) ([]byte, error){"default": Render, "existing": RenderExistingEnvoy} {
		out, err := render(o)
		if err != nil {
			t.Fatal(err)
		}
		b, err := envoy.LoadBootstrap(out)
		if err != nil {
			t.Fatalf("%s: rendering with the ext_proc token does not load: %v", name, err)
		}
		if err := envoy.Validate(b); err != nil {
			t.Fatal(err)
		}
		for filter, md := range extProcMetadata(t, b) {
			wantBearer(t, name+" "+filter, md, token)
		}
		if !strings.Contains(string(out), "holds a secret") {
			t.Errorf("%s: the header does not say the file holds a secret", name)
		}
	}
	for filter, md := range extProcMetadata(t, mustBuild(t, DefaultOptions())) {
		if md != nil {
			t.Errorf("default rendering: %s presents %v", filter, md)
		}
	}

	o.Envoy.ExtProcToken = "50%off"
	if _, err := Render(o); err == nil || strings.Contains(err.Error(), "50%off") || !strings.Contains(err.Error(), "token") {
		t.Fatalf("a token with %% rendered (or the error echoes it): %v", err)
	}
}

func mustBuild(t *testing.T, o Options) *bootstrapv3.Bootstrap {
	t.Helper()
	b, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
