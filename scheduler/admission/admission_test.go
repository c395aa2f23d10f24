package admission

import (
	"math"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

func newSat(mutate func(*config.Config)) *Saturation {
	cfg := config.Default()
	if mutate != nil {
		mutate(&cfg)
	}
	return New(cfg)
}

func near(t *testing.T, name string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %.9g, want %.9g", name, got, want)
	}
}

func TestNothingQueuedPredictsNoWait(t *testing.T) {
	s := newSat(nil)
	c := &policy.Instance{Running: 199, BatchLimit: 200, GenTPS: 1, PrefixCacheHitRatio: -1}
	if w := s.PredictedWait(c); w != 0 {
		t.Fatalf("nothing waiting, nothing unreported, a free place: predicted %s, want 0", w)
	}
	// At its limit a new request waits for a running one to finish.
	c.Running = 200
	c.Speed = 1
	if w := s.PredictedWait(c); w <= 0 {
		t.Fatalf("at its batch limit: predicted %s, want the wait for a place", w)
	}
}

// TestPredictedWaitPrefill: the prefill of the requests ahead, by the cost
// model, at model speed (no measurable speed in the report).
func TestPredictedWaitPrefill(t *testing.T) {
	s := newSat(nil)
	m := s.model
	// 2 waiting at the mean prompt (512 before any request is seen), one
	// unreported pick of 3,000 prompt tokens, half of all prompts cached.
	c := &policy.Instance{Running: 3, Waiting: 2, InflightRequests: 1, InflightPromptTokens: 3000, PrefixCacheHitRatio: 0.5}
	ahead := (2*512.0 + 3000) * 0.5
	step := m.Step + m.DecodeToken*4
	near(t, "wait", s.wait(c), ahead*m.PrefillToken+ahead/m.MaxBatchedTokens*step)
	// The mean prompt is learnt from requests.
	for range 200 {
		s.Observe(&policy.Request{PromptTokens: 8192})
	}
	if got := s.avgPrompt; math.Abs(got-8192) > 1 {
		t.Fatalf("mean prompt after 200 requests of 8192 tokens: %g", got)
	}
}

// TestPredictedWaitSlowBatchLimitedEngine: an engine at its batch limit
// (4 sequences, as `enginesim --max-num-seqs 4`) eleven times slower than
// the model (llama3-8b-l4 against the H100 defaults): requests beyond the
// limit, and a new one, each wait for a running request to finish, at the
// engine's measured pace.
func TestPredictedWaitSlowBatchLimitedEngine(t *testing.T) {
	s := newSat(nil)
	for range 400 {
		s.Completed(64)
	}
	// L4: a step of 4 decoding sequences takes 64 ms + 4 × 67 µs.
	realStep := 0.064 + 4*67e-6
	perSeat := 64 * realStep / 4 // a running request finishes every ~1 s
	c := &policy.Instance{Running: 4, Waiting: 2, GenTPS: 4 / realStep, PrefixCacheHitRatio: 0.9}
	s.Reported(c)
	s.Reported(c) // held on two reports: at its limit
	if c.BatchLimit != 4 || c.Speed < 0.08 || c.Speed > 0.1 {
		t.Fatalf("after two reports of 4 running, 2 waiting at an L4's pace: batch limit %d, speed %.3f; want 4 and about 0.09", c.BatchLimit, c.Speed)
	}
	for _, tc := range []struct {
		running, waiting int64
		seats            float64
	}{
		{4, 2, 3}, // two ahead and this one
		{4, 1, 2},
		{4, 0, 1}, // full: a running one must finish
		{3, 0, 0}, // a free place
	} {
		c.Running, c.Waiting = tc.running, tc.waiting
		want := tc.seats * perSeat
		got := s.PredictedWait(c).Seconds()
		if got < want*0.99 || got > want*1.03+0.05 {
			t.Errorf("running %d, waiting %d: predicted %.3f s, want about %.3f s (the real engine's pace)", tc.running, tc.waiting, got, want)
		}
		if sat, why := s.Saturated(c); sat != (want >= 2) || (sat && why != PredictedWait) {
			t.Errorf("running %d, waiting %d (%.2f s): saturated=%v %q against the 2 s target", tc.running, tc.waiting, got, sat, why)
		}
		// A request with less of its wait left than the predicted wait
		// is held back; a free place suits any.
		if sat, _ := s.SaturatedWithin(c, 500*time.Millisecond); sat != (tc.seats > 0) {
			t.Errorf("running %d, waiting %d (%.2f s), 0.5 s of wait left: saturated=%v", tc.running, tc.waiting, got, sat)
		}
	}
	// Full (4 running, none waiting): a place in about 1 s on average,
	// but the four may all take their whole 4.1 s reply. A request with 3 s
	// of its wait left does not go there; one with 5 s does.
	c.Running, c.Waiting = 4, 0
	if sat, why := s.SaturatedWithin(c, 3*time.Second); !sat || why != PredictedWait {
		t.Errorf("full engine, 3 s of wait left: saturated=%v %q, want predicted_wait (the batch may take 4.1 s to turn over)", sat, why)
	}
	if sat, why := s.SaturatedWithin(c, 5*time.Second); sat {
		t.Errorf("full engine, 5 s of wait left: saturated (%s)", why)
	}
	// The speed is smoothed: one report of a fast pace moves it a tenth.
	c.Running, c.GenTPS = 4, 4/0.0058
	s.Reported(c)
	if c.Speed > 0.2 {
		t.Fatalf("one fast report took the speed to %.3f", c.Speed)
	}
	// Without the limit learnt, and at model speed, an engine with room
	// predicts next to nothing.
	idle := &policy.Instance{Running: 2, InflightRequests: 1, InflightPromptTokens: 100, PrefixCacheHitRatio: -1}
	if w := s.PredictedWait(idle); w > 10*time.Millisecond {
		t.Fatalf("an engine with room: predicted %s", w)
	}
}

func TestSaturatedReasonsAndCap(t *testing.T) {
	s := newSat(func(c *config.Config) { c.Scheduler.MaxWaiting = 4; c.Scheduler.MaxKVCacheUsage = 0.9 })
	for _, tc := range []struct {
		name string
		c    policy.Instance
		want Reason
	}{
		{"idle", policy.Instance{PrefixCacheHitRatio: -1}, NotSaturated},
		// The cap holds whatever the prediction: 4 tiny requests predict
		// next to nothing.
		{"cap", policy.Instance{Waiting: 3, InflightRequests: 1, PrefixCacheHitRatio: 1}, MaxWaiting},
		{"kv", policy.Instance{KVCacheUsage: 0.85, NumGPUBlocks: 100, BlockSize: 16, InflightPromptTokens: 100, InflightRequests: 1, PrefixCacheHitRatio: -1}, KVCache},
		// The same pick to an engine serving 95 % of prompt tokens from
		// its cache takes 5 new tokens of KV, not 100.
		{"kv, prompt mostly cached", policy.Instance{KVCacheUsage: 0.85, NumGPUBlocks: 100, BlockSize: 16, InflightPromptTokens: 100, InflightRequests: 1, PrefixCacheHitRatio: 0.95}, NotSaturated},
		{"kv, cached prompts fill it", policy.Instance{KVCacheUsage: 0.85, NumGPUBlocks: 100, BlockSize: 16, InflightPromptTokens: 3000, InflightRequests: 1, PrefixCacheHitRatio: 0.95}, KVCache},
		// One waiting request is under max_waiting, but its 200k
		// uncached tokens take seconds to prefill.
		{"long prompts", policy.Instance{Running: 1, InflightRequests: 1, InflightPromptTokens: 200000, PrefixCacheHitRatio: -1}, PredictedWait},
	} {
		sat, why := s.Saturated(&tc.c)
		if why != tc.want || sat != (tc.want != NotSaturated) {
			t.Errorf("%s: saturated=%v %q, want %q (predicted wait %s)", tc.name, sat, why, tc.want, s.PredictedWait(&tc.c))
		}
	}
	off := newSat(func(c *config.Config) { c.Scheduler.MaxPredictedWait = 0 })
	if sat, _ := off.Saturated(&policy.Instance{Running: 1, InflightRequests: 1, InflightPromptTokens: 200000, PrefixCacheHitRatio: -1}); sat {
		t.Fatal("max_predicted_wait 0 still judged by predicted wait")
	}
}

func TestFilter(t *testing.T) {
	s := newSat(func(c *config.Config) { c.Scheduler.MaxWaiting = 2 })
	a := &policy.Instance{ID: "a", Waiting: 2, PrefixCacheHitRatio: -1}
	b := &policy.Instance{ID: "b", PrefixCacheHitRatio: -1, Saturated: true}
	out := s.Filter([]*policy.Instance{a, b}, nil)
	if len(out) != 1 || out[0] != b || !a.Saturated || b.Saturated {
		t.Fatalf("filter: %v (a saturated %v, b %v)", out, a.Saturated, b.Saturated)
	}
}

func TestRetryAfter(t *testing.T) {
	s := newSat(nil)
	most := 10 * time.Second
	capped := &policy.Instance{Waiting: 16, PrefixCacheHitRatio: 1}
	if got := s.RetryAfter([]*policy.Instance{capped}, most); got != 1 {
		t.Fatalf("saturated by count only: Retry-After %d, want 1", got)
	}
	// 5.3 s predicted: 3.3 s over the 2 s target: 4 s.
	long := &policy.Instance{Running: 1, InflightRequests: 1, InflightPromptTokens: 300000, PrefixCacheHitRatio: -1}
	w := s.PredictedWait(long).Seconds()
	if got, want := s.RetryAfter([]*policy.Instance{long}, most), int32(math.Ceil(w-2)); got != want || want < 2 {
		t.Fatalf("Retry-After %d, want %d (predicted %.2f s)", got, want, w)
	}
	if got := s.RetryAfter([]*policy.Instance{long, capped}, most); got != 1 {
		t.Fatalf("the first to have room decides: %d, want 1", got)
	}
	huge := &policy.Instance{Running: 1, InflightRequests: 1, InflightPromptTokens: 1e8, PrefixCacheHitRatio: -1}
	if got := s.RetryAfter([]*policy.Instance{huge}, most); got != 10 {
		t.Fatalf("bounded by wait_schedule_timeout: %d, want 10", got)
	}
	if got := s.RetryAfter(nil, most); got != 10 {
		t.Fatalf("no candidate: %d, want the bound", got)
	}
}

func TestBatchLimit(t *testing.T) {
	for _, tc := range []struct{ prev, held, running, waiting, want, wantHeld int64 }{
		{0, 0, 3, 0, 0, 0},  // never held one back: no limit known
		{0, 0, 4, 2, 0, 4},  // requests waiting while running 4, once: a hold begun, no limit yet
		{0, 4, 4, 1, 4, 4},  // and again on the next report: held at 4
		{0, 3, 4, 1, 4, 4},  // held at 3, then 4 (a place had freed): the larger
		{4, 0, 2, 0, 4, 0},  // finishing requests do not lower it
		{4, 0, 6, 0, 6, 0},  // running more shows a larger limit
		{4, 0, 6, 1, 6, 6},  // so it does with a request waiting
		{8, 0, 5, 1, 8, 5},  // one report of a request waiting at 5: a moment's wait, kept
		{8, 5, 5, 1, 5, 5},  // held at 5 on two reports (a fuller KV cache): lowered
		{8, 5, 6, 0, 8, 0},  // the hold ended: kept, nothing held
		{0, 0, 0, 3, 0, 0},  // nothing running: says nothing
		{8, 5, 0, 3, 8, 0},  // nor ends a hold into one later
		{0, 0, -1, 2, 0, 0}, // a bad report: says nothing
	} {
		got, held := BatchLimit(tc.prev, tc.held, tc.running, tc.waiting)
		if got != tc.want || held != tc.wantHeld {
			t.Errorf("BatchLimit(%d, held %d, running %d, waiting %d) = %d, held %d; want %d, held %d",
				tc.prev, tc.held, tc.running, tc.waiting, got, held, tc.want, tc.wantHeld)
		}
	}
}

// A prefill-role instance (pd-split) frees a place one step after each
// prefill, not after a whole output: its seat term is one step per seat,
// so it is not held back as if it decoded.
func TestPrefillInstanceSeatsTurnOverInOneStep(t *testing.T) {
	s := newSat(nil)
	m := s.model
	both := policy.Instance{Running: 4, Waiting: 2, BatchLimit: 4, PrefixCacheHitRatio: 0, Speed: 1}
	pre := both
	pre.Role = policy.RolePrefill
	ahead := 2 * s.avgPrompt
	step := m.Step + m.DecodeToken*4
	prefill := ahead * (m.PrefillToken + step/m.MaxBatchedTokens)
	near(t, "prefill-role wait", s.wait(&pre), prefill+3*step/4)
	near(t, "both-role wait", s.wait(&both), prefill+3*s.avgOut*step/4)
}

// TestOverWaitMatchesModelWait: the division-free verdict agrees with
// modelWait's two waits on a spread of instances, targets and budgets.
func TestOverWaitMatchesModelWait(t *testing.T) {
	s := newSat(nil)
	n := 0
	for _, running := range []int64{0, 1, 3, 4, 16, 120} {
		for _, waiting := range []int64{0, 1, 2, 7} {
			for _, infl := range []int64{0, 1, 5} {
				for _, limit := range []int32{0, 4, 16} {
					for _, speed := range []float32{0, 0.09, 1, 3} {
						for _, budget := range []float64{0, 0.4, 1.5, 3, 9, math.Inf(1)} {
							c := &policy.Instance{Running: running, Waiting: waiting, InflightRequests: infl, InflightPromptTokens: infl * 900,
								BatchLimit: limit, Speed: speed, PrefixCacheHitRatio: 0.5}
							if n%2 == 1 {
								c.Role = policy.RolePrefill
							}
							queued := waiting + infl
							if queued <= 0 && !atLimit(c) {
								continue
							}
							e, l := s.modelWait(c, queued)
							sp := s.speed(c)
							want := (e > 0 || l > 0) && (e >= s.target*sp || l >= budget*sp)
							if got := s.overWait(c, queued, budget, s.avgPrompt, s.avgOut); got != want {
								t.Errorf("%+v budget %g: overWait %v, modelWait says %v (expected %g, longest %g, speed %g)", *c, budget, got, want, e/sp, l/sp, sp)
							}
							n++
						}
					}
				}
			}
		}
	}
	if n < 1000 {
		t.Fatalf("only %d cases", n)
	}
}

// TestColdEngineTakesABoundedBurst: an engine that has not yet shown its
// batch limit (no report with requests held back) is expected to take as
// many again as it runs (at least 4); beyond those, at longest it is priced
// as if its limit were what it runs: 4 running 128-token replies on an L4
// (8.2 s a turnover) take a new request with 10 s to wait while fewer than
// 4 unreported picks are ahead of it, not as the fifth (were 4 its limit,
// the fifth to eighth start after two turnovers, 16.4 s) — so a cold fleet's first burst does not
// pile up behind a limit not yet seen; with 20 s to wait, behind up to 7
// (behind 8 it would start after three).
func TestColdEngineTakesABoundedBurst(t *testing.T) {
	s := newSat(nil)
	for range 400 {
		s.Completed(128)
	}
	realStep := 0.064 + 4*67e-6
	c := &policy.Instance{Running: 4, GenTPS: 4 / realStep, PrefixCacheHitRatio: -1}
	s.Reported(c)
	if c.BatchLimit != 0 {
		t.Fatalf("batch limit %d after a report with nothing waiting", c.BatchLimit)
	}
	for infl := int64(1); infl <= 9; infl++ {
		c.InflightRequests, c.InflightPromptTokens = infl, infl*200
		sat, why := s.SaturatedWithin(c, 10*time.Second)
		if want := infl >= 4; sat != want {
			t.Errorf("%d unreported picks on a cold 4-running L4: saturated=%v %q, want %v", infl, sat, why, want)
		}
		sat, why = s.SaturatedWithin(c, 20*time.Second)
		if want := infl >= 8; sat != want {
			t.Errorf("%d unreported picks on a cold 4-running L4, 20 s to wait: saturated=%v %q, want %v", infl, sat, why, want)
		}
		if sat, _ := s.Saturated(c); sat {
			t.Errorf("%d unreported picks: saturated with no deadline (the expected wait is only their prefill)", infl)
		}
	}
	// Idle (a lagging report): assumed to run at least 4, so the fifth to
	// eighth request wait one turnover, the ninth two.
	idle := &policy.Instance{InflightRequests: 7, InflightPromptTokens: 1400, Speed: c.Speed, PrefixCacheHitRatio: -1}
	if sat, _ := s.SaturatedWithin(idle, 10*time.Second); sat {
		t.Error("idle cold engine, 7 unreported: saturated")
	}
	idle.InflightRequests = 8
	if sat, _ := s.SaturatedWithin(idle, 10*time.Second); !sat {
		t.Error("idle cold engine, 8 unreported: not saturated")
	}
	// An engine that never shows a limit, running long replies (a
	// turnover over the budget), still takes as many as it runs.
	h100 := &policy.Instance{Running: 100, InflightRequests: 15, InflightPromptTokens: 15 * 200, PrefixCacheHitRatio: -1}
	for range 400 {
		s.Completed(2048)
	}
	if sat, why := s.SaturatedWithin(h100, 10*time.Second); sat {
		t.Errorf("100 running 2,048-token replies, 15 unreported, no limit shown: saturated (%s)", why)
	}
}

// TestOptionalSettings: a KV limit and a reply length are given or not,
// never stood in for by a zero. Given, they apply; not given, a full cache
// (1) saturates and replies are taken at the default cost model's length.
func TestOptionalSettings(t *testing.T) {
	cfg := config.Default()
	st := Settings{Model: New(cfg).model, MaxWaiting: 100, MaxPredictedWait: time.Hour, WaitScheduleTimeout: 10 * time.Second}
	kv := func(s *Saturation, usage float64) Reason {
		_, why := s.Saturated(&policy.Instance{KVCacheUsage: usage, PrefixCacheHitRatio: -1})
		return why
	}
	unset := FromSettings(st)
	withKV := st
	withKV.MaxKVCacheUsage = Some(0.5)
	zeroKV := st
	zeroKV.MaxKVCacheUsage = Some(0.0)
	for _, tc := range []struct {
		name  string
		s     *Saturation
		usage float64
		want  Reason
	}{
		{"unset, 0.99 used", unset, 0.99, NotSaturated},
		{"unset, full", unset, 1, KVCache},
		{"0.5, 0.6 used", FromSettings(withKV), 0.6, KVCache},
		{"0.5, 0.4 used", FromSettings(withKV), 0.4, NotSaturated},
		// Zero is a limit like any other: nothing is under it.
		{"0, idle", FromSettings(zeroKV), 0, KVCache},
	} {
		if got := kv(tc.s, tc.usage); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}

	// A batch-limited engine's wait is one running request's reply per
	// seat: with replies of 64 tokens it is a quarter of the default 256's.
	c := &policy.Instance{Running: 4, Waiting: 2, BatchLimit: 4, PrefixCacheHitRatio: 1, Speed: 1}
	short := st
	short.OutputTokens = Some(64.0)
	def := float64(config.DefaultCostModel().DefaultOutputTokens)
	if unset.avgOut != def || FromSettings(short).avgOut != 64 {
		t.Fatalf("reply length: unset %g (want %g), given %g (want 64)", unset.avgOut, def, FromSettings(short).avgOut)
	}
	near(t, "wait with 64-token replies / unset", FromSettings(short).wait(c)/unset.wait(c), 64/def)
	if v, ok := (Opt[float64]{}).Get(); ok || v != 0 {
		t.Fatalf("the zero Opt holds %g, %v", v, ok)
	}
}

// TestOneReportOfWaitingTeachesNoLimit: a vLLM engine reports a request
// waiting for a moment whenever one arrives between two of its steps, so
// one 200 ms report that catches it is no sign of a limit. An engine
// that runs 256 at once, caught once running 1 with 1 waiting and then
// running 2 with none, has room for a second request: it is neither at a
// limit nor saturated, even for a request with little of its wait left.
func TestOneReportOfWaitingTeachesNoLimit(t *testing.T) {
	s := newSat(nil)
	c := &policy.Instance{Running: 1, Waiting: 1, GenTPS: 80, PrefixCacheHitRatio: -1}
	s.Reported(c)
	if c.BatchLimit != 0 {
		t.Errorf("one report of 1 running, 1 waiting: batch limit %d, want none learnt", c.BatchLimit)
	}
	if sat, why := s.Saturated(c); sat {
		t.Errorf("1 running, 1 waiting, seen once: saturated (%s)", why)
	}
	c.Running, c.Waiting = 2, 0
	s.Reported(c)
	if c.BatchLimit != 0 || atLimit(c) {
		t.Errorf("then 2 running, none waiting: batch limit %d, at limit %v; want none", c.BatchLimit, atLimit(c))
	}
	if w := s.PredictedWait(c); w != 0 {
		t.Errorf("2 running, nothing queued, no limit shown: predicted wait %s, want 0", w)
	}
	c.InflightRequests, c.InflightPromptTokens = 1, 500 // the second request, picked
	if sat, why := s.SaturatedWithin(c, time.Second); sat {
		t.Errorf("2 running and one unreported pick, 1 s of wait left: saturated (%s)", why)
	}
	// A limit already learnt is not lowered by one report either: an
	// engine held at 256 that later catches a request waiting while it
	// runs 10 still has 246 places.
	c = &policy.Instance{Running: 256, Waiting: 3, PrefixCacheHitRatio: -1}
	s.Reported(c)
	s.Reported(c)
	if c.BatchLimit != 256 {
		t.Fatalf("held at 256 over two reports: batch limit %d, want 256", c.BatchLimit)
	}
	c.Running, c.Waiting = 10, 1
	s.Reported(c)
	if c.BatchLimit != 256 {
		t.Errorf("one report of 10 running, 1 waiting after a limit of 256: batch limit %d, want 256", c.BatchLimit)
	}
	c.Running, c.Waiting = 12, 0
	s.Reported(c)
	if c.BatchLimit != 256 {
		t.Errorf("then 12 running, none waiting: batch limit %d, want 256", c.BatchLimit)
	}
}

// TestSustainedHoldTeachesLimit: an engine really held at its limit
// (max_num_seqs, or a KV cache that fits no more) reports requests
// waiting on consecutive reports; that is learnt, at the count it runs,
// raised when it runs more, and lowered by a sustained hold at fewer (a
// fuller KV cache) — not by requests waiting on reports apart.
func TestSustainedHoldTeachesLimit(t *testing.T) {
	s := newSat(nil)
	c := &policy.Instance{Running: 4, Waiting: 2, PrefixCacheHitRatio: -1}
	s.Reported(c)
	c.Waiting = 3
	s.Reported(c)
	if c.BatchLimit != 4 {
		t.Fatalf("4 running with requests waiting on two reports: batch limit %d, want 4", c.BatchLimit)
	}
	c.Waiting = 0
	if !atLimit(c) || s.PredictedWait(c) <= 0 {
		t.Errorf("4 running at a limit of 4, nothing queued: at limit %v, predicted %s; want a wait for a place", atLimit(c), s.PredictedWait(c))
	}
	for _, step := range []struct {
		running, waiting int64
		want             int32
		why              string
	}{
		{3, 0, 4, "finishing requests do not lower it"},
		{6, 0, 6, "running more shows a larger limit"},
		{5, 1, 6, "one report of a request waiting at 5: kept"},
		{6, 2, 6, "held at 6 after the report at 5: the larger of the two"},
		{3, 1, 6, "held on a third report, at 3: the larger of this and the last"},
		{0, 4, 6, "nothing running says nothing"},
		{3, 2, 6, "after a report with nothing running: a first report again"},
		{3, 2, 3, "held at 3 on two reports (a fuller KV cache): lowered"},
		{2, 0, 3, "kept"},
		{4, 1, 4, "one report running more than the limit, a request waiting: raised"},
	} {
		c.Running, c.Waiting = step.running, step.waiting
		s.Reported(c)
		if c.BatchLimit != step.want {
			t.Errorf("report of %d running, %d waiting: batch limit %d, want %d (%s)", step.running, step.waiting, c.BatchLimit, step.want, step.why)
		}
	}
}
