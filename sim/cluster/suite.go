package cluster

import (
	"context"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/sim/engine"
	"github.com/llmrouter/llmrouter/sim/workload"
)

// The peer comparison suite (issue 17): workload classes a fleet meets,
// each run under every policy of SuitePolicies on the same workload and
// arrivals, over several seeds, with the TTFT lower bound of each run.
// prefix-cache's targets: on every class and seed, mean TTFT at most the
// lowest other policy's mean and p99 at most 1.1 × the lowest other p99.

// SuitePolicies are the policies the suite compares, prefix-cache among them.
var SuitePolicies = []string{"round-robin", "least-request", "prefix-cache", "peer-cache-aware", "peer-scorer"}

// Class is one workload class of the suite: a fleet, a workload and a load.
type Class struct {
	Name string
	// What says what the class stresses.
	What string
	// Flags are the llmrouter bench flags that run one seed of the class
	// (with --seed, --duration and --policy added).
	Flags string
	// Instances, Speeds and KVBlocks shape the fleet (KVBlocks 0: the
	// profile's).
	Instances int
	Speeds    []float64
	KVBlocks  int
	// Source builds the workload for a seed.
	Source      func(seed uint64) (workload.Source, error)
	Concurrency int
	RampUp      time.Duration
}

func multiTurnClass(f func(*workload.MultiTurn)) func(uint64) (workload.Source, error) {
	return func(seed uint64) (workload.Source, error) {
		m := workload.DefaultMultiTurn()
		m.Seed, m.SystemTokens, m.UserTokens, m.OutputTokens = seed, 2048, 300, 200
		f(&m)
		return workload.NewMultiTurn(m)
	}
}

// SuiteClasses are the suite's classes, 5 H100 instances each unless said.
func SuiteClasses() []Class {
	const mt = "--workload multi-turn --user-tokens 300 --output-tokens 200 --ramp-up 20s "
	return []Class{
		{
			Name: "uniform", What: "the issue-7 run: 8 system prompts of 2,048 tokens, 600 conversations",
			Flags:     "--instances 5 " + mt + "--system-tokens 2048 --concurrency 600",
			Instances: 5, Source: multiTurnClass(func(*workload.MultiTurn) {}), Concurrency: 600, RampUp: 20 * time.Second,
		},
		{
			Name: "lognormal-0.7", What: "16 system prompts of log-normal size, mean 6,000 tokens (24k characters), sigma 0.7; 200 conversations",
			Flags:     "--instances 5 " + mt + "--groups 16 --system-tokens 6000 --system-sigma 0.7 --concurrency 200",
			Instances: 5, Concurrency: 200, RampUp: 20 * time.Second,
			Source: multiTurnClass(func(m *workload.MultiTurn) { m.Groups, m.SystemTokens, m.SystemSigma = 16, 6000, 0.7 }),
		},
		{
			Name: "lognormal-1.0", What: "16 system prompts of log-normal size, mean 10,000 tokens (40k characters), sigma 1.0; 200 conversations",
			Flags:     "--instances 5 " + mt + "--groups 16 --system-tokens 10000 --system-sigma 1.0 --concurrency 200",
			Instances: 5, Concurrency: 200, RampUp: 20 * time.Second,
			Source: multiTurnClass(func(m *workload.MultiTurn) { m.Groups, m.SystemTokens, m.SystemSigma = 16, 10000, 1.0 }),
		},
		{
			Name: "lognormal-kvfull", What: "lognormal-1.0 on KV caches of 12,000 blocks (192k tokens): requests hold about 85 % of the KV cache; 150 conversations",
			Flags:     "--instances 5 --kv-blocks 12000 " + mt + "--groups 16 --system-tokens 10000 --system-sigma 1.0 --concurrency 150",
			Instances: 5, KVBlocks: 12000, Concurrency: 150, RampUp: 20 * time.Second,
			Source: multiTurnClass(func(m *workload.MultiTurn) { m.Groups, m.SystemTokens, m.SystemSigma = 16, 10000, 1.0 }),
		},
		{
			Name: "zipf", What: "64 system prompts of 2,048 tokens, Zipf 1.1 popularity; 600 conversations",
			Flags:     "--instances 5 " + mt + "--groups 64 --system-tokens 2048 --zipf 1.1 --concurrency 600",
			Instances: 5, Concurrency: 600, RampUp: 20 * time.Second,
			Source: multiTurnClass(func(m *workload.MultiTurn) { m.Groups, m.Zipf = 64, 1.1 }),
		},
		{
			Name: "kv-overcommit", What: "the issue-7 workload on KV caches of 14,000 blocks (224k tokens): working set 4.4x one cache, requests hold 77 % of it; 300 conversations",
			Flags:     "--instances 5 --kv-blocks 14000 " + mt + "--system-tokens 2048 --concurrency 300",
			Instances: 5, KVBlocks: 14000, Concurrency: 300, RampUp: 20 * time.Second,
			Source: multiTurnClass(func(*workload.MultiTurn) {}),
		},
		{
			Name: "mixed-speed", What: "the issue-7 run on three full-speed and two half-speed instances",
			Flags:     "--instance-speeds 1,1,1,0.5,0.5 " + mt + "--system-tokens 2048 --concurrency 600",
			Instances: 5, Speeds: []float64{1, 1, 1, 0.5, 0.5}, Concurrency: 600, RampUp: 20 * time.Second,
			Source: multiTurnClass(func(*workload.MultiTurn) {}),
		},
		{
			Name: "shared-prefix", What: "64 groups x 64 one-turn questions under 2,048-token system prompts; 128 in flight",
			Flags:     "--instances 5 --workload shared-prefix --prompts-per-group 64 --concurrency 128 --ramp-up 10s",
			Instances: 5, Concurrency: 128, RampUp: 10 * time.Second,
			Source: func(seed uint64) (workload.Source, error) {
				s := workload.DefaultSharedPrefix()
				s.Seed, s.PromptsPerGroup = seed, 64
				return workload.NewSharedPrefix(s)
			},
		},
	}
}

// SuiteRun is one policy on one seed of one class.
type SuiteRun struct {
	Class, Policy                   string
	Seed                            uint64
	Requests, Failed                int
	TTFTMeanMs, TTFTP99Ms           float64
	OutputThroughput, HitRatio      float64
	KVUsage                         float64
	LowerBoundMeanMs, LowerBoundP99 float64
}

// Options is the cluster of one seed of c.
func (c Class) Options(seed uint64, d time.Duration, cfg config.Config, ec engine.Config) (Options, error) {
	src, err := c.Source(seed)
	if err != nil {
		return Options{}, fmt.Errorf("class %s: %w", c.Name, err)
	}
	if c.KVBlocks > 0 {
		ec.NumBlocks = c.KVBlocks
	}
	return Options{
		Instances: c.Instances, Speeds: c.Speeds, Engine: ec, Config: cfg, Seed: seed, Explain: 1,
		Plan: workload.Plan{Source: src, Arrivals: workload.Arrivals{Concurrency: c.Concurrency}, Duration: d, Seed: seed, RampUp: c.RampUp},
	}, nil
}

// RunSuite runs every class, seed and policy in turn (one at a time: the
// simulator is single-threaded and the suite must not crowd its machine),
// calling done after each run.
func RunSuite(ctx context.Context, classes []Class, policies []string, seeds []uint64, d time.Duration, cfg config.Config, ec engine.Config, done func(SuiteRun)) ([]SuiteRun, error) {
	var out []SuiteRun
	for _, c := range classes {
		for _, seed := range seeds {
			o, err := c.Options(seed, d, cfg, ec)
			if err != nil {
				return out, err
			}
			for _, p := range policies {
				r, err := Run(ctx, o, p)
				if err != nil {
					return out, fmt.Errorf("class %s, seed %d, policy %s: %w", c.Name, seed, p, err)
				}
				sr := SuiteRun{
					Class: c.Name, Policy: p, Seed: seed, Requests: r.Requests, Failed: r.Failed,
					TTFTMeanMs: r.TTFTMeanMs, TTFTP99Ms: r.TTFTP99Ms, OutputThroughput: r.OutputThroughput,
					HitRatio: math.NaN(), KVUsage: r.MeanKVUsage,
				}
				if r.PrefixHitRatio != nil {
					sr.HitRatio = *r.PrefixHitRatio
				}
				if r.Explain != nil {
					sr.LowerBoundMeanMs, sr.LowerBoundP99 = r.Explain.LowerBoundMeanMs, r.Explain.LowerBoundP99Ms
				}
				out = append(out, sr)
				if done != nil {
					done(sr)
				}
			}
		}
	}
	return out, nil
}

// Verdict is prefix-cache against the best other policy on one seed of
// one class.
type Verdict struct {
	Class               string
	Seed                uint64
	MeanRatio, P99Ratio float64 // prefix-cache / the lowest other policy's
	BestMean, BestP99   string  // which policy that was
	MeanOK, P99OK       bool
}

// Target ratios (issue 17).
const (
	SuiteMeanTarget = 1.0
	SuiteP99Target  = 1.1
)

// Verdicts compares prefix-cache with the lowest other policy per class and
// seed.
func Verdicts(runs []SuiteRun) []Verdict {
	type key struct {
		class string
		seed  uint64
	}
	var order []key
	groups := map[key][]SuiteRun{}
	for _, r := range runs {
		k := key{r.Class, r.Seed}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	var out []Verdict
	for _, k := range order {
		var pc *SuiteRun
		bestMean, bestP99 := SuiteRun{TTFTMeanMs: math.Inf(1)}, SuiteRun{TTFTP99Ms: math.Inf(1)}
		for i, r := range groups[k] {
			if r.Policy == "prefix-cache" {
				pc = &groups[k][i]
				continue
			}
			if r.TTFTMeanMs < bestMean.TTFTMeanMs {
				bestMean = r
			}
			if r.TTFTP99Ms < bestP99.TTFTP99Ms {
				bestP99 = r
			}
		}
		if pc == nil || math.IsInf(bestMean.TTFTMeanMs, 1) {
			continue
		}
		v := Verdict{Class: k.class, Seed: k.seed, BestMean: bestMean.Policy, BestP99: bestP99.Policy,
			MeanRatio: pc.TTFTMeanMs / bestMean.TTFTMeanMs, P99Ratio: pc.TTFTP99Ms / bestP99.TTFTP99Ms}
		v.MeanOK, v.P99OK = v.MeanRatio <= SuiteMeanTarget, v.P99Ratio <= SuiteP99Target
		out = append(out, v)
	}
	return out
}

// WriteSuite prints the runs as one markdown table per class, then the
// verdicts.
func WriteSuite(w io.Writer, classes []Class, runs []SuiteRun) {
	for _, c := range classes {
		var rows []SuiteRun
		for _, r := range runs {
			if r.Class == c.Name {
				rows = append(rows, r)
			}
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(w, "### %s: %s\n\n`llmrouter bench --mode sim %s --seed S --duration D --policy ...`\n\n", c.Name, c.What, c.Flags)
		fmt.Fprintln(w, "| policy | seed | requests | failed | TTFT mean | TTFT p99 | out tok/s | prefix hit | KV used | lower bound mean / p99 |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
		for _, r := range rows {
			fmt.Fprintf(w, "| %s | %d | %d | %d | %.1f | %.1f | %.0f | %.3f | %.2f | %.1f / %.1f |\n",
				r.Policy, r.Seed, r.Requests, r.Failed, r.TTFTMeanMs, r.TTFTP99Ms, r.OutputThroughput, r.HitRatio, r.KVUsage, r.LowerBoundMeanMs, r.LowerBoundP99)
		}
		fmt.Fprintln(w)
	}
	vs := Verdicts(runs)
	if len(vs) == 0 {
		return
	}
	fmt.Fprintf(w, "### prefix-cache against the lowest other policy (targets: mean <= %.1fx, p99 <= %.1fx)\n\n", SuiteMeanTarget, SuiteP99Target)
	fmt.Fprintln(w, "| class | seed | mean ratio (best other) | p99 ratio (best other) | verdict |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, v := range vs {
		verdict := "met"
		var missed []string
		if !v.MeanOK {
			missed = append(missed, "mean")
		}
		if !v.P99OK {
			missed = append(missed, "p99")
		}
		if len(missed) > 0 {
			verdict = "MISSED: " + strings.Join(missed, ", ")
		}
		fmt.Fprintf(w, "| %s | %d | %.3f (%s) | %.3f (%s) | %s |\n", v.Class, v.Seed, v.MeanRatio, v.BestMean, v.P99Ratio, v.BestP99, verdict)
	}
	fmt.Fprintln(w)
	sums := Summarize(vs)
	if len(sums) == 0 {
		return
	}
	fmt.Fprintln(w, "### The same over the seeds (mean of the per-seed ratios, 95 % confidence interval by Student's t)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| class | seeds | mean ratio | p99 ratio | seeds meeting both targets |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, c := range sums {
		fmt.Fprintf(w, "| %s | %d | %s | %s | %d of %d |\n", c.Class, c.Seeds, c.Mean, c.P99, c.Met, c.Seeds)
	}
	fmt.Fprintln(w)
}

// ClassSummary is one class's verdicts over its seeds: whether a ratio's
// distance from the target is more than the seed-to-seed noise, which one
// seed's verdict cannot say (shared-prefix: prefix-cache and
// peer-cache-aware within 0.5 % of each other, either ahead by seed).
type ClassSummary struct {
	Class     string
	Seeds     int
	Mean, P99 Estimate // of the per-seed ratios
	Met       int      // seeds meeting both targets
}

// Estimate is a sample mean with its 95 % confidence interval (Student's
// t; the interval is NaN for a single sample).
type Estimate struct {
	Mean, Low, High float64
}

func (e Estimate) String() string {
	if math.IsNaN(e.Low) {
		return fmt.Sprintf("%.4f", e.Mean)
	}
	return fmt.Sprintf("%.4f (%.4f-%.4f)", e.Mean, e.Low, e.High)
}

// Summarize groups verdicts by class, in the order the classes first
// appear.
func Summarize(vs []Verdict) []ClassSummary {
	var order []string
	by := map[string][]Verdict{}
	for _, v := range vs {
		if _, ok := by[v.Class]; !ok {
			order = append(order, v.Class)
		}
		by[v.Class] = append(by[v.Class], v)
	}
	out := make([]ClassSummary, 0, len(order))
	for _, c := range order {
		var means, p99s []float64
		met := 0
		for _, v := range by[c] {
			means, p99s = append(means, v.MeanRatio), append(p99s, v.P99Ratio)
			if v.MeanOK && v.P99OK {
				met++
			}
		}
		out = append(out, ClassSummary{Class: c, Seeds: len(by[c]), Mean: estimate(means), P99: estimate(p99s), Met: met})
	}
	return out
}

// estimate is xs' mean and 95 % confidence interval.
func estimate(xs []float64) Estimate {
	n := float64(len(xs))
	var sum float64
	for _, x := range xs {
		sum += x
	}
	m := sum / n
	if len(xs) < 2 {
		return Estimate{Mean: m, Low: math.NaN(), High: math.NaN()}
	}
	var ss float64
	for _, x := range xs {
		ss += (x - m) * (x - m)
	}
	half := tQuantile975(len(xs)-1) * math.Sqrt(ss/(n-1)/n)
	return Estimate{Mean: m, Low: m - half, High: m + half}
}

// t975 are Student's t distribution's 0.975 quantiles for 1 to 30
// degrees of freedom (any statistics table).
var t975 = [...]float64{12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
	2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
	2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042}

// tQuantile975 is the 0.975 quantile for df degrees of freedom: the table
// to 30, then the normal's 1.96 corrected by the first two terms of the
// Cornish-Fisher expansion in 1/df, within 0.001 of the exact value from
// 30 on.
func tQuantile975(df int) float64 {
	if df <= len(t975) {
		return t975[df-1]
	}
	const z = 1.959964
	z3, z5, v := z*z*z, z*z*z*z*z, float64(df)
	return z + (z3+z)/(4*v) + (5*z5+16*z3+3*z)/(96*v*v)
}
