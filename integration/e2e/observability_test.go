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
		if err := s.chat(context.Background(), chatReq{MaxTokens: 4}).Failure(); err != nil {
			t.Fatal(err)
		}
	}
	pages := map[string]string{"scheduler": s.SchedulerHTTP, "gateway": s.GatewayHTTP,
		"agent": s.Engines[0].Agent.WaitLog(t, startTimeout, "http listening", nil).Str("addr")}
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

	checkExported(t, exported, shippedExprs(t, "../../deploy/grafana/llmrouter-dashboard.json", "../../deploy/prometheus/rules.yaml"), 30)
}

// checkExported fails for every metric an expression of exprs reads that
// is not a family of exported (by name); at least min names must be read.
func checkExported(t *testing.T, exported map[string]string, exprs map[string]string, min int) {
	t.Helper()
	used := map[string][]string{} // metric -> where
	for where, expr := range exprs {
		for _, name := range metricNameRE.FindAllString(expr, -1) {
			used[name] = append(used[name], where)
		}
	}
	if len(used) < min {
		t.Fatalf("the shipped expressions read only %d metrics: %v", len(used), used)
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

// exportedFamilies scrapes each address and returns the metric families
// found, by name.
func exportedFamilies(t *testing.T, addrs ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, addr := range addrs {
		m, err := harness.Scrape(addr, "")
		if err != nil {
			t.Fatal(err)
		}
		for name := range m {
			out[name] = addr
		}
	}
	return out
}

// shippedExprs are the PromQL expressions of deploy/ files: every query of
// a dashboard (.json) and every recording and alerting rule of a rule file
// (.yaml), keyed by where they are.
func shippedExprs(t *testing.T, files ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".json") {
			dashboardExprs(t, f, data, out)
		} else {
			ruleExprs(t, data, out)
		}
	}
	return out
}

func dashboardExprs(t *testing.T, file string, data []byte, out map[string]string) {
	t.Helper()
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
			out[file+" panel "+p.Title+" "+tg.RefID] = tg.Expr
		}
	}
}

func ruleExprs(t *testing.T, data []byte, out map[string]string) {
	t.Helper()
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
}
