package agent

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is one series of a scraped metric: its labels and current value.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Metrics is one scrape, flattened: metric name → its series. Counters,
// gauges and untyped series appear under their own name; histograms and
// summaries appear as name_sum and name_count (buckets and quantiles are not
// needed by any adapter). OpenMetrics *_created series are dropped: they are
// timestamps, not values, and would otherwise look like counters.
type Metrics map[string][]Sample

// ErrNoSamples is returned by Parse for input that holds no sample at all.
var ErrNoSamples = errors.New("not Prometheus text: no samples found")

// Parse reads a /metrics body. contentType is the response's Content-Type
// ("" when unknown, e.g. a file); OpenMetrics input (by content type or a
// trailing "# EOF") is first normalised into the classic text format that
// expfmt's TextParser reads.
func Parse(body []byte, contentType string) (Metrics, error) {
	if isOpenMetrics(body, contentType) {
		body = normaliseOpenMetrics(body)
	}
	if len(body) > 0 && body[len(body)-1] != '\n' {
		// The text parser reports a final line without newline as a premature
		// end of input; engines are not always that tidy.
		body = append(body[:len(body):len(body)], '\n')
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("not Prometheus text: %w", err)
	}
	m := Metrics{}
	for name, mf := range fams {
		m.addFamily(name, mf)
	}
	if len(m) == 0 {
		return nil, ErrNoSamples
	}
	return m, nil
}

func (m Metrics) addFamily(name string, mf *dto.MetricFamily) {
	if strings.HasSuffix(name, "_created") {
		return
	}
	for _, met := range mf.GetMetric() {
		labels := make(map[string]string, len(met.GetLabel()))
		for _, lp := range met.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		switch {
		case met.Counter != nil:
			m.add(name, labels, met.Counter.GetValue())
		case met.Gauge != nil:
			m.add(name, labels, met.Gauge.GetValue())
		case met.Untyped != nil:
			m.add(name, labels, met.Untyped.GetValue())
		case met.Histogram != nil:
			h := met.Histogram
			if h.SampleSum != nil {
				m.add(name+"_sum", labels, h.GetSampleSum())
			}
			switch {
			case h.SampleCount != nil:
				m.add(name+"_count", labels, float64(h.GetSampleCount()))
			case h.SampleCountFloat != nil:
				m.add(name+"_count", labels, h.GetSampleCountFloat())
			}
		case met.Summary != nil:
			s := met.Summary
			if s.SampleSum != nil {
				m.add(name+"_sum", labels, s.GetSampleSum())
			}
			if s.SampleCount != nil {
				m.add(name+"_count", labels, float64(s.GetSampleCount()))
			}
		}
	}
}

func (m Metrics) add(name string, labels map[string]string, v float64) {
	m[name] = append(m[name], Sample{Labels: labels, Value: v})
}

// Has reports whether any series of name exists.
func (m Metrics) Has(name string) bool { return len(m[name]) > 0 }

// Names lists the metric names, sorted.
func (m Metrics) Names() []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// match reports whether s carries every label of want.
func (s Sample) match(want map[string]string) bool {
	for k, v := range want {
		if s.Labels[k] != v {
			return false
		}
	}
	return true
}

// finite drops NaN and ±Inf: engines export NaN for ratios with no data yet,
// and one NaN must not poison a sum.
func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// Sum adds the finite values of name's series matching the labels (nil
// matches all). ok is false when no such series exists. Counts from several
// data-parallel engines or schedulers behind one endpoint add up.
func (m Metrics) Sum(name string, match map[string]string) (sum float64, ok bool) {
	for _, s := range m[name] {
		if s.match(match) && finite(s.Value) {
			sum += s.Value
			ok = true
		}
	}
	return sum, ok
}

// Max is the largest finite value of name's matching series. Usage ratios of
// several engines behind one endpoint take the worst one: the instance is as
// full as its fullest engine for the request that lands there.
func (m Metrics) Max(name string, match map[string]string) (max float64, ok bool) {
	for _, s := range m[name] {
		if s.match(match) && finite(s.Value) {
			if !ok || s.Value > max {
				max = s.Value
			}
			ok = true
		}
	}
	return max, ok
}

// LabelValues lists the distinct non-empty values of label over the series
// of every name accepted by keep, sorted.
func (m Metrics) LabelValues(label string, keep func(name string) bool) []string {
	seen := map[string]bool{}
	for name, ss := range m {
		if !keep(name) {
			continue
		}
		for _, s := range ss {
			if v := s.Labels[label]; v != "" {
				seen[v] = true
			}
		}
	}
	if len(seen) == 0 {
		return nil
	}
	out := make([]string, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// isOpenMetrics recognises OpenMetrics by content type or by its mandatory
// "# EOF" terminator.
func isOpenMetrics(body []byte, contentType string) bool {
	if strings.Contains(strings.ToLower(contentType), "application/openmetrics-text") {
		return true
	}
	tail := bytes.TrimRight(body, " \t\r\n")
	return bytes.HasSuffix(tail, []byte("# EOF"))
}

// normaliseOpenMetrics rewrites the few OpenMetrics-only constructs the
// classic text parser rejects: the "# EOF" and "# UNIT" lines, metric types
// it does not know (unknown, info, stateset), and exemplars and float
// timestamps after a sample's value. Only the shape of lines is touched; the
// samples are still parsed by expfmt.
func normaliseOpenMetrics(body []byte) []byte {
	var out bytes.Buffer
	out.Grow(len(body))
	for _, line := range bytes.Split(body, []byte("\n")) {
		line = bytes.TrimRight(line, "\r")
		trimmed := bytes.TrimLeft(line, " \t")
		switch {
		case len(trimmed) == 0:
			continue
		case trimmed[0] == '#':
			fields := strings.Fields(string(trimmed[1:]))
			if len(fields) > 0 && (fields[0] == "EOF" || fields[0] == "UNIT") {
				continue
			}
			if len(fields) == 3 && fields[0] == "TYPE" {
				switch strings.ToLower(fields[2]) {
				case "unknown", "info", "stateset":
					out.WriteString("# TYPE " + fields[1] + " untyped\n")
					continue
				}
			}
			out.Write(line)
		default:
			out.Write(stripAfterValue(trimmed))
		}
		out.WriteByte('\n')
	}
	return out.Bytes()
}

// stripAfterValue keeps a sample line's name, labels and value and drops
// what follows (timestamp, exemplar). Braces inside quoted label values are
// skipped so they cannot end the label set early.
func stripAfterValue(line []byte) []byte {
	end := -1 // index just past the series identifier
	if open := bytes.IndexByte(line, '{'); open >= 0 && !bytes.ContainsAny(line[:open], " \t") {
		inQuote, esc := false, false
		for i := open + 1; i < len(line); i++ {
			c := line[i]
			switch {
			case esc:
				esc = false
			case c == '\\' && inQuote:
				esc = true
			case c == '"':
				inQuote = !inQuote
			case c == '}' && !inQuote:
				end = i + 1
			}
			if end >= 0 {
				break
			}
		}
		if end < 0 {
			return line // unbalanced: let the parser report it
		}
	} else {
		end = bytes.IndexAny(line, " \t")
		if end < 0 {
			return line
		}
	}
	rest := strings.Fields(string(line[end:]))
	if len(rest) == 0 {
		return line
	}
	out := make([]byte, 0, end+1+len(rest[0]))
	out = append(out, line[:end]...)
	out = append(out, ' ')
	return append(out, rest[0]...)
}
