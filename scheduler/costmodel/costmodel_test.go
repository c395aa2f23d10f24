package costmodel

import (
	"math"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
)

func TestFromConfigAndFormulas(t *testing.T) {
	pc := config.DefaultCostModel()
	pc.StepTime, pc.PrefillTokenTime, pc.DecodeTokenTime, pc.MaxBatchedTokens = 10*time.Millisecond, 20*time.Microsecond, 100*time.Microsecond, 1000
	m := FromConfig(pc)
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-12*math.Max(1, math.Abs(want)) {
			t.Errorf("%s = %g, want %g", name, got, want)
		}
	}
	near("StepTime(10)", m.StepTime(10), 0.011)
	// A chunk of 1000 tokens takes 10 ms + 20 ms + 10 × 0.1 ms = 31 ms.
	near("PrefillRate(10)", m.PrefillRate(10), 1000/0.031)
	// 10 running at 1/0.011 steps a second generate 909 tokens/s: speed 1.
	near("Work at model speed", m.Work(10, 10/0.011, 0, 1), 1)
	// Ten times slower, plus 500 uncached prompt tokens/s (10 ms of work).
	near("Work slow", m.Work(10, 1/0.011, 1000, 0.5), 0.1+0.01)
	near("Work idle", m.Work(0, 100, 100, 1), 0)
}
