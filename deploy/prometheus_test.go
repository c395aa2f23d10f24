package deploy

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	_ "github.com/prometheus/prometheus/discovery/kubernetes" // kubernetes_sd_configs in prometheus.yaml
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

var promql = parser.NewParser(parser.Options{})

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// metricNameRE is how integration/e2e (in the main module, which does not
// depend on Prometheus's packages) finds the metric names an expression
// reads; TestNameExtractionMatchesParser keeps it honest.
var metricNameRE = regexp.MustCompile(`\bllmrouter_[a-z0-9_]+`)

// selectorNames returns the llmrouter_ metric names expr selects, by
// Prometheus's parser.
func selectorNames(t *testing.T, expr string) []string {
	t.Helper()
	e, err := promql.ParseExpr(expr)
	if err != nil {
		t.Errorf("%q: %v", expr, err)
		return nil
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual && strings.HasPrefix(m.Value, "llmrouter_") {
					names = append(names, m.Value)
				}
			}
		}
		return nil
	})
	sort.Strings(names)
	return slices.Compact(names)
}

// dashboards are the shipped Grafana dashboards: the main one and the
// optional prefill/decode one (its metrics exist only with pd-split and pd
// proxies).
var dashboards = []string{"grafana/llmrouter-dashboard.json", "grafana/llmrouter-pd-dashboard.json"}

// dashboardExprs returns every query of a dashboard by panel title.
func dashboardExprs(t *testing.T, file string) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr         string `json:"expr"`
				LegendFormat string `json:"legendFormat"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	out := map[string][]string{}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.LegendFormat == "" {
				t.Errorf("panel %q: query %q has no legend", p.Title, tg.Expr)
			}
			out[p.Title] = append(out[p.Title], tg.Expr)
		}
	}
	return out
}

// ruleExprs returns every expression of the rule file, loaded with
// Prometheus's rule loader (unknown fields, bad PromQL, bad templates and
// duplicate names fail).
func ruleExprs(t *testing.T) (exprs map[string]string, alerts []string) {
	t.Helper()
	groups, errs := rulefmt.ParseFile("prometheus/rules.yaml", false, model.UTF8Validation, promql, quiet)
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	exprs = map[string]string{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			name := r.Record
			if r.Alert != "" {
				name = r.Alert
				alerts = append(alerts, r.Alert)
			}
			exprs[name] = r.Expr
		}
	}
	return exprs, alerts
}

// The dashboard: every panel has a query and a legend, and every query
// parses as PromQL.
func TestDashboard(t *testing.T) {
	for _, f := range dashboards[1:] {
		if n := len(dashboardExprs(t, f)); n < 4 {
			t.Errorf("%s has %d panels with queries", f, n)
		}
		for _, es := range dashboardExprs(t, f) {
			for _, e := range es {
				if len(selectorNames(t, e)) == 0 {
					t.Errorf("%s: %q reads no llmrouter metric", f, e)
				}
			}
		}
	}
	exprs := dashboardExprs(t, dashboards[0])
	if len(exprs) < 20 {
		t.Fatalf("dashboard has %d panels with queries", len(exprs))
	}
	// The panel families the dashboard must have.
	joined := ""
	for title, es := range exprs {
		joined += title + " " + strings.Join(es, " ") + "\n"
		for _, e := range es {
			selectorNames(t, e)
		}
	}
	for _, want := range []string{"llmrouter_xds_connected_clients", "llmrouter_xds_pushes_total", "llmrouter_xds_nacks_total",
		"llmrouter_agent_scheduler_connected", "llmrouter_agent_scrape_errors_total", "llmrouter_build_info"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no dashboard panel reads %s", want)
		}
	}
}

// The rule file loads with Prometheus's loader and alerts on what the
// operator must know about.
func TestRules(t *testing.T) {
	_, alerts := ruleExprs(t)
	for _, want := range []string{"LLMRouterSchedulerDown", "LLMRouterGatewayDegraded", "LLMRouterGatewayUnauthenticated",
		"LLMRouterFallbacksRising", "LLMRouterInstancesFlapping", "LLMRouterFleetSilent", "LLMRouterQueueFull"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("rules.yaml has no alert %s", want)
		}
	}
	// A misspelt key is refused.
	data, _ := os.ReadFile("prometheus/rules.yaml")
	bad := strings.Replace(string(data), "expr:", "exrp:", 1)
	if _, errs := rulefmt.Parse([]byte(bad), false, model.UTF8Validation, promql, quiet); len(errs) == 0 {
		t.Error("rules.yaml with a misspelt key loads")
	}
}

// The scrape configuration loads with Prometheus's own loader (strict).
func TestPrometheusConfig(t *testing.T) {
	cfg, err := config.LoadFile("prometheus/prometheus.yaml", false, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.ScrapeConfigs) != 1 || len(cfg.RuleFiles) != 1 {
		t.Fatalf("%d scrape configs, %d rule files", len(cfg.ScrapeConfigs), len(cfg.RuleFiles))
	}
	data, _ := os.ReadFile("prometheus/prometheus.yaml")
	bad := strings.Replace(string(data), "relabel_configs:", "relabel_config:", 1)
	if _, err := config.Load(bad, quiet); err == nil {
		t.Error("prometheus.yaml with a misspelt key loads")
	}
	// The rule alerts' job/app matchers name what the relabelling produces.
	exprs, _ := ruleExprs(t)
	job := cfg.ScrapeConfigs[0].JobName
	for name, e := range exprs {
		if strings.Contains(e, "job=") && !strings.Contains(e, `job="`+job+`"`) {
			t.Errorf("rule %s matches a job other than %q: %s", name, job, e)
		}
	}
}

// The main module's integration test finds metric names with metricNameRE;
// here Prometheus's parser agrees with it on every shipped expression.
func TestNameExtractionMatchesParser(t *testing.T) {
	var all []string
	for _, f := range dashboards {
		for _, es := range dashboardExprs(t, f) {
			all = append(all, es...)
		}
	}
	exprs, _ := ruleExprs(t)
	for _, e := range exprs {
		all = append(all, e)
	}
	for _, e := range all {
		byParser := selectorNames(t, e)
		byRE := metricNameRE.FindAllString(e, -1)
		sort.Strings(byRE)
		byRE = slices.Compact(byRE)
		if !slices.Equal(byParser, byRE) {
			t.Errorf("%q: parser finds %v, the integration test's pattern %v", e, byParser, byRE)
		}
	}
}
