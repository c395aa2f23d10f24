package cluster

import (
	"bytes"
	"context"
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
	if out := b.String(); !strings.Contains(out, "MISSED: mean, p99") || !strings.Contains(out, "| a | 1 | 1.00 (peer-scorer) | 1.09 (round-robin) | met |") {
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
