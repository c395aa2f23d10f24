package cluster

import (
	"context"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/sim/workload"
)

func TestSpeedsValidated(t *testing.T) {
	src := multiTurn(t, nil)
	for _, c := range []struct {
		speeds []float64
		want   string
	}{
		{[]float64{1, 1}, "speeds: 2 values for 3 instances: want one per instance"},
		{[]float64{1, 1, 1, 1}, "speeds: 4 values for 3 instances"},
		{[]float64{1, 0, 1}, "speeds[1]: engine speed 0: want a number from 0.01 to 100"},
		{[]float64{1, 1, -0.5}, "speeds[2]: engine speed -0.5"},
		{[]float64{math.NaN(), 1, 1}, "speeds[0]: engine speed NaN"},
		{[]float64{1, math.Inf(1), 1}, "speeds[1]: engine speed +Inf"},
		{[]float64{1, 1, 1000}, "speeds[2]: engine speed 1000"},
	} {
		o := opts(src, 3, workload.Arrivals{Concurrency: 1}, time.Second)
		o.Speeds = c.speeds
		_, err := Run(context.Background(), o, "round-robin")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("speeds %v: error %v, want it to contain %q", c.speeds, err, c.want)
		}
	}
}

// A bounded closed loop has no clock of its own (each turn follows the
// previous reply at once), so on one instance a run at half speed is the same
// run stretched twice as long; only the scheduler's ticks and the agents'
// reports keep their period, and on an unsaturated single instance they
// change no decision.
func TestHalfSpeedInstanceTakesTwiceAsLong(t *testing.T) {
	src := multiTurn(t, func(m *workload.MultiTurn) { m.Conversations, m.Groups = 30, 2 })
	o := opts(src, 1, workload.Arrivals{Concurrency: 4}, 0)
	full := run(t, o, "least-request")
	o.Speeds = []float64{0.5}
	half := run(t, o, "least-request")
	if full.Failed != 0 || half.Failed != 0 || half.Requests != full.Requests || full.Requests < 100 {
		t.Fatalf("requests %d / %d, failed %d / %d: want the same real run", full.Requests, half.Requests, full.Failed, half.Failed)
	}
	for _, m := range []struct {
		name             string
		full, half, want float64
	}{
		{"run duration (s)", full.DurationS, half.DurationS, 2},
		{"mean TTFT (ms)", full.TTFTMeanMs, half.TTFTMeanMs, 2},
		{"p99 TTFT (ms)", full.TTFTP99Ms, half.TTFTP99Ms, 2},
		{"mean TPOT (ms)", full.TPOTMeanMs, half.TPOTMeanMs, 2},
		{"output tok/s", full.OutputThroughput, half.OutputThroughput, 0.5},
	} {
		r := m.half / m.full
		t.Logf("%s: speed 1 %.3f, speed 0.5 %.3f (ratio %.3f)", m.name, m.full, m.half, r)
		if math.Abs(r-m.want) > 0.05*m.want {
			t.Errorf("%s: speed 1 %.3f, speed 0.5 %.3f: ratio %.3f, want %g ± 5%%", m.name, m.full, m.half, r, m.want)
		}
	}
	if *half.PrefixHitRatio != *full.PrefixHitRatio || half.InputTokens != full.InputTokens {
		t.Errorf("hit ratio %.4f vs %.4f, input tokens %d vs %d: the same run must cache the same", *full.PrefixHitRatio, *half.PrefixHitRatio, full.InputTokens, half.InputTokens)
	}
}

// reportRates averages the rates each instance's agent reported while it had
// work.
type reportRates struct {
	prompt, gen []float64
	n           []int
	lastHit     []float64
}

func newReportRates(n int) *reportRates {
	return &reportRates{prompt: make([]float64, n), gen: make([]float64, n), n: make([]int, n), lastHit: make([]float64, n)}
}

func (r *reportRates) observe(i int, rep *llmrouterv1.Report) {
	r.lastHit[i] = rep.PrefixCacheHitRatio
	if rep.Running+rep.Waiting == 0 {
		return
	}
	r.prompt[i] += rep.PromptTokensPerSecond
	r.gen[i] += rep.GenerationTokensPerSecond
	r.n[i]++
}

func (r *reportRates) mean(i int) (prompt, gen float64) {
	return r.prompt[i] / float64(r.n[i]), r.gen[i] / float64(r.n[i])
}

func TestSlowInstanceReportsLowerRates(t *testing.T) {
	// The same saturating closed loop on one instance at speed 1 and 0.5:
	// the agent's token rates halve, its hit ratio does not move.
	src := multiTurn(t, func(m *workload.MultiTurn) { m.Conversations, m.Groups = 120, 2 })
	rates := map[float64]*reportRates{}
	for _, sp := range []float64{1, 0.5} {
		o := opts(src, 1, workload.Arrivals{Concurrency: 48}, 0)
		o.Speeds = []float64{sp}
		rr := newReportRates(1)
		o.OnReport = rr.observe
		r := run(t, o, "least-request")
		if r.Failed != 0 || rr.n[0] < 10 {
			t.Fatalf("speed %g: %d failed, %d busy reports: want a real run", sp, r.Failed, rr.n[0])
		}
		rates[sp] = rr
	}
	p1, g1 := rates[1].mean(0)
	p2, g2 := rates[0.5].mean(0)
	t.Logf("speed 1: prompt %.0f tok/s, generation %.0f tok/s, hit %.3f; speed 0.5: %.0f, %.0f, %.3f",
		p1, g1, rates[1].lastHit[0], p2, g2, rates[0.5].lastHit[0])
	if r := p2 / p1; r < 0.4 || r > 0.6 {
		t.Errorf("reported prompt tok/s: speed 0.5 %.0f over speed 1 %.0f = %.2f, want about 0.5", p2, p1, r)
	}
	if r := g2 / g1; r < 0.4 || r > 0.6 {
		t.Errorf("reported generation tok/s: speed 0.5 %.0f over speed 1 %.0f = %.2f, want about 0.5", g2, g1, r)
	}
	if h1, h2 := rates[1].lastHit[0], rates[0.5].lastHit[0]; h1 <= 0 || math.Abs(h1-h2) > 0.02 {
		t.Errorf("reported prefix hit ratio: speed 1 %.3f, speed 0.5 %.3f: want the same, above 0", h1, h2)
	}

	// In one fleet under least-request both instances hold about as many
	// requests, so the slow one generates about half as fast and serves
	// fewer.
	o := opts(multiTurn(t, nil), 2, workload.Arrivals{Concurrency: 96}, time.Minute)
	o.Speeds = []float64{1, 0.5}
	rr := newReportRates(2)
	o.OnReport = rr.observe
	r := run(t, o, "least-request")
	_, fast := rr.mean(0)
	_, slow := rr.mean(1)
	t.Logf("mixed fleet: generation %.0f vs %.0f tok/s, requests %v", fast, slow, r.PerInstance)
	if ratio := slow / fast; ratio < 0.35 || ratio > 0.7 {
		t.Errorf("mixed fleet: the slow instance reported %.0f generation tok/s, the fast %.0f (ratio %.2f): want about 0.5", slow, fast, ratio)
	}
	if r.PerInstance[1].Requests*10 > r.PerInstance[0].Requests*7 {
		t.Errorf("mixed fleet: the slow instance served %d requests, the fast %d: want clearly fewer", r.PerInstance[1].Requests, r.PerInstance[0].Requests)
	}
}

func TestSpeedsDefaultAndDeterminism(t *testing.T) {
	src := multiTurn(t, nil)
	o := opts(src, 3, workload.Arrivals{Rate: 15}, time.Minute)
	base := run(t, o, "prefix-cache")
	// All at speed 1 is the default fleet, exactly.
	o.Speeds = []float64{1, 1, 1}
	if ones := run(t, o, "prefix-cache"); !reflect.DeepEqual(base, ones) {
		t.Fatalf("speeds 1,1,1 differ from no speeds:\n%+v\n%+v", base.Summary, ones.Summary)
	}
	// A mixed fleet is deterministic for a seed, and different.
	o.Speeds = []float64{1, 0.5, 0.5}
	a, b := run(t, o, "prefix-cache"), run(t, o, "prefix-cache")
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("two runs of speeds 1,0.5,0.5 differ:\n%+v\n%+v", a.Summary, b.Summary)
	}
	if a.TTFTMeanMs <= base.TTFTMeanMs {
		t.Fatalf("two half-speed instances: mean TTFT %.1f ms, all at speed 1 %.1f ms: want slower", a.TTFTMeanMs, base.TTFTMeanMs)
	}
	found := false
	for _, kv := range a.Extra {
		found = found || kv.Key == "Instance speeds" && strings.Contains(kv.Value, "10.0.0.2:8000=0.5")
	}
	if !found {
		t.Fatalf("extra facts %v: want the instance speeds", a.Extra)
	}
}
