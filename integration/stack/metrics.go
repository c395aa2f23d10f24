package stack

import (
	"fmt"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/integration/harness"
)

// Counter scrapes addr's /metrics and sums name over the series whose labels
// include the pairs given; a failed scrape fails the test.
func (s *Stack) Counter(t *testing.T, addr, name string, labels ...string) float64 {
	t.Helper()
	m, err := harness.Scrape(addr, s.Opts.Token)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return m.Sum(name, labels...)
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
