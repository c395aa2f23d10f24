package harness

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/llmrouter/llmrouter/internal/promtest"
)

// Metrics is one parsed /metrics page.
type Metrics map[string]*dto.MetricFamily

// Scrape fetches and parses http://addr/metrics (Prometheus text).
func Scrape(addr, token string) (Metrics, error) {
	body, err := Get("http://"+addr+"/metrics", token)
	if err != nil {
		return nil, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse http://%s/metrics: %w", addr, err)
	}
	return Metrics(fams), nil
}

// Value returns the value of the gauge, counter or untyped series name whose
// labels include the given pairs (label, value, label, value...). ok is false
// when no series matches.
func (m Metrics) Value(name string, labels ...string) (v float64, ok bool) {
	for _, s := range m[name].GetMetric() {
		if !promtest.HasLabels(s, labels...) {
			continue
		}
		switch {
		case s.Gauge != nil:
			return s.Gauge.GetValue(), true
		case s.Counter != nil:
			return s.Counter.GetValue(), true
		case s.Untyped != nil:
			return s.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// Sum adds every series of name whose labels include the given pairs
// (histograms count their samples); 0 when none does.
func (m Metrics) Sum(name string, labels ...string) float64 {
	total := 0.0
	for _, s := range m[name].GetMetric() {
		if !promtest.HasLabels(s, labels...) {
			continue
		}
		switch {
		case s.Counter != nil:
			total += s.Counter.GetValue()
		case s.Gauge != nil:
			total += s.Gauge.GetValue()
		case s.Histogram != nil:
			total += float64(s.Histogram.GetSampleCount())
		case s.Untyped != nil:
			total += s.Untyped.GetValue()
		}
	}
	return total
}

// Series lists name's series as "label=value,..." strings, sorted, for
// error messages.
func (m Metrics) Series(name string) string {
	f := m[name]
	if f == nil {
		return name + ": absent"
	}
	var out []string
	for _, s := range f.GetMetric() {
		var ls []string
		for _, lp := range s.GetLabel() {
			ls = append(ls, lp.GetName()+"="+lp.GetValue())
		}
		var v float64
		switch {
		case s.Gauge != nil:
			v = s.Gauge.GetValue()
		case s.Counter != nil:
			v = s.Counter.GetValue()
		case s.Untyped != nil:
			v = s.Untyped.GetValue()
		}
		out = append(out, fmt.Sprintf("{%s} %g", strings.Join(ls, ","), v))
	}
	sort.Strings(out)
	return name + " " + strings.Join(out, " ")
}
