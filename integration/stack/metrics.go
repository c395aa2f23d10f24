package stack

import (
	"fmt"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/integration/harness"
)

// Sum adds every series of name whose labels include the pairs given
// (histograms count their samples).
func Sum(m harness.Metrics, name string, labels ...string) float64 {
	f := m[name]
	if f == nil {
		return 0
	}
	total := 0.0
next:
	for _, s := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range s.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
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

// Counter scrapes addr's /metrics and sums name over the series whose labels
// include the pairs given; a failed scrape fails the test.
func (s *Stack) Counter(t *testing.T, addr, name string, labels ...string) float64 {
	t.Helper()
	m, err := harness.Scrape(addr, s.Opts.Token)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return Sum(m, name, labels...)
}

// WaitGauge polls name on addr until it equals want.
func (s *Stack) WaitGauge(t *testing.T, timeout time.Duration, addr, name string, want float64) {
	t.Helper()
	harness.Eventually(t, timeout, fmt.Sprintf("%s = %g on %s", name, want, addr), func() error {
		m, err := harness.Scrape(addr, s.Opts.Token)
		if err != nil {
			return err
		}
		if v, ok := m.Value(name); !ok || v != want {
			return fmt.Errorf("%s", m.Series(name))
		}
		return nil
	})
}
