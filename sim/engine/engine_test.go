package engine

import (
	"fmt"
	"hash/fnv"
	"math/rand"
	"testing"
	"time"
)

// testConfig has round numbers so expected step times are exact.
func testConfig() Config {
	c := baseConfig()
	c.StepBase = 5 * time.Millisecond
	c.PrefillPerToken = 20 * time.Microsecond
	c.DecodePerToken = 100 * time.Microsecond
	c.MaxNumBatchedTokens = 512
	c.MaxNumSeqs = 4
	c.NumBlocks = 1000
	return c
}

func mustEngine(t testing.TB, c Config) *Engine {
	t.Helper()
	e, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// hashes returns a distinct hash chain of n blocks for a "prompt" named p.
func hashes(p string, n int) []uint64 {
	out := make([]uint64, n)
	for i := range out {
		h := fnv.New64a()
		fmt.Fprintf(h, "%s/%d", p, i)
		out[i] = h.Sum64()
	}
	return out
}

// drain runs the engine until it is idle (bounded), returning a copy of every
// event and the step boundaries.
func drain(t testing.TB, e *Engine) []Event {
	t.Helper()
	var out []Event
	for i := 0; i < 1_000_000; i++ {
		at, ok := e.NextStepAt()
		if !ok {
			return out
		}
		out = append(out, e.Step(at)...)
	}
	t.Fatal("engine did not go idle")
	return nil
}

// stepOnce advances the engine by exactly one step boundary.
func stepOnce(t testing.TB, e *Engine) (time.Duration, []Event) {
	t.Helper()
	at, ok := e.NextStepAt()
	if !ok {
		t.Fatal("engine idle, expected a step")
	}
	return at, append([]Event(nil), e.Step(at)...)
}

func firstToken(evs []Event, id uint64) (Event, bool) {
	for _, ev := range evs {
		if ev.ID == id && ev.Kind == FirstToken {
			return ev, true
		}
	}
	return Event{}, false
}

func finishedAt(evs []Event, id uint64) (Event, bool) {
	for _, ev := range evs {
		if ev.ID == id && ev.Kind == Finished {
			return ev, true
		}
	}
	return Event{}, false
}

func TestStepTimeFollowsLinearModel(t *testing.T) {
	c := testConfig()
	e := mustEngine(t, c)
	a, b, cc := c.StepBase, c.PrefillPerToken, c.DecodePerToken
	if err := e.Add(0, Request{ID: 1, PromptTokens: 100, MaxTokens: 3}); err != nil {
		t.Fatal(err)
	}
	// Step 1: prefill of 100 tokens.
	e.Step(0)
	// A second request arrives during that step: the next step mixes request
	// 1's first decode token with its 50 prefill tokens.
	if err := e.Add(time.Millisecond, Request{ID: 2, PromptTokens: 50, MaxTokens: 2}); err != nil {
		t.Fatal(err)
	}
	at, evs := stepOnce(t, e)
	if want := a + 100*b; at != want {
		t.Fatalf("prefill step ended at %v, want a+100b = %v", at, want)
	}
	if ev, ok := firstToken(evs, 1); !ok || ev.At != at || ev.Tokens != 1 {
		t.Fatalf("first token event missing or wrong: %+v", evs)
	}
	at2, evs := stepOnce(t, e)
	if want := at + a + 50*b + 1*cc; at2 != want {
		t.Fatalf("mixed step ended at %v, want +a+50b+1c = %v", at2, want)
	}
	if len(evs) != 2 || evs[0].Kind != Token || evs[0].Tokens != 2 || evs[1].Kind != FirstToken || evs[1].ID != 2 {
		t.Fatalf("mixed step events: %+v", evs)
	}
	// Two decodes: request 1 finishes with its third token, request 2 with its second.
	at3, evs := stepOnce(t, e)
	if want := at2 + a + 2*cc; at3 != want {
		t.Fatalf("decode step ended at %v, want +a+2c = %v", at3, want)
	}
	if _, ok := finishedAt(evs, 1); !ok {
		t.Fatalf("request 1 not finished after 3 tokens: %+v", evs)
	}
	if _, ok := finishedAt(evs, 2); !ok {
		t.Fatalf("request 2 not finished after 2 tokens: %+v", evs)
	}
	if _, ok := e.NextStepAt(); ok {
		t.Fatal("engine not idle after both requests finished")
	}
	st := e.Stats()
	if st.GenerationTokens != 5 || st.PromptTokens != 150 || st.Finished != 2 || st.Running != 0 || st.UsedBlocks != 0 {
		t.Fatalf("stats after run: %+v", st)
	}
	if st.BusyTime != at3 || st.Steps != 3 {
		t.Fatalf("busy %v over %d steps, want %v over 3", st.BusyTime, st.Steps, at3)
	}
}

func TestIdleEngineStartsAtArrival(t *testing.T) {
	c := testConfig()
	e := mustEngine(t, c)
	if _, ok := e.NextStepAt(); ok {
		t.Fatal("empty engine wants a step")
	}
	arrive := 3 * time.Second
	if err := e.Add(arrive, Request{ID: 7, PromptTokens: 10, MaxTokens: 1}); err != nil {
		t.Fatal(err)
	}
	at, ok := e.NextStepAt()
	if !ok || at != arrive {
		t.Fatalf("NextStepAt = %v,%v; want the arrival %v", at, ok, arrive)
	}
	if evs := e.Step(arrive - time.Millisecond); len(evs) != 0 || e.Busy() {
		t.Fatal("an early Step must do nothing")
	}
	evs := drain(t, e)
	ft, _ := firstToken(evs, 7)
	if want := arrive + c.StepBase + 10*c.PrefillPerToken; ft.At != want {
		t.Fatalf("first token at %v, want %v", ft.At, want)
	}
}

func TestChunkedPrefillBoundedByBatchedTokens(t *testing.T) {
	c := testConfig() // budget 512
	e := mustEngine(t, c)
	if err := e.Add(0, Request{ID: 1, PromptTokens: 20, MaxTokens: 100}); err != nil {
		t.Fatal(err)
	}
	e.Step(0)
	if err := e.Add(time.Millisecond, Request{ID: 2, PromptTokens: 1300, MaxTokens: 1}); err != nil {
		t.Fatal(err)
	}
	t0, _ := stepOnce(t, e) // request 1 prefilled; request 2 joins the next step
	// Request 1's decode token comes first, so request 2 gets 511, then 511,
	// then its remaining 278 tokens; every step costs a + b·chunk + c.
	prev := t0
	for i, chunk := range []int{511, 511, 278} {
		at, evs := stepOnce(t, e)
		if want := prev + c.StepBase + time.Duration(chunk)*c.PrefillPerToken + c.DecodePerToken; at != want {
			t.Fatalf("step %d ended at %v, want a+%d·b+c after %v = %v", i, at, chunk, prev, want)
		}
		_, got := firstToken(evs, 2)
		if got != (i == 2) {
			t.Fatalf("step %d: first token of the chunked request = %v", i, got)
		}
		prev = at
	}
}

func TestMaxNumSeqsRespected(t *testing.T) {
	c := testConfig() // max_num_seqs 4
	e := mustEngine(t, c)
	for i := uint64(1); i <= 10; i++ {
		if err := e.Add(0, Request{ID: i, PromptTokens: 30, MaxTokens: 5}); err != nil {
			t.Fatal(err)
		}
	}
	e.Step(0)
	if st := e.Stats(); st.Running != 4 || st.Waiting != 6 {
		t.Fatalf("after the first schedule: running %d waiting %d, want 4 and 6", st.Running, st.Waiting)
	}
	finished := 0
	for i := 0; i < 10000; i++ {
		at, ok := e.NextStepAt()
		if !ok {
			break
		}
		for _, ev := range e.Step(at) {
			if ev.Kind == Finished {
				finished++
			}
		}
		if r := e.Stats().Running; r > 4 {
			t.Fatalf("%d running, max_num_seqs is 4", r)
		}
	}
	if finished != 10 {
		t.Fatalf("%d of 10 requests finished", finished)
	}
}

func TestPrefixHitCutsTTFTByCachedPrefill(t *testing.T) {
	c := DefaultConfig()
	e := mustEngine(t, c)
	const prompt = 4000
	hs := hashes("long", prompt/c.BlockSize)
	if err := e.Add(0, Request{ID: 1, PromptTokens: prompt, MaxTokens: 10, BlockHashes: hs}); err != nil {
		t.Fatal(err)
	}
	evs := drain(t, e)
	ft1, _ := firstToken(evs, 1)
	ttft1 := ft1.At
	if ft1.CachedTokens != 0 {
		t.Fatalf("cold request reports %d cached tokens", ft1.CachedTokens)
	}
	done, _ := finishedAt(evs, 1)

	arrive := done.At + time.Second
	if err := e.Add(arrive, Request{ID: 2, PromptTokens: prompt, MaxTokens: 10, BlockHashes: hs}); err != nil {
		t.Fatal(err)
	}
	evs = drain(t, e)
	ft2, _ := firstToken(evs, 2)
	ttft2 := ft2.At - arrive
	// All blocks but the last are served from the cache: the last one is
	// recomputed because an engine always computes at least one token.
	wantCached := (prompt/c.BlockSize - 1) * c.BlockSize
	if ft2.CachedTokens != wantCached {
		t.Fatalf("warm request: %d cached tokens, want %d", ft2.CachedTokens, wantCached)
	}
	if ttft2 >= ttft1 {
		t.Fatalf("warm TTFT %v not below cold TTFT %v", ttft2, ttft1)
	}
	if diff, want := ttft1-ttft2, time.Duration(wantCached)*c.PrefillPerToken; diff != want {
		t.Fatalf("TTFT saved %v, want the prefill time of the cached tokens %v", diff, want)
	}
	st := e.Stats()
	if st.PrefixQueries != 2*prompt || st.PrefixHits != int64(wantCached) {
		t.Fatalf("prefix counters: queries %d hits %d, want %d and %d", st.PrefixQueries, st.PrefixHits, 2*prompt, wantCached)
	}
}

func TestPrefixCachingCanBeDisabled(t *testing.T) {
	c := testConfig()
	c.DisablePrefixCaching = true
	e := mustEngine(t, c)
	hs := hashes("p", 10)
	for id := uint64(1); id <= 2; id++ {
		if err := e.Add(time.Duration(id)*time.Hour, Request{ID: id, PromptTokens: 160, MaxTokens: 1, BlockHashes: hs}); err != nil {
			t.Fatal(err)
		}
		evs := drain(t, e)
		if ft, _ := firstToken(evs, id); ft.CachedTokens != 0 {
			t.Fatalf("request %d hit %d tokens with prefix caching off", id, ft.CachedTokens)
		}
	}
}

func TestFreedBlocksEvictedLeastRecentlyUsedFirst(t *testing.T) {
	c := testConfig()
	c.NumBlocks = 8
	e := mustEngine(t, c)
	run := func(id uint64, name string) Event {
		t.Helper()
		if err := e.Add(time.Duration(id)*time.Second, Request{ID: id, PromptTokens: 64, MaxTokens: 1, BlockHashes: hashes(name, 4)}); err != nil {
			t.Fatal(err)
		}
		ft, ok := firstToken(drain(t, e), id)
		if !ok {
			t.Fatalf("request %d produced no first token", id)
		}
		return ft
	}
	// A then B fill the 8 blocks between them and leave them cached but free.
	run(1, "A")
	run(2, "B")
	if st := e.Stats(); st.UsedBlocks != 0 || st.CachedBlocks != 8 {
		t.Fatalf("after A and B: %d used, %d cached blocks, want 0 and 8", st.UsedBlocks, st.CachedBlocks)
	}
	// C needs 4 blocks: the least recently freed are A's.
	run(3, "C")
	if ft := run(4, "B"); ft.CachedTokens != 48 {
		t.Fatalf("B again hit %d tokens, want 48: its blocks were more recently used than A's", ft.CachedTokens)
	}
	if ft := run(5, "A"); ft.CachedTokens != 0 {
		t.Fatalf("A again hit %d tokens, want 0: its blocks were the least recently used", ft.CachedTokens)
	}
}

func TestPreemptionByRecomputeStillCompletes(t *testing.T) {
	c := testConfig()
	c.NumBlocks = 10 // two requests each growing to 8 blocks cannot both fit
	e := mustEngine(t, c)
	for id := uint64(1); id <= 2; id++ {
		if err := e.Add(0, Request{ID: id, PromptTokens: 64, MaxTokens: 60, BlockHashes: hashes(fmt.Sprint(id), 4)}); err != nil {
			t.Fatal(err)
		}
	}
	evs := drain(t, e)
	preempted := map[uint64]int{}
	last := map[uint64]int{}
	for _, ev := range evs {
		switch ev.Kind {
		case Preempted:
			preempted[ev.ID]++
		case Token, FirstToken:
			if ev.Tokens != last[ev.ID]+1 {
				t.Fatalf("request %d: token %d after %d", ev.ID, ev.Tokens, last[ev.ID])
			}
			last[ev.ID] = ev.Tokens
		}
	}
	if preempted[2] == 0 || preempted[1] != 0 {
		t.Fatalf("want the later request preempted, not the earlier: %v", preempted)
	}
	for id := uint64(1); id <= 2; id++ {
		if _, ok := finishedAt(evs, id); !ok || last[id] != 60 {
			t.Fatalf("request %d: finished=%v after %d tokens, want 60", id, ok, last[id])
		}
	}
	st := e.Stats()
	if st.Preemptions == 0 || st.GenerationTokens != 120 || st.PromptTokens != 128 || st.UsedBlocks != 0 || st.KVUsage != 0 {
		t.Fatalf("stats after preemption run: %+v", st)
	}
	// The preempted request found its own freed blocks on re-admission.
	if st.PrefixHits == 0 {
		t.Fatalf("no prefix hits: a preempted request should reuse its cached prompt blocks")
	}
}

func TestAbortFreesBlocks(t *testing.T) {
	c := testConfig()
	c.MaxNumSeqs = 1
	e := mustEngine(t, c)
	for id := uint64(1); id <= 2; id++ {
		if err := e.Add(0, Request{ID: id, PromptTokens: 100, MaxTokens: 50}); err != nil {
			t.Fatal(err)
		}
	}
	e.Step(0)
	stepOnce(t, e)
	if st := e.Stats(); st.Running != 1 || st.Waiting != 1 || st.UsedBlocks == 0 {
		t.Fatalf("before abort: %+v", st)
	}
	if !e.Abort(2) || !e.Abort(1) || e.Abort(1) {
		t.Fatal("abort of live requests must succeed once")
	}
	st := e.Stats()
	if st.Running != 0 || st.Waiting != 0 || st.UsedBlocks != 0 || st.Aborted != 2 {
		t.Fatalf("after abort: %+v", st)
	}
	drain(t, e)
	if _, ok := e.NextStepAt(); ok {
		t.Fatal("engine has work after aborting everything")
	}
	// The id is free again.
	if err := e.Add(time.Second, Request{ID: 1, PromptTokens: 10, MaxTokens: 1}); err != nil {
		t.Fatal(err)
	}
}

func TestAddRejectsBadRequests(t *testing.T) {
	c := testConfig()
	c.NumBlocks = 10
	e := mustEngine(t, c)
	for _, r := range []Request{
		{ID: 1, PromptTokens: 0, MaxTokens: 1},
		{ID: 2, PromptTokens: 1, MaxTokens: 0},
		{ID: 3, PromptTokens: 150, MaxTokens: 20}, // 170 tokens > 160 of cache
	} {
		if err := e.Add(0, r); err == nil {
			t.Fatalf("request %+v accepted", r)
		}
	}
	if err := e.Add(0, Request{ID: 4, PromptTokens: 10, MaxTokens: 1}); err != nil {
		t.Fatal(err)
	}
	if err := e.Add(0, Request{ID: 4, PromptTokens: 10, MaxTokens: 1}); err == nil {
		t.Fatal("duplicate id accepted")
	}
}

func TestConfigValidateNamesTheField(t *testing.T) {
	c := DefaultConfig()
	c.BlockSize = 0
	if err := c.Validate(); err == nil || !contains(err.Error(), "block_size") {
		t.Fatalf("got %v", err)
	}
	if _, err := ProfileConfig("nope"); err == nil || !contains(err.Error(), DefaultProfile) {
		t.Fatalf("unknown profile error should list the accepted ones: %v", err)
	}
	for _, p := range Profiles() {
		if err := p.Config.Validate(); err != nil {
			t.Fatalf("profile %s: %v", p.Name, err)
		}
	}
	d := DefaultConfig()
	if d.StepBase != 5750*time.Microsecond || d.PrefillPerToken != 17250*time.Nanosecond || d.DecodePerToken != 6*time.Microsecond || d.NumBlocks != 29000 || d.BlockSize != 16 {
		t.Fatalf("default profile drifted from the BLIS H100 fit: %+v", d)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestFixedStepOverrides(t *testing.T) {
	c := testConfig()
	c.FixedPrefillStep = 200 * time.Millisecond
	c.FixedDecodeStep = 30 * time.Millisecond
	e := mustEngine(t, c)
	if err := e.Add(0, Request{ID: 1, PromptTokens: 300, MaxTokens: 3}); err != nil {
		t.Fatal(err)
	}
	var times []time.Duration
	for _, ev := range drain(t, e) {
		if ev.Kind != Finished {
			times = append(times, ev.At)
		}
	}
	want := []time.Duration{200 * time.Millisecond, 230 * time.Millisecond, 260 * time.Millisecond}
	if fmt.Sprint(times) != fmt.Sprint(want) {
		t.Fatalf("token times %v, want %v", times, want)
	}
}

func TestHashPromptMatchesBlocks(t *testing.T) {
	c := DefaultConfig()
	text := make([]byte, 1000)
	for i := range text {
		text[i] = 'a' + byte(i%26)
	}
	tokens, hs := c.HashPrompt("m", "", string(text))
	if tokens != 250 || len(hs) != 1000/64 {
		t.Fatalf("1000 chars: %d tokens, %d hashes; want 250 and %d", tokens, len(hs), 1000/64)
	}
	_, other := c.HashPrompt("other-model", "", string(text))
	if other[0] == hs[0] {
		t.Fatal("different models share a block hash")
	}
}

// trace runs a random but seeded workload and fingerprints every event.
func trace(t testing.TB, seed int64) (uint64, Stats) {
	c := testConfig()
	c.NumBlocks = 200
	c.MaxNumSeqs = 8
	e := mustEngine(t, c)
	rng := rand.New(rand.NewSource(seed))
	h := fnv.New64a()
	now := time.Duration(0)
	next := uint64(1)
	for i := 0; i < 5000; i++ {
		if rng.Intn(3) == 0 && next < 400 {
			group := fmt.Sprint(rng.Intn(5))
			p := 16 + rng.Intn(600)
			if err := e.Add(now, Request{ID: next, PromptTokens: p, MaxTokens: 1 + rng.Intn(200), BlockHashes: hashes(group, p/16)}); err != nil {
				t.Fatal(err)
			}
			next++
		}
		at, ok := e.NextStepAt()
		if !ok {
			now += time.Duration(rng.Intn(50)) * time.Millisecond
			continue
		}
		now = at
		for _, ev := range e.Step(at) {
			fmt.Fprintf(h, "%d %d %d %d %d|", ev.ID, ev.Kind, ev.At, ev.Tokens, ev.CachedTokens)
		}
	}
	return h.Sum64(), e.Stats()
}

func TestDeterministic(t *testing.T) {
	a, sa := trace(t, 42)
	b, sb := trace(t, 42)
	if a != b || sa != sb {
		t.Fatalf("same seed, different runs: %x %x\n%+v\n%+v", a, b, sa, sb)
	}
	c, _ := trace(t, 43)
	if a == c {
		t.Fatal("different seeds gave identical traces: the fingerprint is not sensitive")
	}
	if sa.Preemptions == 0 || sa.PrefixHits == 0 || sa.Finished == 0 {
		t.Fatalf("workload does not exercise preemption and prefix hits: %+v", sa)
	}
}

func TestOutputBlocksCachedForTheNextTurn(t *testing.T) {
	c := testConfig()
	e := mustEngine(t, c)
	// Turn 1: 64 prompt tokens, 40 output tokens; the caller's hash chain
	// covers the conversation as turn 2 will send it (7 blocks).
	conv := hashes("conversation", 7)
	if err := e.Add(0, Request{ID: 1, PromptTokens: 64, MaxTokens: 40, BlockHashes: conv}); err != nil {
		t.Fatal(err)
	}
	drain(t, e)
	// 64 + 39 computed tokens fill 6 blocks; turn 2 (120 tokens) finds them.
	if err := e.Add(time.Hour, Request{ID: 2, PromptTokens: 120, MaxTokens: 1, BlockHashes: conv}); err != nil {
		t.Fatal(err)
	}
	ft, _ := firstToken(drain(t, e), 2)
	if ft.CachedTokens != 96 {
		t.Fatalf("turn 2 hit %d tokens, want 96 (prompt and generated blocks of turn 1)", ft.CachedTokens)
	}
}

// A request whose prompt KV was transferred computes only its last prompt
// token: its first token comes after one step of one prefill token instead
// of the chunked prefill of the whole prompt, and the prompt becomes cached
// here as it would after a local prefill.
func TestTransferredKVSkipsPrefill(t *testing.T) {
	c := testConfig()
	local, remote := mustEngine(t, c), mustEngine(t, c)
	const prompt = 2000 // four chunks of 512
	for _, e := range []*Engine{local, remote} {
		if err := e.Add(0, Request{ID: 1, PromptTokens: prompt, MaxTokens: 2, BlockHashes: hashes("p", prompt/16), KVTransferred: e == remote}); err != nil {
			t.Fatal(err)
		}
	}
	first := func(evs []Event) time.Duration {
		for _, ev := range evs {
			if ev.Kind == FirstToken {
				return ev.At
			}
		}
		t.Fatal("no first token")
		return 0
	}
	if got, want := first(drain(t, remote)), c.StepTime(1, 0); got != want {
		t.Fatalf("transferred TTFT = %v, want one step of one token (%v)", got, want)
	}
	if got, want := first(drain(t, local)), 3*c.StepTime(512, 0)+c.StepTime(prompt-3*512, 0); got != want {
		t.Fatalf("local TTFT = %v, want the chunked prefill (%v)", got, want)
	}
	if st := remote.Stats(); st.TransferredTokens != prompt-1 || st.CachedBlocks < prompt/16 {
		t.Fatalf("remote stats = %+v, want %d transferred tokens and the prompt cached", st, prompt-1)
	}
	if st := local.Stats(); st.TransferredTokens != 0 {
		t.Fatalf("local transferred %d tokens", st.TransferredTokens)
	}
}

func TestCachedPrefixQueuedPrefillAndFlush(t *testing.T) {
	cfg := DefaultConfig()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hashes := make([]uint64, 100)
	for i := range hashes {
		hashes[i] = uint64(i + 1)
	}
	const prompt = 100 * 16
	if got := e.CachedPrefix(hashes, prompt); got != 0 {
		t.Fatalf("empty engine: %d cached tokens", got)
	}
	if err := e.Add(0, Request{ID: 1, PromptTokens: prompt, MaxTokens: 2, BlockHashes: hashes}); err != nil {
		t.Fatal(err)
	}
	if got := e.QueuedPrefill(); got != prompt {
		t.Fatalf("one waiting prompt of %d tokens: queued prefill %d", prompt, got)
	}
	var now time.Duration
	for done := false; !done; {
		at, ok := e.NextStepAt()
		if !ok {
			break
		}
		now = at
		for _, ev := range e.Step(now) {
			done = done || ev.Kind == Finished
		}
	}
	if got := e.QueuedPrefill(); got != 0 {
		t.Fatalf("idle engine: queued prefill %d", got)
	}
	// The last block is always recomputed, so 99 of 100 blocks are served.
	if got := e.CachedPrefix(hashes, prompt); got != 99*16 {
		t.Fatalf("after serving the prompt: %d cached tokens, want %d", got, 99*16)
	}
	if got := e.CachedPrefix(hashes[:10], prompt); got != 10*16 {
		t.Fatalf("a 10-block prefix: %d cached tokens, want %d", got, 160)
	}
	st := e.Stats()
	e.FlushPrefixCache()
	if got := e.CachedPrefix(hashes, prompt); got != 0 {
		t.Fatalf("after a flush: %d cached tokens", got)
	}
	if e.Stats().CachedBlocks != 0 || st.CachedBlocks == 0 {
		t.Fatalf("cached blocks %d before the flush, %d after", st.CachedBlocks, e.Stats().CachedBlocks)
	}
	// Flushed blocks are reusable: the same prompt again is computed whole
	// and cached again.
	if err := e.Add(now, Request{ID: 2, PromptTokens: prompt, MaxTokens: 1, BlockHashes: hashes}); err != nil {
		t.Fatal(err)
	}
	for {
		at, ok := e.NextStepAt()
		if !ok {
			break
		}
		for _, ev := range e.Step(at) {
			if ev.Kind == FirstToken && ev.CachedTokens != 0 {
				t.Fatalf("first request after a flush served %d cached tokens", ev.CachedTokens)
			}
		}
	}
	if got := e.CachedPrefix(hashes, prompt); got != 99*16 {
		t.Fatalf("after serving it again: %d cached tokens", got)
	}
}
