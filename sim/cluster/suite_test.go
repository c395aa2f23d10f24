package cluster

import (
	"bytes"
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/sim/engine"
)

func TestVerdictsAgainstTheLowestOtherPolicy(t *testing.T) {
	runs := []SuiteRun{
		{Class: "a", Seed: 1, Policy: "round-robin", TTFTMeanMs: 50, TTFTP99Ms: 100},
		{Class: "a", Seed: 1, Policy: "peer-scorer", TTFTMeanMs: 20, TTFTP99Ms: 200},
		{Class: "a", Seed: 1, Policy: "prefix-cache", TTFTMeanMs: 20, TTFTP99Ms: 109},
		{Class: "a", Seed: 2, Policy: "peer-scorer", TTFTMeanMs: 20, TTFTP99Ms: 100},
		{Class: "a", Seed: 2, Policy: "prefix-cache", TTFTMeanMs: 20.2, TTFTP99Ms: 111},
	}
	vs := Verdicts(runs)
	if len(vs) != 2 {
		t.Fatalf("%d verdicts, want one per class and seed: %+v", len(vs), vs)
	}
	// Seed 1: the lowest mean is peer-scorer's, the lowest p99 round
	// robin's; equal mean and 1.09 × p99 meet the targets.
	if v := vs[0]; v.BestMean != "peer-scorer" || v.BestP99 != "round-robin" || !v.MeanOK || !v.P99OK {
		t.Fatalf("seed 1: %+v", v)
	}
	// Seed 2: 1.01 × the mean and 1.11 × the p99 miss both.
	if v := vs[1]; v.MeanOK || v.P99OK {
		t.Fatalf("seed 2: %+v", v)
	}
	var b bytes.Buffer
	WriteSuite(&b, []Class{{Name: "a", What: "a class", Flags: "--x"}}, runs)
	if out := b.String(); !strings.Contains(out, "MISSED: mean, p99") || !strings.Contains(out, "| a | 1 | 1.000 (peer-scorer) | 1.090 (round-robin) | met |") {
		t.Fatalf("suite report:\n%s", out)
	}
}

// Every class of the suite builds and runs (a few simulated seconds each),
// and RunSuite reports every class, seed and policy with its lower bound.
func TestSuiteClassesRun(t *testing.T) {
	classes := SuiteClasses()
	if len(classes) < 6 {
		t.Fatalf("%d classes: the suite needs at least uniform, log-normal, Zipf, KV over-commit, mixed-speed and shared-prefix", len(classes))
	}
	ec := engine.DefaultConfig()
	var n int
	runs, err := RunSuite(context.Background(), classes, []string{"round-robin", "prefix-cache"}, []uint64{1}, 5*time.Second, config.Default(), ec, func(SuiteRun) { n++ })
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2*len(classes) || n != len(runs) {
		t.Fatalf("%d runs, %d reported: want %d", len(runs), n, 2*len(classes))
	}
	for _, r := range runs {
		if r.Requests == 0 || !(r.LowerBoundMeanMs > 0) || r.LowerBoundMeanMs > r.TTFTMeanMs {
			t.Fatalf("%+v: want requests served and a lower bound under the measured TTFT", r)
		}
	}
}

// The summary over seeds averages the per-seed ratios with Student's t
// interval: a class whose seeds fall either side of the target gets an
// interval spanning it.
func TestSummarizeOverSeeds(t *testing.T) {
	var runs []SuiteRun
	for i, pc := range []float64{10.1, 9.9, 10.2, 9.8} {
		seed := uint64(i + 1)
		runs = append(runs,
			SuiteRun{Class: "tie", Seed: seed, Policy: "peer-cache-aware", TTFTMeanMs: 10, TTFTP99Ms: 40},
			SuiteRun{Class: "tie", Seed: seed, Policy: "prefix-cache", TTFTMeanMs: pc, TTFTP99Ms: 40},
			SuiteRun{Class: "lead", Seed: seed, Policy: "peer-cache-aware", TTFTMeanMs: 10, TTFTP99Ms: 40},
			SuiteRun{Class: "lead", Seed: seed, Policy: "prefix-cache", TTFTMeanMs: 8, TTFTP99Ms: 30})
	}
	sums := Summarize(Verdicts(runs))
	if len(sums) != 2 || sums[0].Class != "tie" || sums[1].Class != "lead" {
		t.Fatalf("%+v: want the classes in the order they first appear", sums)
	}
	tie := sums[0]
	// Ratios 1.01, 0.99, 1.02, 0.98: mean 1, sample sd 0.018257, t(3) = 3.182.
	half := 3.182 * 0.018257 / 2
	if tie.Seeds != 4 || tie.Met != 2 || math.Abs(tie.Mean.Mean-1) > 1e-9 ||
		math.Abs(tie.Mean.Low-(1-half)) > 1e-4 || math.Abs(tie.Mean.High-(1+half)) > 1e-4 {
		t.Fatalf("tie: %+v, want mean 1 ± %.4f, 2 of 4 seeds met", tie, half)
	}
	if lead := sums[1]; lead.Met != 4 || lead.Mean.Mean != 0.8 || lead.Mean.Low != 0.8 || lead.P99.Mean != 0.75 {
		t.Fatalf("lead: %+v: identical seeds give a zero-width interval at 0.8 and 0.75", lead)
	}
	var b bytes.Buffer
	WriteSuite(&b, nil, runs)
	if out := b.String(); !strings.Contains(out, "| tie | 4 | 1.0000 (0.9710-1.0290) | 1.0000 (1.0000-1.0000) | 2 of 4 |") {
		t.Fatalf("suite report:\n%s", out)
	}
}

func TestTQuantile975(t *testing.T) {
	// Exact values from a statistics table.
	for df, want := range map[int]float64{1: 12.706, 10: 2.228, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980, 1 << 20: 1.960} {
		if got := tQuantile975(df); math.Abs(got-want) > 0.001 {
			t.Errorf("t(0.975, %d) = %.4f, want %.3f", df, got, want)
		}
	}
}
