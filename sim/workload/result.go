package workload

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Outcome is one request's measurements.
type Outcome struct {
	OK bool
	// Rejected marks a request the router shed for want of capacity (429,
	// or 503) rather than one that failed; Err says why, Latency how long
	// the answer took.
	Rejected bool
	// Err says why a failed (or rejected) request failed.
	Err          string
	InputTokens  int
	OutputTokens int
	// CachedTokens is the prompt tokens served from a prefix cache;
	// CachedKnown says the server reported it (live mode).
	CachedTokens int
	CachedKnown  bool
	// TTFT is from the request's arrival to its first output token; Latency
	// to its last.
	TTFT, Latency time.Duration
	// End is when the request completed, since the start of the run.
	End time.Duration
}

// TPOT is the time per output token after the first, as vLLM's benchmark
// defines it; false for replies of one token.
func (o Outcome) TPOT() (time.Duration, bool) {
	if o.OutputTokens < 2 {
		return 0, false
	}
	return (o.Latency - o.TTFT) / time.Duration(o.OutputTokens-1), true
}

// Recorder accumulates outcomes into a Summary.
type Recorder struct {
	ttft, tpot         []float64 // ms
	ok, failed         int
	rejected           int
	rejects            map[string]int // rejections by reason
	slowestReject      time.Duration
	input, output      int64
	cached             int64
	cachedKnown        bool
	end                time.Duration
	errs               map[string]int
	prefixKnown        bool
	hits, prefixTokens int64
}

// Add records one outcome.
func (r *Recorder) Add(o Outcome) {
	if !o.OK && o.Rejected {
		r.rejected++
		r.slowestReject = max(r.slowestReject, o.Latency)
		if r.rejects == nil {
			r.rejects = map[string]int{}
		}
		if len(r.rejects) < 16 || r.rejects[o.Err] > 0 {
			r.rejects[o.Err]++
		}
		return
	}
	if !o.OK {
		r.failed++
		if r.errs == nil {
			r.errs = map[string]int{}
		}
		if len(r.errs) < 16 || r.errs[o.Err] > 0 {
			r.errs[o.Err]++
		}
		return
	}
	r.ok++
	r.input += int64(o.InputTokens)
	r.output += int64(o.OutputTokens)
	r.cached += int64(o.CachedTokens)
	r.cachedKnown = r.cachedKnown || o.CachedKnown
	r.end = max(r.end, o.End)
	r.ttft = append(r.ttft, ms(o.TTFT))
	if t, ok := o.TPOT(); ok {
		r.tpot = append(r.tpot, ms(t))
	}
}

// SetPrefixCache sets the prefix cache's token hits and lookups over the
// run (the simulator reads them from its engines).
func (r *Recorder) SetPrefixCache(hits, queries int64) {
	r.prefixKnown, r.hits, r.prefixTokens = true, hits, queries
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Summary is the EAS benchmark's table for one run. The JSON form has
// exactly the keys below; the rest is for the text report and for tests.
type Summary struct {
	Policy            string  `json:"policy"`
	Requests          int     `json:"requests"`
	DurationS         float64 `json:"duration_s"`
	InputTokens       int64   `json:"input_tokens"`
	OutputTokens      int64   `json:"output_tokens"`
	RequestThroughput float64 `json:"request_throughput"`
	OutputThroughput  float64 `json:"output_throughput"`
	TotalThroughput   float64 `json:"total_throughput"`
	TTFTMeanMs        float64 `json:"ttft_mean_ms"`
	TTFTMedianMs      float64 `json:"ttft_median_ms"`
	TTFTP99Ms         float64 `json:"ttft_p99_ms"`
	TPOTMeanMs        float64 `json:"tpot_mean_ms"`
	TPOTMedianMs      float64 `json:"tpot_median_ms"`
	TPOTP99Ms         float64 `json:"tpot_p99_ms"`
	// PrefixHitRatio is prompt tokens served from prefix caches over prompt
	// tokens looked up; null when the target does not say (live mode
	// against servers that report no cached tokens).
	PrefixHitRatio *float64 `json:"prefix_hit_ratio"`
	// Rejected counts requests the router shed for want of capacity (429
	// or 503), apart from failures: under overload a router that answers
	// at once beats one that lets requests time out.
	Rejected int `json:"rejected"`

	// Failed counts requests that got neither an answer nor a rejection;
	// Errors counts them by kind ({} when none).
	Failed int            `json:"failed"`
	Errors map[string]int `json:"errors"`
	// Rejections counts the rejected requests by reason;
	// RejectedSlowestMs is the longest a rejected request waited for its
	// answer and TTFTMaxMs the longest time to first token (overload runs
	// bound both).
	Rejections        map[string]int `json:"rejections"`
	RejectedSlowestMs float64        `json:"-"`
	TTFTMaxMs         float64        `json:"-"`
	// PerInstance counts the requests each instance served (simulator);
	// null when the run cannot tell (live mode).
	PerInstance []InstanceCount `json:"per_instance"`
	// Extra holds mode-specific facts for the text report (preemptions...).
	Extra []KV `json:"-"`
}

// InstanceCount is one instance's share of a run.
type InstanceCount struct {
	Instance string `json:"instance"`
	Requests int    `json:"requests"`
}

// KV is a labelled value of the text report.
type KV struct {
	Key, Value string
}

// Summary computes the summary. The duration runs from the start of the run
// to the last completion.
func (r *Recorder) Summary(policy string) Summary {
	s := Summary{Policy: policy, Requests: r.ok, Failed: r.failed, Rejected: r.rejected, InputTokens: r.input, OutputTokens: r.output}
	if len(r.errs) > 0 {
		s.Errors = r.errs
	}
	if len(r.rejects) > 0 {
		s.Rejections = r.rejects
	}
	s.RejectedSlowestMs = ms(r.slowestReject)
	if len(r.ttft) > 0 {
		s.TTFTMaxMs = slices.Max(r.ttft)
	}
	s.DurationS = r.end.Seconds()
	if s.DurationS > 0 {
		s.RequestThroughput = float64(r.ok) / s.DurationS
		s.OutputThroughput = float64(r.output) / s.DurationS
		s.TotalThroughput = float64(r.input+r.output) / s.DurationS
	}
	s.TTFTMeanMs, s.TTFTMedianMs, s.TTFTP99Ms = stats(r.ttft)
	s.TPOTMeanMs, s.TPOTMedianMs, s.TPOTP99Ms = stats(r.tpot)
	switch {
	case r.prefixKnown && r.prefixTokens > 0:
		v := float64(r.hits) / float64(r.prefixTokens)
		s.PrefixHitRatio = &v
	case r.prefixKnown:
		v := 0.0
		s.PrefixHitRatio = &v
	case r.cachedKnown && r.input > 0:
		v := float64(r.cached) / float64(r.input)
		s.PrefixHitRatio = &v
	}
	return s
}

// stats returns the mean, the median and the 99th percentile (linear
// interpolation between closest ranks, as numpy's percentile).
func stats(xs []float64) (mean, median, p99 float64) {
	if len(xs) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	var sum float64
	for _, x := range s {
		sum += x
	}
	return sum / float64(len(s)), Percentile(s, 50), Percentile(s, 99)
}

// Percentile of sorted values, linearly interpolated.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	pos := p / 100 * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(sorted)-1)
	f := pos - float64(lo)
	return sorted[lo] + f*(sorted[hi]-sorted[lo])
}

// WriteTable prints s as the EAS (vLLM) benchmark table, plus the prefix hit
// ratio and, when known, the load per instance.
func WriteTable(w io.Writer, s Summary) {
	line := func(k string, v any) { fmt.Fprintf(w, "%-40s %v\n", k+":", v) }
	f2 := func(x float64) string { return fmt.Sprintf("%.2f", x) }
	fmt.Fprintln(w, "============ Serving Benchmark Result ============")
	line("Policy", s.Policy)
	line("Successful requests", s.Requests)
	if s.Failed > 0 {
		line("Failed requests", s.Failed)
	}
	line("Rejected requests (429/503)", s.Rejected)
	if s.Rejected > 0 {
		line("Slowest rejection (ms)", f2(s.RejectedSlowestMs))
	}
	line("Benchmark duration (s)", f2(s.DurationS))
	line("Total input tokens", s.InputTokens)
	line("Total generated tokens", s.OutputTokens)
	line("Request throughput (req/s)", f2(s.RequestThroughput))
	line("Output token throughput (tok/s)", f2(s.OutputThroughput))
	line("Total Token throughput (tok/s)", f2(s.TotalThroughput))
	fmt.Fprintln(w, "---------------Time to First Token----------------")
	line("Mean TTFT (ms)", f2(s.TTFTMeanMs))
	line("Median TTFT (ms)", f2(s.TTFTMedianMs))
	line("P99 TTFT (ms)", f2(s.TTFTP99Ms))
	fmt.Fprintln(w, "-----Time per Output Token (excl. 1st token)------")
	line("Mean TPOT (ms)", f2(s.TPOTMeanMs))
	line("Median TPOT (ms)", f2(s.TPOTMedianMs))
	line("P99 TPOT (ms)", f2(s.TPOTP99Ms))
	fmt.Fprintln(w, "------------------Prefix Cache--------------------")
	if s.PrefixHitRatio != nil {
		line("Prefix cache hit ratio", fmt.Sprintf("%.4f", *s.PrefixHitRatio))
	} else {
		line("Prefix cache hit ratio", "n/a (the target reports no cached tokens)")
	}
	if len(s.PerInstance) > 0 {
		parts := make([]string, len(s.PerInstance))
		for i, c := range s.PerInstance {
			parts[i] = fmt.Sprintf("%s=%d", c.Instance, c.Requests)
		}
		line("Requests per instance", strings.Join(parts, " "))
	}
	for _, kv := range s.Extra {
		line(kv.Key, kv.Value)
	}
	for _, l := range []struct {
		label string
		m     map[string]int
	}{{"Error", s.Errors}, {"Rejection", s.Rejections}} {
		keys := make([]string, 0, len(l.m))
		for k := range l.m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			line(l.label, fmt.Sprintf("%dx %s", l.m[k], k))
		}
	}
	fmt.Fprintln(w, "==================================================")
}

// WriteComparison prints one line per run, for comparing policies at a glance.
func WriteComparison(w io.Writer, ss []Summary) {
	width := 18 // the column fits the longest name (dynamic-pd-split (2P+4D))
	for _, s := range ss {
		width = max(width, len(s.Policy))
	}
	fmt.Fprintf(w, "%-*s %8s %10s %10s %10s %10s %10s %8s\n", width,
		"policy", "requests", "out tok/s", "TTFT mean", "TTFT p50", "TTFT p99", "TPOT mean", "hit")
	for _, s := range ss {
		hit := "n/a"
		if s.PrefixHitRatio != nil {
			hit = fmt.Sprintf("%.3f", *s.PrefixHitRatio)
		}
		fmt.Fprintf(w, "%-*s %8d %10.1f %10.1f %10.1f %10.1f %10.2f %8s\n", width,
			s.Policy, s.Requests, s.OutputThroughput, s.TTFTMeanMs, s.TTFTMedianMs, s.TTFTP99Ms, s.TPOTMeanMs, hit)
	}
}

// WriteJSON prints the summaries as a JSON array.
func WriteJSON(w io.Writer, ss []Summary) error {
	if ss == nil {
		ss = []Summary{}
	}
	out := make([]Summary, len(ss))
	for i, s := range ss {
		if s.Errors == nil {
			s.Errors = map[string]int{}
		}
		if s.Rejections == nil {
			s.Rejections = map[string]int{}
		}
		out[i] = s
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
