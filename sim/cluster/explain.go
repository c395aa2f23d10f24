package cluster

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/llmrouter/llmrouter/sim/workload"
)

// The explain mode (Options.Explain) sets what a policy predicted at each
// pick against what the simulated engines then did. The policy's side is
// its debug decision line — prefix-cache's "prefix-cache decision", the
// peers' "peer decision" — the same line an operator sees live, read from
// the scheduler's logger; the engines' side is their true state: each
// candidate's cached prefix and queued prefill at the moment of the pick,
// and the chosen one's cached tokens at admission and time to first token.
// Policies that log no prediction (round robin, least request) still get
// the engine-side numbers: how much cache their picks left on the table,
// and how far each TTFT was from its lower bound.

// decisionLines are the debug lines explain reads.
var decisionLines = map[string]bool{"prefix-cache decision": true, "peer decision": true}

// captureCore is a zap core that hands each decision line's fields to
// record and ignores every other entry.
type captureCore struct {
	record func(fields map[string]any)
}

func (c *captureCore) Enabled(l zapcore.Level) bool      { return l == zapcore.DebugLevel }
func (c *captureCore) With([]zapcore.Field) zapcore.Core { return c }
func (c *captureCore) Sync() error                       { return nil }

func (c *captureCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if decisionLines[e.Message] {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *captureCore) Write(_ zapcore.Entry, fs []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fs {
		f.AddTo(enc)
	}
	c.record(enc.Fields)
	return nil
}

// explainLogger is log with the capture added.
func explainLogger(log *zap.Logger, record func(map[string]any)) *zap.Logger {
	return zap.New(zapcore.NewTee(log.Core(), &captureCore{record: record}))
}

// candidate is one candidate of one pick: predicted (NaN where the policy
// said nothing) and true, in tokens and seconds.
type candidate struct {
	Addr                          string
	PredCached, PredAhead, PredTT float64
	Cached, Queued                int
}

// Decision is one pick under explain: the candidates in the policy's rank
// order (the engine-side numbers only, in instance order, when the policy
// logs none), the instance the request went to, and what happened.
type Decision struct {
	Request    string
	Arrival    time.Duration
	Prompt     int
	Candidates []candidate
	Chosen     int // index into Candidates
	// Admitted is the cached tokens at admission; TTFT the true time to
	// first token (from arrival); Held the time from arrival to the pick
	// (in the scheduler's admission queue while every instance was
	// saturated); Waited the time from dispatch to the engine scheduling it.
	Admitted    int
	TTFT        time.Duration
	Held        time.Duration
	Waited      time.Duration
	LowerBound  time.Duration
	IdealCached int
	dispatched  time.Duration
	key         float64 // how bad, for the worst list
}

// ErrorRow is the distribution of one quantity over the picks: predicted
// minus true (signed), or a true shortfall.
type ErrorRow struct {
	Name, Unit             string
	N                      int
	Mean, MeanAbs, P1, P50 float64
	P90, P99               float64
	values                 []float64
}

// Explanation is explain's summary of one run.
type Explanation struct {
	Policy string
	Rows   []ErrorRow
	// LowerBound is the TTFT of each request alone on an idle instance
	// holding every block any earlier request of the run computed
	// (prompts and replies): no router can do better on these arrivals.
	LowerBoundMeanMs, LowerBoundP99Ms float64
	// Worst are the largest TTFT mispredictions (for a policy that logs
	// none, the largest TTFTs over their lower bound); Slowest the largest
	// TTFTs over their lower bound.
	Worst, Slowest []Decision
}

// explainer gathers the decisions of one run.
type explainer struct {
	pending map[string]map[string]any // request id → its decision line
	seen    map[uint64]struct{}       // every engine block hash of the run so far
	rows    []ErrorRow
	lb      []float64
	worst   []Decision
	slowest []Decision
	keep    int
	policy  string
	csv     *csv.Writer // Options.ExplainCSV; nil: none
	line    []string
}

// Rows of the explanation, in print order.
const (
	rowCachedAll = iota
	rowCachedChosen
	rowCachedAdmitted
	rowAhead
	rowTTFT
	rowHeld
	rowLeft
	rowRegret
	rowRegretNew
	rowRegretKnown
	rowRecomputed
	nRows
)

func newExplainer(keep int, policy string, w io.Writer) *explainer {
	x := &explainer{pending: map[string]map[string]any{}, seen: map[uint64]struct{}{}, keep: keep, policy: policy}
	if w != nil {
		x.csv = csv.NewWriter(w)
	}
	x.rows = make([]ErrorRow, nRows)
	x.rows[rowCachedAll] = ErrorRow{Name: "cached tokens, every candidate (predicted - true at the pick)", Unit: "tok"}
	x.rows[rowCachedChosen] = ErrorRow{Name: "cached tokens, chosen (predicted - true at the pick)", Unit: "tok"}
	x.rows[rowCachedAdmitted] = ErrorRow{Name: "cached tokens, chosen (predicted - true at admission)", Unit: "tok"}
	x.rows[rowAhead] = ErrorRow{Name: "prefill queued ahead, chosen (predicted - true)", Unit: "tok"}
	x.rows[rowTTFT] = ErrorRow{Name: "TTFT from the pick, chosen (predicted - true)", Unit: "ms"}
	x.rows[rowHeld] = ErrorRow{Name: "held in the scheduler's queue before the pick", Unit: "ms"}
	x.rows[rowLeft] = ErrorRow{Name: "cache left behind (best candidate's true cached - chosen's)", Unit: "tok"}
	x.rows[rowRegret] = ErrorRow{Name: "TTFT over its lower bound", Unit: "ms"}
	// Split by whether any earlier request computed some of the prompt: a
	// prefix nobody computed is prefilled whole wherever it goes, and where
	// it goes decides only its queue and whom its prefill delays.
	x.rows[rowRegretNew] = ErrorRow{Name: "  of prompts no earlier request computed any of", Unit: "ms"}
	x.rows[rowRegretKnown] = ErrorRow{Name: "  of the others", Unit: "ms"}
	x.rows[rowRecomputed] = ErrorRow{Name: "computed before, recomputed (ideal - cached at admission)", Unit: "tok"}
	return x
}

func (x *explainer) record(fields map[string]any) {
	if id, ok := fields["request_id"].(string); ok {
		x.pending[id] = fields
	}
}

// picked builds the decision of flight f sent to instance in, reading every
// engine as it is now.
func (x *explainer) picked(s *sim, f *flight, in *instance) *Decision {
	d := &Decision{Request: f.id, Arrival: f.req.Arrival, Prompt: f.prompt, dispatched: s.clock.now, Chosen: -1}
	line := x.pending[f.id]
	delete(x.pending, f.id)
	add := func(addr string, c candidate) {
		inst := s.byAddr[addr]
		if inst == nil {
			return
		}
		c.Addr = addr
		c.Cached = inst.eng.CachedPrefix(f.hashes, f.prompt)
		c.Queued = inst.eng.QueuedPrefill()
		if inst == in {
			d.Chosen = len(d.Candidates)
		}
		d.Candidates = append(d.Candidates, c)
	}
	if costs, ok := line["costs"].([]any); ok {
		for _, e := range costs {
			m, _ := e.(map[string]any)
			id, _ := m["id"].(string)
			c := candidate{PredCached: math.NaN(), PredAhead: math.NaN(), PredTT: math.NaN()}
			if u, ok := m["uncached_tokens"].(float64); ok {
				c.PredCached = float64(f.prompt) - u
			}
			if a, ok := m["ahead_tokens"].(float64); ok {
				c.PredAhead = a
			}
			if t, ok := m["ttft_ms"].(float64); ok {
				c.PredTT = t / 1e3
			}
			add(id, c)
		}
	}
	if d.Chosen < 0 { // no line, or the chosen instance not in it
		d.Candidates = d.Candidates[:0]
		for _, inst := range s.insts {
			add(inst.addr, candidate{PredCached: math.NaN(), PredAhead: math.NaN(), PredTT: math.NaN()})
		}
	}
	// The lower bound: the longest prefix any earlier request computed, on
	// the fastest idle instance.
	bs := s.o.Engine.BlockSize
	maxBlocks := min((f.prompt-1)/bs, len(f.hashes))
	ideal := 0
	for ideal < maxBlocks {
		if _, ok := x.seen[f.hashes[ideal]]; !ok {
			break
		}
		ideal++
	}
	for _, h := range f.hashes {
		x.seen[h] = struct{}{}
	}
	d.IdealCached = ideal * bs
	d.LowerBound = time.Duration(math.MaxInt64)
	for _, inst := range s.insts {
		d.LowerBound = min(d.LowerBound, idlePrefill(inst, f.prompt-d.IdealCached))
	}
	return d
}

// idlePrefill is the time an idle instance takes to compute tokens prompt
// tokens and produce the first output token.
func idlePrefill(in *instance, tokens int) time.Duration {
	cfg := in.eng.Config()
	tokens = max(tokens, 1)
	var t time.Duration
	for tokens > 0 {
		n := min(tokens, cfg.MaxNumBatchedTokens)
		t += cfg.StepTime(n, 0)
		tokens -= n
	}
	return t
}

// firstToken completes d with what the engine did and folds it into the
// distributions.
func (x *explainer) firstToken(d *Decision, at time.Duration, cached int, scheduled time.Duration) {
	d.Admitted, d.TTFT, d.Waited = cached, at-d.Arrival, max(scheduled-d.dispatched, 0)
	d.Held = max(d.dispatched-d.Arrival, 0)
	// The policy predicts from the moment it picks: time the request spent
	// held in the scheduler's admission queue before that (every instance
	// saturated) is no error of its model, and is a row of its own.
	fromPick := (d.TTFT - d.Held).Seconds()
	add := func(row int, v float64) {
		if !math.IsNaN(v) {
			x.rows[row].values = append(x.rows[row].values, v)
		}
	}
	c := d.Candidates[d.Chosen]
	best := 0
	for _, o := range d.Candidates {
		add(rowCachedAll, o.PredCached-float64(o.Cached))
		best = max(best, o.Cached)
	}
	add(rowCachedChosen, c.PredCached-float64(c.Cached))
	add(rowCachedAdmitted, c.PredCached-float64(cached))
	add(rowAhead, c.PredAhead-float64(c.Queued))
	add(rowTTFT, (c.PredTT-fromPick)*1e3)
	add(rowHeld, float64(d.Held)/1e6)
	add(rowLeft, float64(best-c.Cached))
	add(rowRegret, float64(d.TTFT-d.LowerBound)/1e6)
	if d.IdealCached == 0 {
		add(rowRegretNew, float64(d.TTFT-d.LowerBound)/1e6)
	} else {
		add(rowRegretKnown, float64(d.TTFT-d.LowerBound)/1e6)
	}
	add(rowRecomputed, float64(max(d.IdealCached-cached, 0)))
	if x.csv != nil {
		x.writeCSV(d, fromPick)
	}
	x.lb = append(x.lb, float64(d.LowerBound)/1e6)
	// Worst: the largest TTFT misprediction when the policy predicts TTFT,
	// else the largest TTFT over the lower bound.
	regret := float64(d.TTFT-d.LowerBound) / 1e9
	d.key = regret
	if !math.IsNaN(c.PredTT) {
		d.key = math.Abs(c.PredTT - fromPick)
	}
	if x.keep > 0 {
		x.worst = keepWorst(x.worst, *d, x.keep)
		d.key = regret
		x.slowest = keepWorst(x.slowest, *d, x.keep)
	}
}

// ExplainCSVHeader names Options.ExplainCSV's columns: the policy, the
// request, when it arrived (seconds of simulated time), its prompt, the
// most of it any earlier request had computed, the chosen instance and
// its rank in the policy's order, what the policy predicted there (empty
// when it predicts nothing) against what the engine held and had queued at
// the pick and held at admission, and the request's TTFT (from arrival,
// and from the pick) against its lower bound, in milliseconds.
var ExplainCSVHeader = []string{
	"policy", "request", "arrival_s", "prompt_tokens", "ideal_cached_tokens", "chosen", "rank",
	"pred_cached_tokens", "cached_at_pick_tokens", "cached_at_admission_tokens",
	"pred_ahead_tokens", "queued_ahead_tokens", "pred_ttft_ms", "ttft_from_pick_ms",
	"ttft_ms", "lower_bound_ms", "held_ms", "waited_ms",
}

// writeCSV writes d's row (ExplainCSVHeader); the first write error stays
// in x.csv and Run returns it.
func (x *explainer) writeCSV(d *Decision, fromPick float64) {
	c := d.Candidates[d.Chosen]
	num := func(v float64, scale float64) string {
		if math.IsNaN(v) {
			return ""
		}
		return strconv.FormatFloat(v*scale, 'f', -1, 64)
	}
	ms := func(t time.Duration) string { return strconv.FormatFloat(float64(t)/1e6, 'f', 3, 64) }
	x.line = append(x.line[:0], x.policy, d.Request, strconv.FormatFloat(d.Arrival.Seconds(), 'f', 6, 64),
		strconv.Itoa(d.Prompt), strconv.Itoa(d.IdealCached), c.Addr, strconv.Itoa(d.Chosen),
		num(c.PredCached, 1), strconv.Itoa(c.Cached), strconv.Itoa(d.Admitted),
		num(c.PredAhead, 1), strconv.Itoa(c.Queued), num(c.PredTT, 1e3), num(fromPick, 1e3),
		ms(d.TTFT), ms(d.LowerBound), ms(d.Held), ms(d.Waited))
	_ = x.csv.Write(x.line)
}

// flushCSV writes out what the CSV writer holds and returns its first
// error.
func (x *explainer) flushCSV() error {
	if x == nil || x.csv == nil {
		return nil
	}
	x.csv.Flush()
	if err := x.csv.Error(); err != nil {
		return fmt.Errorf("explain CSV: %w", err)
	}
	return nil
}

// keepWorst inserts d into list (by key, largest first) if it is among
// the keep largest.
func keepWorst(list []Decision, d Decision, keep int) []Decision {
	if len(list) < keep || d.key > list[len(list)-1].key {
		i := sort.Search(len(list), func(i int) bool { return list[i].key < d.key })
		list = slices.Insert(list, i, d)
		if len(list) > keep {
			list = list[:keep]
		}
	}
	return list
}

func (x *explainer) result(policy string) *Explanation {
	e := &Explanation{Policy: policy, Worst: x.worst, Slowest: x.slowest}
	for _, r := range x.rows {
		if len(r.values) == 0 {
			continue
		}
		v := r.values
		sum, abs := 0.0, 0.0
		for _, a := range v {
			sum += a
			abs += math.Abs(a)
		}
		sort.Float64s(v)
		r.N, r.Mean, r.MeanAbs = len(v), sum/float64(len(v)), abs/float64(len(v))
		r.P1, r.P50, r.P90, r.P99 = workload.Percentile(v, 1), workload.Percentile(v, 50), workload.Percentile(v, 90), workload.Percentile(v, 99)
		r.values = nil
		e.Rows = append(e.Rows, r)
	}
	if len(x.lb) > 0 {
		sum := 0.0
		for _, v := range x.lb {
			sum += v
		}
		sort.Float64s(x.lb)
		e.LowerBoundMeanMs, e.LowerBoundP99Ms = sum/float64(len(x.lb)), workload.Percentile(x.lb, 99)
	}
	return e
}

// Write prints the explanation: the distributions, then the worst decisions
// with every candidate's predicted and true numbers.
func (e *Explanation) Write(w io.Writer) {
	fmt.Fprintf(w, "Explain %s: predicted vs true, per pick (lower bound on TTFT: mean %.1f ms, p99 %.1f ms)\n",
		e.Policy, e.LowerBoundMeanMs, e.LowerBoundP99Ms)
	fmt.Fprintf(w, "  %-62s %7s %9s %9s %9s %9s %9s %9s\n", "quantity", "n", "mean", "mean|e|", "p1", "p50", "p90", "p99")
	for _, r := range e.Rows {
		fmt.Fprintf(w, "  %-62s %7d %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f  %s\n", r.Name, r.N, r.Mean, r.MeanAbs, r.P1, r.P50, r.P90, r.P99, r.Unit)
	}
	writeDecisions(w, "worst decisions (by |TTFT predicted - true| when predicted, else TTFT over its lower bound)", e.Worst)
	writeDecisions(w, "slowest decisions (by TTFT over its lower bound)", e.Slowest)
	fmt.Fprintln(w, strings.Repeat("-", 50))
}

func writeDecisions(w io.Writer, title string, list []Decision) {
	if len(list) == 0 {
		return
	}
	fmt.Fprintf(w, "  %s:\n", title)
	na := func(v float64, scale float64) string {
		if math.IsNaN(v) {
			return "-"
		}
		return fmt.Sprintf("%.0f", v*scale)
	}
	for _, d := range list {
		fmt.Fprintf(w, "  %s at %s: prompt %d tok, TTFT %.1f ms (lower bound %.1f, ideal cached %d), cached at admission %d, held %.1f ms in the scheduler, waited %.1f ms in the engine\n",
			d.Request, d.Arrival.Round(time.Millisecond), d.Prompt, float64(d.TTFT)/1e6, float64(d.LowerBound)/1e6, d.IdealCached, d.Admitted, float64(d.Held)/1e6, float64(d.Waited)/1e6)
		for i, c := range d.Candidates {
			mark := " "
			if i == d.Chosen {
				mark = "*"
			}
			fmt.Fprintf(w, "    %s %-16s cached pred %6s true %6d   ahead pred %7s true %7d   ttft pred %7s ms\n",
				mark, c.Addr, na(c.PredCached, 1), c.Cached, na(c.PredAhead, 1), c.Queued, na(c.PredTT, 1e3))
		}
	}
}
