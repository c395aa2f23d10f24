package deploy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/llmrouter/llmrouter/bootstrap"
	"github.com/llmrouter/llmrouter/envoy"
	"github.com/llmrouter/llmrouter/internal/config"
)

var update = flag.Bool("update", false, "rewrite the generated deployment files")

func render(t *testing.T, xds, extproc string) []byte {
	t.Helper()
	o := bootstrap.OptionsFromConfig(config.Default())
	o.XDSAddress, o.ExtProcAddress = xds, extproc
	out, err := bootstrap.Render(o)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// check compares a generated file with its rendering, rewriting it with -update.
func check(t *testing.T, path string, want []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from its rendering: run go test . -update in deploy/", path)
	}
}

func TestComposeEnvoyConfig(t *testing.T) {
	out := render(t, "172.28.0.10:18000", "172.28.0.10:9002")
	check(t, "docker-compose/envoy.yaml", out)
	if _, err := envoy.LoadBootstrap(out); err != nil {
		t.Fatal(err)
	}
	compose, err := os.ReadFile("docker-compose/docker-compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The router's fixed address must be the one the bootstrap dials.
	if !strings.Contains(string(compose), "ipv4_address: 172.28.0.10") {
		t.Fatal("docker-compose.yaml no longer pins the router at 172.28.0.10")
	}
}

func TestKubernetesManifest(t *testing.T) {
	head, err := os.ReadFile("kubernetes/llmrouter.head.yaml")
	if err != nil {
		t.Fatal(err)
	}
	envoyYAML := render(t, "llmrouter-scheduler.llmrouter.svc.cluster.local:18000", "127.0.0.1:9002")
	if _, err := envoy.LoadBootstrap(envoyYAML); err != nil {
		t.Fatal(err)
	}
	var cm bytes.Buffer
	cm.WriteString("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: llmrouter-envoy, namespace: llmrouter}\ndata:\n  envoy.yaml: |\n")
	for _, line := range strings.SplitAfter(string(envoyYAML), "\n") {
		if line != "" {
			cm.WriteString("    " + line)
		}
	}
	check(t, "kubernetes/llmrouter.yaml", append(append([]byte{}, head...), cm.Bytes()...))

	// Every document parses, and the ConfigMap holds exactly the rendering.
	dec := yaml.NewDecoder(bytes.NewReader(append(head, cm.Bytes()...)))
	kinds := map[string]int{}
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			break
		}
		kind, _ := doc["kind"].(string)
		kinds[kind]++
		if kind == "ConfigMap" {
			data := doc["data"].(map[string]any)
			if data["envoy.yaml"] != string(envoyYAML) {
				t.Fatal("ConfigMap envoy.yaml differs from the rendering")
			}
		}
	}
	if kinds["Deployment"] != 4 || kinds["Service"] != 4 || kinds["ConfigMap"] != 1 {
		t.Fatalf("manifest kinds = %v", kinds)
	}
}

// The Istio EnvoyFilter and the Envoy Gateway policy embed Envoy API
// fragments; each is validated against Envoy's protos.
func TestIstioPatchesAreValidEnvoyConfig(t *testing.T) {
	data, err := os.ReadFile("istio/envoyfilter.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Spec struct {
			ConfigPatches []struct {
				ApplyTo string `yaml:"applyTo"`
				Patch   struct {
					Operation string         `yaml:"operation"`
					Value     map[string]any `yaml:"value"`
				} `yaml:"patch"`
			} `yaml:"configPatches"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var filters, clusters int
	for i, p := range doc.Spec.ConfigPatches {
		raw, err := json.Marshal(p.Patch.Value)
		if err != nil {
			t.Fatal(err)
		}
		switch p.ApplyTo {
		case "HTTP_FILTER":
			filters++
			if err := validateFragment(raw, "http_filter"); err != nil {
				t.Errorf("patch %d (HTTP_FILTER): %v", i, err)
			}
		case "CLUSTER":
			clusters++
			if err := validateFragment(raw, "cluster"); err != nil {
				t.Errorf("patch %d (CLUSTER): %v", i, err)
			}
		}
	}
	if filters != 2 || clusters < 1 {
		t.Fatalf("want both ext_proc filters and the cluster patches, got %d filters, %d clusters", filters, clusters)
	}
}

// validateFragment checks a filter or (partial) cluster by placing it in a
// minimal bootstrap and validating that.
func validateFragment(raw []byte, kind string) error {
	var boot string
	switch kind {
	case "http_filter":
		boot = `{"static_resources":{"listeners":[{"name":"l","address":{"socket_address":{"address":"127.0.0.1","port_value":1}},
"filter_chains":[{"filters":[{"name":"envoy.filters.network.http_connection_manager","typed_config":{
"@type":"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
"stat_prefix":"s","route_config":{"name":"r"},"http_filters":[` + string(raw) + `,
{"name":"envoy.filters.http.router","typed_config":{"@type":"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}]}}`
	case "cluster":
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		if _, ok := m["name"]; !ok {
			m["name"] = "merged"
		}
		raw, _ = json.Marshal(m)
		boot = `{"static_resources":{"clusters":[` + string(raw) + `]}}`
	}
	_, err := envoy.LoadBootstrap([]byte(boot))
	return err
}

// docker-compose publishes only ports something serves: the all-in-one's
// own listeners (it serves every part's HTTP endpoints on the scheduler's
// HTTP port, not on llm_gateway.http_listen) and Envoy's listener.
func TestComposePublishesServedPorts(t *testing.T) {
	data, err := os.ReadFile("docker-compose/docker-compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Command     []string          `yaml:"command"`
			Ports       []string          `yaml:"ports"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatal(err)
	}
	port := func(addr string) string { return addr[strings.LastIndex(addr, ":")+1:] }
	def := config.Default()
	published := 0
	for name, svc := range compose.Services {
		served := map[string]bool{}
		switch {
		case len(svc.Command) > 0 && svc.Command[0] == "all-in-one":
			for key, addr := range map[string]string{
				"LLMROUTER_LLM_SCHEDULER_LISTEN":      def.Scheduler.Listen,
				"LLMROUTER_LLM_SCHEDULER_XDS_LISTEN":  def.Scheduler.XDSListen,
				"LLMROUTER_LLM_SCHEDULER_HTTP_LISTEN": def.Scheduler.HTTPListen,
				"LLMROUTER_LLM_GATEWAY_LISTEN":        def.Gateway.Listen,
			} {
				if v := svc.Environment[key]; v != "" {
					addr = v
				}
				served[port(addr)] = true
			}
		case len(svc.Command) > 0 && svc.Command[0] == "envoy":
			served["8080"] = true // the rendered bootstrap's listener (TestComposeEnvoyConfig)
		}
		for _, p := range svc.Ports {
			published++
			if !served[port(p)] {
				t.Errorf("service %s publishes %s, which nothing in it serves", name, p)
			}
		}
	}
	if published == 0 {
		t.Fatal("docker-compose.yaml publishes no port")
	}
}
