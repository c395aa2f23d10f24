package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/llmrouter/llmrouter/cmd/llmrouter/internal/overhead"
)

// runOverhead is `llmrouter bench --mode overhead`: the latency the gateway
// adds to each request and the decisions per second it sustains (cmd/llmrouter/internal/overhead).
func runOverhead(cmd *cobra.Command) error {
	f := cmd.Flags()
	for _, name := range []string{"target", "workload", "workload-file", "profile"} {
		if f.Changed(name) {
			return fmt.Errorf("--%s does not apply to --mode overhead", name)
		}
	}
	o := overhead.Defaults()
	if f.Changed("instances") {
		o.Instances, _ = f.GetInt("instances")
	}
	if f.Changed("policy") {
		pols, err := policyList(f.Lookup("policy").Value.String())
		if err != nil {
			return err
		}
		if len(pols) != 1 {
			return fmt.Errorf("--policy: --mode overhead measures one policy, got %d", len(pols))
		}
		o.Policy = pols[0]
	}
	if f.Changed("rate") {
		o.Rate, _ = f.GetFloat64("rate")
	}
	if f.Changed("duration") {
		o.Duration, _ = f.GetDuration("duration")
	}
	if f.Changed("concurrency") {
		o.Concurrency, _ = f.GetInt("concurrency")
	}
	o.Seed, _ = f.GetUint64("seed")
	var sizes []int
	raw, _ := f.GetString("prompt-bytes")
	for _, part := range strings.Split(raw, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 1 {
			return fmt.Errorf("--prompt-bytes %q: want comma-separated positive byte counts, e.g. 4096,262144", raw)
		}
		sizes = append(sizes, n)
	}
	asJSON, _ := f.GetBool("json")
	showProgress, _ := f.GetBool("progress")
	ctx, cancel := signalContext()
	defer cancel()
	out := cmd.OutOrStdout()
	if !asJSON {
		fmt.Fprintf(out, "Gateway overhead: %d instances, policy %s, %.0f requests/s open loop for %s, then %d concurrent closed loop\n\n",
			o.Instances, o.Policy, o.Rate, o.Duration, o.Concurrency)
	}
	var results []overhead.Result
	for _, size := range sizes {
		o.PromptBytes = size
		bar := newProgressBar(cmd.ErrOrStderr(), fmt.Sprintf("overhead %d B", size), showProgress)
		o.Progress = func(done, total int) { bar.set(float64(done) / float64(total)) }
		r, err := overhead.Run(ctx, o)
		bar.done()
		if err != nil {
			return fmt.Errorf("prompt %d bytes: %w", size, err)
		}
		results = append(results, r)
	}
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	_, err := fmt.Fprint(out, overhead.Table(results))
	return err
}
