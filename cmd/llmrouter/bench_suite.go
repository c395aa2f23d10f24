package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/sim/cluster"
	"github.com/llmrouter/llmrouter/sim/engine"
)

// runSuite is bench --mode suite: the peer comparison suite (sim/cluster
// suite.go), every class and seed under every policy, one run at a time.
func runSuite(cmd *cobra.Command, cfg config.Config) error {
	f := cmd.Flags()
	d, _ := f.GetDuration("duration")
	if d <= 0 {
		return fmt.Errorf("--duration %s: the suite needs a positive duration (e.g. 3m)", d)
	}
	seeds, err := parseSeeds(f.Lookup("seeds").Value.String())
	if err != nil {
		return err
	}
	all := cluster.SuiteClasses()
	classes := all
	if want := f.Lookup("classes").Value.String(); want != "" {
		classes = nil
		for _, name := range strings.Split(want, ",") {
			found := false
			for _, c := range all {
				if c.Name == strings.TrimSpace(name) {
					classes, found = append(classes, c), true
				}
			}
			if !found {
				var names []string
				for _, c := range all {
					names = append(names, c.Name)
				}
				return fmt.Errorf("--classes: unknown class %q: accepted: %s", name, strings.Join(names, ", "))
			}
		}
	}
	policies := cluster.SuitePolicies
	if f.Changed("policy") {
		var err error
		if policies, err = policyList(f.Lookup("policy").Value.String()); err != nil {
			return err
		}
	}
	profile, _ := f.GetString("profile")
	ec, err := engine.ProfileConfig(profile)
	if err != nil {
		return err
	}
	ec.CharsPerToken = cfg.Gateway.CharsPerToken
	ctx, cancel := signalContext()
	defer cancel()
	errw := cmd.ErrOrStderr()
	runs, err := cluster.RunSuite(ctx, classes, policies, seeds, d, cfg, ec, func(r cluster.SuiteRun) {
		fmt.Fprintf(errw, "%-14s seed %d %-17s TTFT mean %7.1f p99 %8.1f ms\n", r.Class, r.Seed, r.Policy, r.TTFTMeanMs, r.TTFTP99Ms)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "Peer comparison suite: %s simulated per run, seeds %s, profile %s\n\n", d, f.Lookup("seeds").Value.String(), profile)
	cluster.WriteSuite(cmd.OutOrStdout(), classes, runs)
	return nil
}

// maxSeeds bounds --seeds: each seed is a run of every class and policy.
const maxSeeds = 1000

// parseSeeds reads --seeds: comma-separated seeds and ranges (1,2,3 or
// 1-20 or 1-3,7).
func parseSeeds(spec string) ([]uint64, error) {
	bad := func(why string) error {
		return fmt.Errorf("--seeds %q: %s: want comma-separated seeds or ranges, e.g. 1,2,3 or 1-20", spec, why)
	}
	var seeds []uint64
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 64)
		if err != nil {
			return nil, bad(fmt.Sprintf("%q is not a seed", part))
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(strings.TrimSpace(hi), 10, 64); err != nil || b < a {
				return nil, bad(fmt.Sprintf("%q is not a range from a seed to a larger one", part))
			}
		}
		if b-a >= maxSeeds || len(seeds)+int(b-a+1) > maxSeeds {
			return nil, bad(fmt.Sprintf("more than %d seeds", maxSeeds))
		}
		for v := a; ; v++ {
			seeds = append(seeds, v)
			if v == b {
				break
			}
		}
	}
	return seeds, nil
}
