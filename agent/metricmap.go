package agent

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// MetricMap is agent.metric_map, parsed: unified field → the series that
// feeds it. It overrides the adapter field by field, so any engine (BladeLLM,
// an in-house exporter) can be described in configuration.
type MetricMap map[string]selector

// selector names a metric and, optionally, labels its series must carry:
// `name` or `name{label="value",...}`.
type selector struct {
	name   string
	labels map[string]string
}

// String prints the selector in the exposition syntax parseSelector reads:
// names outside the legacy character set are quoted inside the braces, as in
// `{"my metric",pool="hot"}`, so the printed form parses back to itself.
func (s selector) String() string {
	keys := make([]string, 0, len(s.labels))
	for k := range s.labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys)+1)
	legacyName := model.LegacyValidation.IsValidMetricName(s.name)
	if !legacyName {
		parts = append(parts, strconv.Quote(s.name))
	}
	for _, k := range keys {
		key := k
		if !model.LegacyValidation.IsValidLabelName(k) {
			key = strconv.Quote(k)
		}
		parts = append(parts, key+"="+strconv.Quote(s.labels[k]))
	}
	if legacyName && len(parts) == 0 {
		return s.name
	}
	prefix := ""
	if legacyName {
		prefix = s.name
	}
	return prefix + "{" + strings.Join(parts, ",") + "}"
}

// mapFields are the unified fields agent.metric_map accepts.
var mapFields = []string{"running", "waiting", "kv_cache_usage", "prompt_tokens_total", "generation_tokens_total", "block_size", "num_gpu_blocks"}

// ParseMetricMap validates agent.metric_map. Each value is a metric name,
// optionally with label matchers in Prometheus series syntax.
func ParseMetricMap(raw map[string]string) (MetricMap, error) {
	mm := MetricMap{}
	for field, expr := range raw {
		known := false
		for _, f := range mapFields {
			known = known || f == field
		}
		if !known {
			return nil, fmt.Errorf("agent.metric_map.%s: unknown field; accepted: %s", field, strings.Join(mapFields, ", "))
		}
		sel, err := parseSelector(expr)
		if err != nil {
			return nil, fmt.Errorf("agent.metric_map.%s = %q: %w", field, expr, err)
		}
		mm[field] = sel
	}
	return mm, nil
}

// parseSelector reads `name{label="v"}` by handing it, as a sample line, to
// the same expfmt parser that reads scrapes, so the syntax is exactly the
// exposition format's.
func parseSelector(expr string) (selector, error) {
	expr = strings.TrimSpace(expr)
	if expr == "" || strings.ContainsAny(expr, "\n#") {
		return selector{}, fmt.Errorf(`want a metric name, optionally with labels: name or name{label="value"}`)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(expr + " 0\n"))
	if err != nil || len(fams) != 1 {
		return selector{}, fmt.Errorf(`want a metric name, optionally with labels: name or name{label="value"}`)
	}
	for name, mf := range fams {
		if len(mf.GetMetric()) != 1 {
			break
		}
		sel := selector{name: name, labels: map[string]string{}}
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			sel.labels[lp.GetName()] = lp.GetValue()
		}
		return sel, nil
	}
	return selector{}, fmt.Errorf(`want a metric name, optionally with labels: name or name{label="value"}`)
}

// apply overrides s's fields from their mapped series. A mapped series that
// is absent makes the field unknown rather than silently keeping the
// adapter's guess: the operator said where the number lives.
func (mm MetricMap) apply(m Metrics, s *Stats) {
	for field, sel := range mm {
		sum, okSum := m.Sum(sel.name, sel.labels)
		max, _ := m.Max(sel.name, sel.labels)
		var sumP, maxP *float64
		if okSum {
			sumP, maxP = f64(sum), f64(max)
		}
		switch field {
		case "running":
			s.Running = sumP
		case "waiting":
			s.Waiting = sumP
		case "kv_cache_usage":
			s.KVCacheUsage = maxP
		case "prompt_tokens_total":
			s.PromptTokensTotal = sumP
		case "generation_tokens_total":
			s.GenerationTokensTotal = sumP
		case "block_size":
			s.BlockSize = nil
			if okSum && max > 0 {
				s.BlockSize = i64(int64(max))
			}
		case "num_gpu_blocks":
			s.NumGPUBlocks = nil
			if okSum && sum > 0 {
				s.NumGPUBlocks = i64(int64(sum))
			}
		}
	}
}

// Missing lists the mapped series a scrape lacks, as "field=selector".
func (mm MetricMap) Missing(m Metrics) []string {
	var out []string
	for field, sel := range mm {
		if _, ok := m.Sum(sel.name, sel.labels); !ok {
			out = append(out, field+"="+sel.String())
		}
	}
	sort.Strings(out)
	return out
}
