package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"go.yaml.in/yaml/v3"

	"github.com/llmrouter/llmrouter/integration/harness"
)

// metricNameRE finds the metric names a PromQL expression reads; the deploy
// module's TestNameExtractionMatchesParser checks that it agrees with
// Prometheus's own parser on every shipped expression.
var metricNameRE = regexp.MustCompile(`\bllmrouter_[a-z0-9_]+`)

// TestObservabilityFilesMatchTheSystem: the scheduler, a gateway and three
// agents as separate processes, a few requests through the data plane; then
// every metric the shipped dashboard and Prometheus rules read exists in a
// role's /metrics (a healthy system draws every panel and evaluates every
// alert), and each role's /metrics passes client_golang's promlint.
func TestObservabilityFilesMatchTheSystem(t *testing.T) {
	s := startSystem(t, options{policy: "prefix-cache", split: true})
	for range 4 {
		if err := s.chat(context.Background(), chatReq{maxTokens: 4}).failure(); err != nil {
			t.Fatal(err)
		}
	}
	pages := map[string]string{"scheduler": s.schedHTTP, "gateway": s.gwHTTP,
		"agent": s.engines[0].agent.WaitLog(t, startTimeout, "http listening", nil).Str("addr")}
	exported := map[string]string{} // family name -> role
	for role, addr := range pages {
		body, err := harness.Get("http://"+addr+"/metrics", "")
		if err != nil {
			t.Fatalf("%s /metrics: %v", role, err)
		}
		problems, err := promlint.New(bytes.NewReader(body)).Lint()
		if err != nil {
			t.Fatalf("%s /metrics: %v", role, err)
		}
		for _, p := range problems {
			t.Errorf("%s /metrics: promlint: %s: %s", role, p.Metric, p.Text)
		}
		m, err := harness.Scrape(addr, "")
		if err != nil {
			t.Fatal(err)
		}
		for name := range m {
			exported[name] = role
		}
	}

	used := map[string][]string{} // metric -> where
	for where, expr := range shippedExprs(t) {
		for _, name := range metricNameRE.FindAllString(expr, -1) {
			used[name] = append(used[name], where)
		}
	}
	if len(used) < 30 {
		t.Fatalf("the dashboard and rules read only %d metrics: %v", len(used), used)
	}
	var missing []string
	for name, where := range used {
		base := name
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, suf); ok {
				if _, hist := exported[b]; hist {
					base = b
				}
			}
		}
		if _, ok := exported[base]; !ok {
			sort.Strings(where)
			missing = append(missing, name+" (read by "+strings.Join(where, "; ")+")")
		}
	}
	sort.Strings(missing)
	for _, m := range missing {
		t.Errorf("not exported by any role of a running system: %s", m)
	}
}

// shippedExprs are the PromQL expressions of deploy/: every dashboard query
// and every recording and alerting rule, keyed by where they are.
func shippedExprs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	data, err := os.ReadFile("../../deploy/grafana/llmrouter-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			out["dashboard panel "+p.Title+" "+tg.RefID] = tg.Expr
		}
	}
	data, err = os.ReadFile("../../deploy/prometheus/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Record string `yaml:"record"`
				Alert  string `yaml:"alert"`
				Expr   string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(data, &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out["rule "+r.Record+r.Alert] = r.Expr
		}
	}
	return out
}
