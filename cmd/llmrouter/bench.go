package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmrouter/llmrouter/scheduler"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/all"
	"github.com/llmrouter/llmrouter/sim/cluster"
	"github.com/llmrouter/llmrouter/sim/engine"
	"github.com/llmrouter/llmrouter/sim/loadgen"
	"github.com/llmrouter/llmrouter/sim/workload"
)

func init() {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark routing policies: virtual-time cluster simulation (sim) or load against a live data plane (live)",
		Long: `--mode sim runs N simulated vLLM instances (sim/engine) behind the real scheduler in
virtual time, once per policy in --policy, on identical arrivals, and prints the EAS
benchmark table for each (plus the prefix cache hit ratio and requests per instance).

--instance-speeds 1,1,1,0.5,0.5 makes the simulated fleet heterogeneous: one speed per
instance, each dividing every time cost of that instance's engine (0.5 is half as fast,
as an older GPU generation; the KV cache stays the profile's). It sets --instances to
its length when --instances is not given.

--mode live sends the same workloads to a running data plane (--target, e.g. Envoy on
http://127.0.0.1:8080) as streaming chat completions and prints the same table.

Workloads: --workload multi-turn (conversations under shared system prompts, each turn
sending the whole history), --workload shared-prefix (groups × prompts), or
--workload-file F.jsonl with one request per line:
  ` + workload.FileFormat + `
Arrivals: --concurrency N (closed loop), --rate R (Poisson, requests/s; conversations
start at R / mean turns and each next turn follows the previous reply plus think time),
or the file's arrival_ms when every line has one.

--restart-at 90s (sim) replaces the scheduler with a fresh one 90 s into each run, as a
scheduler restart does (its prefix index, queue and in-flight picks lost; the agents
re-register over 1.5 s, requests arriving meanwhile pass through round robin), and
prints after each table the prefix hit ratio and mean TTFT per --series-window of
virtual time: the level before the restart, the dip, and the recovery time (until the
windowed hit ratio is back within 5% of its level before).`,
		Example: `  llmrouter bench --mode sim --instances 5 --policy round-robin,least-request,prefix-cache --rate 40 --duration 10m
  llmrouter bench --mode sim --instance-speeds 1,1,1,0.5,0.5 --policy least-request,prefix-cache --concurrency 600 --duration 3m
  llmrouter bench --mode sim --workload shared-prefix --concurrency 64 --json
  llmrouter bench --mode sim --policy prefix-cache --concurrency 600 --ramp-up 20s --duration 3m --restart-at 90s
  llmrouter bench --mode live --target http://127.0.0.1:8080 --concurrency 16 --duration 2m`,
		Args: cobra.NoArgs,
		RunE: runBench,
	}
	f := cmd.Flags()
	f.String("mode", "sim", "sim (virtual-time cluster simulator), live (a running data plane) overhead (what the gateway adds per request) or suite (the peer comparison suite: every workload class under round-robin, least-request, prefix-cache and both peer rules, per seed)")
	f.String("prompt-bytes", "4096,262144", "overhead: comma-separated prompt sizes in bytes")
	f.Int("instances", 5, "sim: number of simulated engine instances")
	f.String("instance-speeds", "", fmt.Sprintf("sim: comma-separated speed of each instance (%g to %g; 0.5 = half as fast), e.g. 1,1,1,0.5,0.5 (default: all 1)", float64(engine.MinSpeed), float64(engine.MaxSpeed)))
	f.String("policy", "round-robin,least-request,prefix-cache", "sim: comma-separated policies or profiles to compare (built-in: "+strings.Join(framework.BuiltinProfiles(), ", ")+"; or a profile of --endpoint-picker-config)")
	f.String("endpoint-picker-config", "", "sim: an llm-d / Gateway API Inference Extension EndpointPickerConfig file whose profiles --policy may name")
	f.String("profile", engine.DefaultProfile, "sim: engine profile: "+strings.Join(engine.ProfileNames(), ", "))
	f.String("workload", "multi-turn", "generated workload: multi-turn or shared-prefix")
	f.String("workload-file", "", "JSONL workload file (one request per line) instead of a generated workload")
	f.Int("concurrency", 0, "closed loop: requests in flight")
	f.Float64("rate", 0, "Poisson arrivals: requests per second")
	f.Duration("duration", 10*time.Minute, "stop sending new requests after this long (0: until the workload ends)")
	f.Int("requests", 0, "stop after this many requests (0: no bound)")
	f.Duration("ramp-up", 0, "closed loop: start the clients evenly over this long instead of all at once")
	f.Uint64("seed", 1, "seed of the workload, the arrivals and the policies' tie-breaking")
	f.Uint64("tiebreak-seed", 0, "sim: seed of the policies' tie-breaking alone (0: --seed), to tell a policy's difference from the luck of its ties on the same arrivals")
	f.String("model", "", "model name for generated requests (sim default "+cluster.DefaultModel+"; live default: the target's first model)")
	f.Bool("json", false, "print a JSON array of summaries instead of tables")
	f.Bool("progress", true, "show a progress bar on stderr (when it is a terminal) for runs longer than a few seconds")
	// workload shape
	f.Int("groups", 0, "system prompts (multi-turn default 8) or prefix groups (shared-prefix default 64)")
	f.Int("system-tokens", 0, "tokens of each system prompt (multi-turn 1024, shared-prefix 2048)")
	f.Float64("system-sigma", 0, "multi-turn: log-normal spread of system prompt sizes around --system-tokens as their mean (0: all the same size)")
	f.Float64("zipf", 0, "multi-turn: Zipf exponent of system prompt popularity (0: uniform)")
	f.Int("explain", 0, "sim: after each policy's table, print what it predicted at each pick (cached tokens, prefill queued ahead, TTFT) against what the engines did, as error distributions, and its N worst decisions (--explain alone: 5)")
	f.Lookup("explain").NoOptDefVal = "5"
	f.String("explain-csv", "", "sim: write every pick of every policy to this CSV file, one row each: what the policy predicted against what the engines did, the TTFT and its lower bound (columns in docs/benchmarks.md)")
	f.String("seeds", "1,2,3", "suite: comma-separated seeds or ranges (1-20), each class run once per seed")
	f.String("classes", "", "suite: comma-separated classes to run (default: all)")
	f.Duration("restart-at", 0, "sim: restart the scheduler this long into each run (before --duration) and print the prefix hit ratio and TTFT per window around it, and the recovery time (0: no restart)")
	f.Duration("series-window", cluster.DefaultWindow, "sim: with --restart-at, the length of virtual time of each window of the printed series")
	f.Int("kv-blocks", 0, "sim: KV cache blocks per instance instead of the profile's (a smaller cache puts it under pressure)")
	f.Int("prefill-instances", 0, "sim: pd-split and dynamic-pd-split run on this many prefill instances and the rest of --instances as decode instances; other policies on all as both-role (0: every policy on both-role instances)")
	f.Duration("kv-transfer-per-block", 40*time.Microsecond, "sim: what moving one prompt KV block from a prefill to a decode instance costs (default: Llama-3-8B's 2 MiB per 16-token block over 50 GB/s RDMA)")
	f.Int("user-tokens", 0, "multi-turn: median user message tokens (default 100)")
	f.Int("output-tokens", 0, "median (multi-turn, default 200) or exact (shared-prefix, default 256) output tokens")
	f.Int("turns-min", 0, "multi-turn: fewest turns per conversation (default 3)")
	f.Int("turns-max", 0, "multi-turn: most turns per conversation (default 10)")
	f.Duration("think-time", -1, "multi-turn: mean pause before the next turn under --rate (default 5s)")
	f.Int("conversations", 0, "multi-turn: number of conversations (0: endless)")
	f.Int("prompts-per-group", 0, "shared-prefix: prompts per group (default 16)")
	f.Int("question-tokens", 0, "shared-prefix: tokens of each question (default 128)")
	// live
	f.String("target", "", "live: the data plane's base URL, e.g. http://127.0.0.1:8080")
	f.String("label", "live", "live: the name of the run in the table (e.g. the policy the target runs)")
	f.Duration("request-timeout", 10*time.Minute, "live: bound on one request")
	rootCmd.AddCommand(cmd)
}

func runBench(cmd *cobra.Command, _ []string) error {
	cfg, log, err := setup(cmd, map[string]string{"endpoint-picker-config": "llm_scheduler.endpoint_picker_config"})
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	f := cmd.Flags()
	mode, _ := f.GetString("mode")
	for _, name := range []string{"restart-at", "series-window"} {
		if f.Changed(name) && mode != "sim" {
			return fmt.Errorf("--%s is for --mode sim (got --mode %s): only the simulator can restart its scheduler mid-run; for a live fleet, restart the scheduler and watch the dashboard's prefix hit ratio", name, mode)
		}
	}
	if f.Changed("tiebreak-seed") && mode != "sim" {
		return fmt.Errorf("--tiebreak-seed is for --mode sim (got --mode %s): it reseeds the simulated scheduler's tie-breaking; for the suite, run --mode sim per seed", mode)
	}
	if mode == "overhead" {
		return runOverhead(cmd)
	}
	if mode == "suite" {
		return runSuite(cmd, cfg)
	}
	if mode != "sim" && mode != "live" {
		return fmt.Errorf("--mode %q: want sim, live, overhead or suite", mode)
	}
	plan, err := benchPlan(cmd)
	if err != nil {
		return err
	}
	asJSON, _ := f.GetBool("json")
	showProgress, _ := f.GetBool("progress")
	out := cmd.OutOrStdout()
	ctx, cancel := signalContext()
	defer cancel()

	var sums []workload.Summary
	switch mode {
	case "sim":
		if f.Changed("target") {
			return fmt.Errorf("--target is for --mode live")
		}
		n, _ := f.GetInt("instances")
		speeds, err := instanceSpeeds(f.Lookup("instance-speeds").Value.String(), n, f.Changed("instances"))
		if err != nil {
			return err
		}
		if len(speeds) > 0 {
			n = len(speeds)
		}
		profile, _ := f.GetString("profile")
		ec, err := engine.ProfileConfig(profile)
		if err != nil {
			return err
		}
		ec.CharsPerToken = cfg.Gateway.CharsPerToken
		if kv, _ := f.GetInt("kv-blocks"); f.Changed("kv-blocks") {
			if kv < 1 {
				return fmt.Errorf("--kv-blocks %d: want 1 or more KV blocks per instance", kv)
			}
			ec.NumBlocks = kv
		}
		policies, err := policyList(f.Lookup("policy").Value.String())
		if err != nil {
			return err
		}
		for _, p := range policies { // every name, before the first run
			c := cfg
			c.Scheduler.Policy = p
			if err := scheduler.CheckPolicies(c); err != nil {
				return fmt.Errorf("--policy: %w", err)
			}
		}
		tiebreak, _ := f.GetUint64("tiebreak-seed")
		if tiebreak == 0 {
			tiebreak = plan.Seed
		}
		if plan.DefaultModel == "" {
			plan.DefaultModel = cluster.DefaultModel
		}
		if !asJSON {
			fleet := fmt.Sprintf("%d × %s", n, profile)
			if len(speeds) > 0 {
				fleet += " at speeds " + f.Lookup("instance-speeds").Value.String()
			}
			ties := ""
			if tiebreak != plan.Seed {
				ties = fmt.Sprintf(" (tie-breaking %d)", tiebreak)
			}
			fmt.Fprintf(out, "Simulated cluster: %s; workload: %s; arrivals: %s; duration %s; seed %d%s\n\n",
				fleet, plan.Source.Name(), plan.Arrivals, plan.Duration, plan.Seed, ties)
		}
		explain, _ := f.GetInt("explain")
		prefillN, _ := f.GetInt("prefill-instances")
		if prefillN < 0 || prefillN >= n {
			return fmt.Errorf("--prefill-instances %d: want 0 to %d (at least one of the %d instances decodes)", prefillN, n-1, n)
		}
		perBlock, _ := f.GetDuration("kv-transfer-per-block")
		restartAt, window, err := restartFlags(cmd, plan, asJSON, prefillN)
		if err != nil {
			return err
		}
		csvOut, closeCSV, err := explainCSV(f.Lookup("explain-csv").Value.String())
		if err != nil {
			return err
		}
		defer closeCSV()
		for _, p := range policies {
			bar := newProgressBar(cmd.ErrOrStderr(), "sim "+p, showProgress)
			var roles []string
			if prefillN > 0 && strings.HasSuffix(p, "pd-split") {
				for i := range n {
					roles = append(roles, map[bool]string{true: cluster.RolePrefill, false: cluster.RoleDecode}[i < prefillN])
				}
			}
			s, err := cluster.Run(ctx, cluster.Options{
				Instances: n, Speeds: speeds, Engine: ec, Config: cfg, Plan: plan, Seed: tiebreak, Progress: bar.set,
				Explain: explain, ExplainCSV: csvOut, Roles: roles, KVTransferPerBlock: perBlock, RestartAt: restartAt, Window: window,
			}, p)
			if len(roles) > 0 {
				s.Policy = fmt.Sprintf("%s (%dP+%dD)", p, prefillN, n-prefillN)
			}
			bar.done()
			if err != nil {
				return fmt.Errorf("policy %s: %w", p, err)
			}
			sums = append(sums, s.Summary)
			if !asJSON {
				workload.WriteTable(out, s.Summary)
				fmt.Fprintln(out)
				if s.Explain != nil && explain > 0 {
					s.Explain.Write(out)
					fmt.Fprintln(out)
				}
				if s.Series != nil {
					s.Series.Write(out)
					fmt.Fprintln(out)
				}
			}
		}
	case "live":
		for _, name := range []string{"policy", "instances", "instance-speeds", "profile", "kv-blocks", "explain", "explain-csv", "prefill-instances", "kv-transfer-per-block", "tiebreak-seed"} {
			if f.Changed(name) {
				return fmt.Errorf("--%s is for --mode sim: the live target runs whatever its scheduler is configured with (name the run with --label)", name)
			}
		}
		target, _ := f.GetString("target")
		if target == "" {
			return fmt.Errorf("--mode live needs --target, the data plane's base URL (e.g. http://127.0.0.1:8080)")
		}
		label, _ := f.GetString("label")
		timeout, _ := f.GetDuration("request-timeout")
		if !asJSON {
			fmt.Fprintf(out, "Live target %s; workload: %s; arrivals: %s; duration %s; seed %d\n\n",
				target, plan.Source.Name(), plan.Arrivals, plan.Duration, plan.Seed)
		}
		bar := newProgressBar(cmd.ErrOrStderr(), "live", showProgress)
		s, err := loadgen.Run(ctx, loadgen.Options{
			Target: target, Plan: plan, RequestTimeout: timeout, APIKey: os.Getenv("LLMROUTER_BENCH_API_KEY"), Progress: bar.set,
		}, label)
		bar.done()
		if err != nil {
			return err
		}
		sums = append(sums, s)
		if !asJSON {
			workload.WriteTable(out, s)
			fmt.Fprintln(out)
		}
	}
	if asJSON {
		return workload.WriteJSON(out, sums)
	}
	if len(sums) > 1 {
		workload.WriteComparison(out, sums)
	}
	return nil
}

// restartFlags checks --restart-at and --series-window against the run.
func restartFlags(cmd *cobra.Command, plan workload.Plan, asJSON bool, prefillN int) (at, window time.Duration, err error) {
	f := cmd.Flags()
	at, _ = f.GetDuration("restart-at")
	window, _ = f.GetDuration("series-window")
	switch {
	case at < 0:
		return 0, 0, fmt.Errorf("--restart-at %s: want a time into the run, e.g. 90s (0: no restart)", at)
	case at == 0 && f.Changed("series-window"):
		return 0, 0, fmt.Errorf("--series-window is the window of --restart-at's series: give --restart-at too")
	case at == 0:
		return 0, 0, nil
	case plan.Duration > 0 && at >= plan.Duration:
		return 0, 0, fmt.Errorf("--restart-at %s: want a time before the end of --duration %s", at, plan.Duration)
	case plan.Duration == 0:
		return 0, 0, fmt.Errorf("--restart-at needs --duration (the restart must fall inside the run, and the series needs its end)")
	case window <= 0 || window > at:
		return 0, 0, fmt.Errorf("--series-window %s: want a positive window no longer than --restart-at %s", window, at)
	case asJSON:
		return 0, 0, fmt.Errorf("--restart-at prints its series as text: it does not combine with --json")
	case prefillN > 0:
		return 0, 0, fmt.Errorf("--restart-at with --prefill-instances: a restart is not simulated with prefill/decode instances")
	}
	return at, window, nil
}

func policyList(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--policy is empty: name one or more policies, comma-separated")
	}
	return out, nil
}

// instanceSpeeds parses --instance-speeds; with --instances given, the list
// must have one speed per instance.
func instanceSpeeds(s string, instances int, instancesSet bool) ([]float64, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	const want = "want comma-separated speeds, one per instance, e.g. 1,1,1,0.5,0.5"
	parts := strings.Split(s, ",")
	out := make([]float64, len(parts))
	for i, p := range parts {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil {
			return nil, fmt.Errorf("--instance-speeds %q: item %d %q is not a number: %s", s, i+1, strings.TrimSpace(p), want)
		}
		if !(v >= engine.MinSpeed && v <= engine.MaxSpeed) {
			return nil, fmt.Errorf("--instance-speeds %q: item %d is %g: want a speed from %g to %g (1 = the profile's speed, 0.5 = half as fast)",
				s, i+1, v, float64(engine.MinSpeed), float64(engine.MaxSpeed))
		}
		out[i] = v
	}
	if instancesSet && len(out) != instances {
		return nil, fmt.Errorf("--instance-speeds has %d speeds and --instances is %d: want one speed per instance (or leave --instances out)", len(out), instances)
	}
	return out, nil
}

// benchPlan builds the workload and its arrivals from the flags.
func benchPlan(cmd *cobra.Command) (workload.Plan, error) {
	f := cmd.Flags()
	getInt := func(name string, def int) int {
		if f.Changed(name) {
			v, _ := f.GetInt(name)
			return v
		}
		return def
	}
	var p workload.Plan
	p.Seed, _ = f.GetUint64("seed")
	p.Duration, _ = f.GetDuration("duration")
	p.MaxRequests, _ = f.GetInt("requests")
	p.RampUp, _ = f.GetDuration("ramp-up")
	p.DefaultModel, _ = f.GetString("model")
	p.Arrivals.Concurrency, _ = f.GetInt("concurrency")
	p.Arrivals.Rate, _ = f.GetFloat64("rate")

	file, _ := f.GetString("workload-file")
	name, _ := f.GetString("workload")
	switch {
	case file != "":
		if f.Changed("workload") {
			return p, fmt.Errorf("--workload and --workload-file exclude each other")
		}
		src, err := workload.LoadFile(file)
		if err != nil {
			return p, err
		}
		p.Source = src
		if p.Arrivals.Concurrency == 0 && p.Arrivals.Rate == 0 {
			if !workload.HasArrivals(src) {
				return p, fmt.Errorf("workload file %s has no arrival_ms: choose --concurrency N or --rate R", file)
			}
			p.Arrivals.Trace = true
		}
	case name == "multi-turn":
		m := workload.DefaultMultiTurn()
		m.Seed, m.Model = p.Seed, p.DefaultModel
		m.Groups = getInt("groups", m.Groups)
		m.SystemTokens = getInt("system-tokens", m.SystemTokens)
		m.SystemSigma, _ = f.GetFloat64("system-sigma")
		m.Zipf, _ = f.GetFloat64("zipf")
		m.UserTokens = getInt("user-tokens", m.UserTokens)
		m.OutputTokens = getInt("output-tokens", m.OutputTokens)
		m.TurnsMin = getInt("turns-min", m.TurnsMin)
		m.TurnsMax = getInt("turns-max", m.TurnsMax)
		m.Conversations = getInt("conversations", m.Conversations)
		if f.Changed("think-time") {
			m.ThinkTime, _ = f.GetDuration("think-time")
		}
		src, err := workload.NewMultiTurn(m)
		if err != nil {
			return p, err
		}
		p.Source = src
	case name == "shared-prefix":
		s := workload.DefaultSharedPrefix()
		s.Seed, s.Model = p.Seed, p.DefaultModel
		s.Groups = getInt("groups", s.Groups)
		s.PromptsPerGroup = getInt("prompts-per-group", s.PromptsPerGroup)
		s.SystemTokens = getInt("system-tokens", s.SystemTokens)
		s.QuestionTokens = getInt("question-tokens", s.QuestionTokens)
		s.OutputTokens = getInt("output-tokens", s.OutputTokens)
		src, err := workload.NewSharedPrefix(s)
		if err != nil {
			return p, err
		}
		p.Source = src
	default:
		return p, fmt.Errorf("--workload %q: want multi-turn or shared-prefix (or --workload-file F.jsonl)", name)
	}
	if p.Arrivals.Concurrency == 0 && p.Arrivals.Rate == 0 && !p.Arrivals.Trace {
		return p, fmt.Errorf("choose the arrivals: --concurrency N (closed loop) or --rate R (Poisson requests/s)")
	}
	if err := p.Arrivals.Validate(); err != nil {
		return p, err
	}
	if p.Duration == 0 && p.MaxRequests == 0 && name == "multi-turn" && file == "" {
		if c, _ := f.GetInt("conversations"); c == 0 {
			return p, fmt.Errorf("an endless multi-turn workload needs --duration, --requests or --conversations")
		}
	}
	return p, nil
}

// progressBar is one updating line on a terminal's stderr, shown once a run
// has taken a few seconds.
type progressBar struct {
	w       io.Writer
	label   string
	enabled bool
	start   time.Time
	delay   time.Duration
	mu      sync.Mutex
	last    time.Time
	shown   bool
}

func newProgressBar(w io.Writer, label string, enabled bool) *progressBar {
	if enabled {
		f, ok := w.(*os.File)
		if !ok {
			enabled = false
		} else if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
			enabled = false
		}
	}
	return &progressBar{w: w, label: label, enabled: enabled, start: time.Now(), delay: 2 * time.Second}
}

const barWidth = 30

func (b *progressBar) set(frac float64) {
	if !b.enabled {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if now.Sub(b.start) < b.delay || now.Sub(b.last) < 100*time.Millisecond {
		return
	}
	b.last = now
	frac = min(max(frac, 0), 1)
	n := int(frac * barWidth)
	fmt.Fprintf(b.w, "\r%-22s [%s%s] %3.0f%% %s", b.label, strings.Repeat("=", n), strings.Repeat(" ", barWidth-n),
		frac*100, now.Sub(b.start).Truncate(time.Second))
	b.shown = true
}

func (b *progressBar) done() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.shown {
		fmt.Fprintf(b.w, "\r%s\r", strings.Repeat(" ", 22+barWidth+20))
		b.shown = false
	}
}

// explainCSV opens --explain-csv's file (nil without one) and writes the
// header; closeCSV closes it (the runs flush their rows).
func explainCSV(path string) (w io.Writer, closeCSV func(), err error) {
	if path == "" {
		return nil, func() {}, nil
	}
	fh, err := os.Create(path)
	if err != nil {
		return nil, nil, fmt.Errorf("--explain-csv: %w", err)
	}
	cw := csv.NewWriter(fh)
	if err := cw.Write(cluster.ExplainCSVHeader); err != nil {
		fh.Close()
		return nil, nil, fmt.Errorf("--explain-csv %s: %w", path, err)
	}
	if cw.Flush(); cw.Error() != nil {
		fh.Close()
		return nil, nil, fmt.Errorf("--explain-csv %s: %w", path, cw.Error())
	}
	return fh, func() { fh.Close() }, nil
}
