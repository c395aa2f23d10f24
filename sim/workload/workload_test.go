package workload

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/internal/prompthash"
)

func TestTextIsDeterministicAndFourCharsPerToken(t *testing.T) {
	a, b, c := Text(7, 100), Text(7, 100), Text(8, 100)
	if a != b {
		t.Fatal("same seed, different text")
	}
	if a == c {
		t.Fatal("different seeds, same text")
	}
	if len(a) != 100*CharsPerToken {
		t.Fatalf("len %d, want %d", len(a), 100*CharsPerToken)
	}
	if Text(1, 0) != "" {
		t.Fatal("zero tokens must be empty")
	}
}

func TestRenderMatchesGateway(t *testing.T) {
	msgs := []Message{{"system", "be brief"}, {"user", "hi"}}
	want := prompthash.RenderChat([]prompthash.Message{{Role: "system", Content: "be brief"}, {Role: "user", Content: "hi"}})
	if got := Render(msgs); got != want {
		t.Fatalf("Render = %q, want %q", got, want)
	}
}

func mustMultiTurn(t *testing.T, m MultiTurn) Source {
	t.Helper()
	src, err := NewMultiTurn(m)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func TestMultiTurnConversations(t *testing.T) {
	m := DefaultMultiTurn()
	m.Seed = 42
	src := mustMultiTurn(t, m)
	again := mustMultiTurn(t, m)
	systems := map[string]int{}
	var users, outs []float64
	for i := 0; i < 400; i++ {
		c, ok := src.Conversation(i)
		if !ok {
			t.Fatalf("endless workload ended at %d", i)
		}
		// Any order of generation gives the same conversation.
		c2, _ := again.Conversation(i)
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("conversation %d differs between two sources with the same seed", i)
		}
		if n := len(c.Turns); n < m.TurnsMin || n > m.TurnsMax {
			t.Fatalf("conversation %d has %d turns, want %d..%d", i, n, m.TurnsMin, m.TurnsMax)
		}
		if len(c.System) != m.SystemTokens*CharsPerToken {
			t.Fatalf("system prompt of %d chars, want %d", len(c.System), m.SystemTokens*CharsPerToken)
		}
		systems[c.System]++
		for k, turn := range c.Turns {
			ut := len(turn.User) / CharsPerToken
			if ut < 4 || ut > 8*m.UserTokens || turn.MaxTokens < 4 || turn.MaxTokens > 4*m.OutputTokens {
				t.Fatalf("turn lengths out of range: user %d, output %d", ut, turn.MaxTokens)
			}
			users = append(users, float64(ut))
			outs = append(outs, float64(turn.MaxTokens))
			if (k == 0) != (turn.Think == 0) {
				t.Fatalf("turn %d think time %s: want none for the first turn only", k, turn.Think)
			}
		}
	}
	if len(systems) != m.Groups {
		t.Fatalf("%d distinct system prompts, want %d (conversations share them by group)", len(systems), m.Groups)
	}
	for s, n := range systems {
		if n < 10 {
			t.Fatalf("system prompt %.10q shared by only %d of 400 conversations", s, n)
		}
	}
	// ShareGPT-like spread: medians near the configured ones, long tails.
	sort.Float64s(users)
	sort.Float64s(outs)
	if med := Percentile(users, 50); med < 70 || med > 140 {
		t.Fatalf("median user turn %v tokens, want ~%d", med, m.UserTokens)
	}
	if med := Percentile(outs, 50); med < 160 || med > 250 {
		t.Fatalf("median output %v tokens, want ~%d", med, m.OutputTokens)
	}
	if p99 := Percentile(users, 99); p99 < 3*float64(m.UserTokens) {
		t.Fatalf("user turns p99 %v tokens: want a long tail (hundreds)", p99)
	}
	other := m
	other.Seed = 43
	c1, _ := src.Conversation(0)
	c2, _ := mustMultiTurn(t, other).Conversation(0)
	if c1.Turns[0].User == c2.Turns[0].User {
		t.Fatal("different seeds gave the same conversation")
	}
}

func TestMultiTurnBoundedAndValidated(t *testing.T) {
	m := DefaultMultiTurn()
	m.Conversations = 3
	src := mustMultiTurn(t, m)
	if _, ok := src.Conversation(3); ok {
		t.Fatal("conversation 3 of 3 exists")
	}
	for _, bad := range []func(*MultiTurn){
		func(m *MultiTurn) { m.Groups = 0 },
		func(m *MultiTurn) { m.TurnsMin, m.TurnsMax = 5, 4 },
		func(m *MultiTurn) { m.UserTokens = 0 },
		func(m *MultiTurn) { m.ThinkTime = -time.Second },
		func(m *MultiTurn) { m.SystemSigma = -0.5 },
		func(m *MultiTurn) { m.Zipf = math.NaN() },
	} {
		x := DefaultMultiTurn()
		bad(&x)
		if _, err := NewMultiTurn(x); err == nil {
			t.Fatalf("%+v accepted", x)
		}
	}
}

func TestMultiTurnLogNormalSystemsAndZipf(t *testing.T) {
	m := DefaultMultiTurn()
	m.Groups, m.SystemTokens, m.SystemSigma, m.Zipf = 64, 8000, 0.8, 1.1
	src := mustMultiTurn(t, m)
	// Sizes: log-normal of the asked mean — a wide spread around it.
	var sizes []float64
	sum := 0.0
	for _, n := range src.(*multiTurn).SystemTokens() {
		sizes = append(sizes, float64(n))
		sum += float64(n)
	}
	sort.Float64s(sizes)
	if mean := sum / float64(len(sizes)); mean < 0.7*8000 || mean > 1.3*8000 {
		t.Fatalf("mean system prompt %.0f tokens, want ~8000", mean)
	}
	if lo, hi := sizes[0], sizes[len(sizes)-1]; hi < 4*lo {
		t.Fatalf("system prompts from %.0f to %.0f tokens: want sizes spread by sigma 0.8", lo, hi)
	}
	// Popularity: the first prompt carries far more conversations than the
	// last, and the draw is the same whatever order conversations are
	// asked for in.
	count := map[string]int{}
	for i := 0; i < 4000; i++ {
		c, _ := src.Conversation(i)
		count[c.System]++
	}
	top, bottom := count[src.(*multiTurn).systems[0]], count[src.(*multiTurn).systems[63]]
	if top < 10*max(bottom, 1) || top < 400 {
		t.Fatalf("most popular system prompt in %d of 4000 conversations, least popular in %d: want Zipf (about 900 and 8)", top, bottom)
	}
	// Uniform popularity and fixed sizes are the default and unchanged.
	u := mustMultiTurn(t, DefaultMultiTurn()).(*multiTurn)
	for _, n := range u.SystemTokens() {
		if n != DefaultMultiTurn().SystemTokens {
			t.Fatalf("default system prompt of %d tokens, want %d", n, DefaultMultiTurn().SystemTokens)
		}
	}
}

func TestSharedPrefix(t *testing.T) {
	s := SharedPrefix{Seed: 3, Groups: 4, PromptsPerGroup: 5, SystemTokens: 64, QuestionTokens: 8, OutputTokens: 16}
	src, err := NewSharedPrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	systems := map[string]int{}
	questions := map[string]bool{}
	for i := 0; ; i++ {
		c, ok := src.Conversation(i)
		if !ok {
			if i != 20 {
				t.Fatalf("%d requests, want groups × prompts = 20", i)
			}
			break
		}
		if ids[c.ID] {
			t.Fatalf("%s twice", c.ID)
		}
		ids[c.ID] = true
		systems[c.System]++
		if len(c.Turns) != 1 || c.Turns[0].MaxTokens != 16 || len(c.Turns[0].User) != 8*CharsPerToken || len(c.System) != 64*CharsPerToken {
			t.Fatalf("bad shape: %+v", c.Turns)
		}
		questions[c.Turns[0].User] = true
	}
	if len(systems) != 4 || len(questions) != 20 {
		t.Fatalf("%d systems, %d questions: want 4 shared systems and 20 distinct questions", len(systems), len(questions))
	}
	for _, n := range systems {
		if n != 5 {
			t.Fatalf("a system prompt heads %d prompts, want 5", n)
		}
	}
	// Shuffled: the first five requests are not all one group.
	first := map[string]bool{}
	for i := 0; i < 5; i++ {
		c, _ := src.Conversation(i)
		first[c.System] = true
	}
	if len(first) == 1 {
		t.Fatal("requests are not shuffled across groups")
	}
}

// runClosed drives d like a cluster whose every request takes latency.
func runClosed(t *testing.T, d *Driver, latency time.Duration, each func(now time.Duration, r *Request)) {
	t.Helper()
	type done struct {
		at time.Duration
		r  *Request
	}
	var pending []done
	for steps := 0; !d.Finished(); steps++ {
		if steps > 1e6 {
			t.Fatal("driver never finishes")
		}
		at, ok := d.Next()
		if ok && (len(pending) == 0 || at <= pending[0].at) {
			r := d.Pop()
			each(at, r)
			pending = append(pending, done{at + latency, r})
			slices.SortStableFunc(pending, func(a, b done) int { return int(a.at - b.at) })
			continue
		}
		p := pending[0]
		pending = pending[1:]
		d.Done(p.at, p.r, "reply to "+p.r.Conversation.ID, true)
	}
}

func TestDriverHistoryGrowsPerTurn(t *testing.T) {
	m := DefaultMultiTurn()
	m.Conversations = 5
	src := mustMultiTurn(t, m)
	d, err := NewDriver(Plan{Source: src, Arrivals: Arrivals{Concurrency: 2}, DefaultModel: "m"})
	if err != nil {
		t.Fatal(err)
	}
	last := map[*Conversation]*Request{}
	n := 0
	runClosed(t, d, time.Second, func(now time.Duration, r *Request) {
		n++
		if r.Model != "m" {
			t.Fatalf("model %q, want the default m", r.Model)
		}
		c := r.Conversation
		if r.Messages[0].Role != "system" || r.Messages[0].Content != c.System {
			t.Fatalf("turn %d does not start with the shared system prompt", r.Turn)
		}
		if got := r.Messages[len(r.Messages)-1]; got.Role != "user" || got.Content != c.Turns[r.Turn].User {
			t.Fatalf("turn %d does not end with its user message", r.Turn)
		}
		if want := 2 + 2*r.Turn; len(r.Messages) != want {
			t.Fatalf("turn %d has %d messages, want %d (system + every earlier user and reply + user)", r.Turn, len(r.Messages), want)
		}
		if prev := last[c]; prev != nil {
			if prev.Turn != r.Turn-1 {
				t.Fatalf("turn %d after turn %d", r.Turn, prev.Turn)
			}
			// The new prompt extends the old one by its reply and a user turn,
			// so the rendered text (and its block hashes) extend too.
			if !slices.Equal(r.Messages[:len(prev.Messages)], prev.Messages) {
				t.Fatal("history changed between turns")
			}
			if a := r.Messages[len(prev.Messages)]; a.Role != "assistant" || a.Content != "reply to "+c.ID {
				t.Fatalf("turn %d carries %+v, want the previous reply", r.Turn, a)
			}
			if !strings.HasPrefix(Render(r.Messages), Render(prev.Messages)) {
				t.Fatal("rendering of turn k+1 does not extend turn k")
			}
		} else if r.Turn != 0 {
			t.Fatalf("conversation starts at turn %d", r.Turn)
		}
		last[c] = r
		if d.Outstanding() > 2 {
			t.Fatalf("%d outstanding under concurrency 2", d.Outstanding())
		}
	})
	want := 0
	for i := 0; i < 5; i++ {
		c, _ := src.Conversation(i)
		want += len(c.Turns)
	}
	if n != want {
		t.Fatalf("sent %d requests, want every turn of the 5 conversations (%d)", n, want)
	}
}

func TestDriverPoissonStartsIndependentOfLatency(t *testing.T) {
	src := mustMultiTurn(t, DefaultMultiTurn())
	a, na := startsWithLatency(t, src, 0)
	b, nb := startsWithLatency(t, src, 0)
	if !slices.Equal(a, b) || na != nb {
		t.Fatal("same seed, different arrivals")
	}
	c, nc := startsWithLatency(t, src, 3*time.Second)
	if !slices.Equal(a, c) {
		t.Fatal("conversation starts depend on latency: policies would not see identical arrivals")
	}
	if nc >= na {
		t.Fatalf("%d requests with 3 s latency, %d without: slower replies must delay next turns", nc, na)
	}
	// Conversations start at rate / mean turns.
	conv := float64(len(a)) / 60
	if want := 20 / src.MeanTurns(); conv < 0.6*want || conv > 1.4*want {
		t.Fatalf("%.2f conversations/s, want ~%.2f", conv, want)
	}
}

// startsWithLatency checks follow-up timing under a non-zero latency and
// returns the conversation start times.
func startsWithLatency(t *testing.T, src Source, latency time.Duration) ([]time.Duration, int) {
	t.Helper()
	d, err := NewDriver(Plan{Source: src, Arrivals: Arrivals{Rate: 20}, Duration: time.Minute, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	var first []time.Duration
	prevSent := map[*Conversation]time.Duration{}
	total := 0
	runClosed(t, d, latency, func(now time.Duration, r *Request) {
		total++
		if r.Turn == 0 {
			first = append(first, now)
		} else if want := prevSent[r.Conversation] + latency + r.Conversation.Turns[r.Turn].Think; now != want {
			t.Fatalf("turn %d sent at %s, want previous sent + latency + think = %s", r.Turn, now, want)
		}
		prevSent[r.Conversation] = now
		if now >= time.Minute {
			t.Fatalf("request sent at %s, after the duration", now)
		}
	})
	return first, total
}

func TestDriverLimitsAndTrace(t *testing.T) {
	src := mustMultiTurn(t, DefaultMultiTurn())
	d, err := NewDriver(Plan{Source: src, Arrivals: Arrivals{Concurrency: 4}, MaxRequests: 10})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	runClosed(t, d, time.Second, func(time.Duration, *Request) { n++ })
	if n != 10 {
		t.Fatalf("%d requests, want MaxRequests 10", n)
	}

	file := `{"conversation_id":"b","turn":0,"arrival_ms":300,"messages":[{"role":"user","content":"x"}],"max_tokens":2}
{"conversation_id":"a","turn":1,"arrival_ms":200.5,"messages":[{"role":"user","content":"y"}],"max_tokens":3}
{"conversation_id":"a","turn":0,"arrival_ms":100,"model":"m2","messages":[{"role":"user","content":"z"}],"max_tokens":4}
`
	fs, err := ParseFile(strings.NewReader(file), "f.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	d, err = NewDriver(Plan{Source: fs, Arrivals: Arrivals{Trace: true}, DefaultModel: "dm"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	runClosed(t, d, 10*time.Second, func(now time.Duration, r *Request) {
		got = append(got, now.String()+" "+r.Conversation.ID+" "+r.Model+" "+r.Messages[0].Content)
	})
	want := []string{"100ms a m2 z", "200.5ms a dm y", "300ms b dm x"}
	if !slices.Equal(got, want) {
		t.Fatalf("trace replay %q, want %q (arrival_ms order, independent of completions)", got, want)
	}
	if _, err := NewDriver(Plan{Source: src, Arrivals: Arrivals{Trace: true}}); err == nil {
		t.Fatal("trace arrivals accepted for a workload without arrival_ms")
	}
	if _, err := NewDriver(Plan{Source: src, Arrivals: Arrivals{Rate: 1, Concurrency: 1}}); err == nil {
		t.Fatal("two arrival processes accepted")
	}
}

func TestParseFile(t *testing.T) {
	file := `{"conversation_id":"c1","turn":1,"messages":[{"role":"system","content":"s"},{"role":"user","content":"u1"},{"role":"assistant","content":"a1"},{"role":"user","content":"u2"}],"max_tokens":20}

{"conversation_id":"c1","turn":0,"model":"llama","messages":[{"role":"system","content":"s"},{"role":"user","content":"u1"}],"max_tokens":10}
{"conversation_id":"c2","turn":0,"messages":[{"role":"user","content":""}],"max_tokens":5}`
	src, err := ParseFile(strings.NewReader(file), "w.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	c, ok := src.Conversation(0)
	if !ok || c.ID != "c1" || len(c.Turns) != 2 || c.Turns[0].MaxTokens != 10 || c.Turns[1].MaxTokens != 20 || c.Turns[0].Model != "llama" {
		t.Fatalf("conversation c1 = %+v: want its turns in turn order", c)
	}
	if len(c.Turns[1].Messages) != 4 || c.Turns[1].Messages[3].Content != "u2" {
		t.Fatalf("messages not kept: %+v", c.Turns[1].Messages)
	}
	if c2, _ := src.Conversation(1); c2.ID != "c2" {
		t.Fatal("conversations not in file order")
	}
	if _, ok := src.Conversation(2); ok {
		t.Fatal("a third conversation")
	}
	if src.MeanTurns() != 1.5 || HasArrivals(src) {
		t.Fatalf("mean turns %v, arrivals %v", src.MeanTurns(), HasArrivals(src))
	}
	if !slices.Equal(src.Models(), []string{"", "llama"}) {
		t.Fatalf("models %q", src.Models())
	}
}

func TestParseFileErrorsNameLineAndField(t *testing.T) {
	good := `{"conversation_id":"c","turn":0,"messages":[{"role":"user","content":"hi"}],"max_tokens":5}`
	cases := []struct {
		name, line string
		want       []string
	}{
		{"bad json", `{"conversation_id":`, []string{":2:", "invalid JSON"}},
		{"missing id", `{"turn":1,"messages":[{"role":"user","content":"hi"}],"max_tokens":5}`, []string{":2:", `"conversation_id"`, "missing"}},
		{"turn type", `{"conversation_id":"d","turn":"one","messages":[{"role":"user","content":"hi"}],"max_tokens":5}`, []string{":2:", `"turn"`, "integer"}},
		{"turn missing", `{"conversation_id":"d","messages":[{"role":"user","content":"hi"}],"max_tokens":5}`, []string{":2:", `"turn"`, "missing"}},
		{"max tokens zero", `{"conversation_id":"d","turn":0,"messages":[{"role":"user","content":"hi"}],"max_tokens":0}`, []string{":2:", `"max_tokens"`, "1 or more"}},
		{"max tokens missing", `{"conversation_id":"d","turn":0,"messages":[{"role":"user","content":"hi"}]}`, []string{":2:", `"max_tokens"`}},
		{"messages missing", `{"conversation_id":"d","turn":0,"max_tokens":3}`, []string{":2:", `"messages"`, "missing"}},
		{"messages empty", `{"conversation_id":"d","turn":0,"messages":[],"max_tokens":3}`, []string{":2:", `"messages"`, "empty"}},
		{"messages not array", `{"conversation_id":"d","turn":0,"messages":"hi","max_tokens":3}`, []string{":2:", `"messages"`}},
		{"role missing", `{"conversation_id":"d","turn":0,"messages":[{"role":"user","content":"a"},{"content":"b"}],"max_tokens":3}`, []string{":2:", `messages[1].role`}},
		{"content missing", `{"conversation_id":"d","turn":0,"messages":[{"role":"user"}],"max_tokens":3}`, []string{":2:", `messages[0].content`}},
		{"content type", `{"conversation_id":"d","turn":0,"messages":[{"role":"user","content":5}],"max_tokens":3}`, []string{":2:", `"messages"`, "content"}},
		{"unknown field", `{"conversation_id":"d","turn":0,"messages":[{"role":"user","content":"a"}],"max_tokens":3,"temperature":1}`, []string{":2:", `"temperature"`, "accepted"}},
		{"arrival negative", `{"conversation_id":"d","turn":0,"arrival_ms":-1,"messages":[{"role":"user","content":"a"}],"max_tokens":3}`, []string{":2:", `"arrival_ms"`}},
		{"duplicate turn", `{"conversation_id":"c","turn":0,"messages":[{"role":"user","content":"a"}],"max_tokens":3}`, []string{":2:", `"turn"`, "line 1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseFile(strings.NewReader(good+"\n"+tc.line+"\n"), "w.jsonl")
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not say %q", err, w)
				}
			}
			if !strings.HasPrefix(err.Error(), "w.jsonl:") {
				t.Fatalf("error %q does not name the file", err)
			}
		})
	}
	mixed := good + "\n" + `{"conversation_id":"d","turn":0,"arrival_ms":5,"messages":[{"role":"user","content":"a"}],"max_tokens":3}` + "\n"
	if _, err := ParseFile(strings.NewReader(mixed), "w.jsonl"); err == nil || !strings.Contains(err.Error(), "w.jsonl:1:") || !strings.Contains(err.Error(), "arrival_ms") {
		t.Fatalf("mixed arrival_ms: %v", err)
	}
	if _, err := ParseFile(strings.NewReader("\n\n"), "w.jsonl"); err == nil || !strings.Contains(err.Error(), "no requests") {
		t.Fatalf("empty file: %v", err)
	}
}

func TestSummaryAndJSONKeys(t *testing.T) {
	var r Recorder
	for i := 1; i <= 100; i++ {
		r.Add(Outcome{OK: true, InputTokens: 10, OutputTokens: 11, TTFT: time.Duration(i) * time.Millisecond,
			Latency: time.Duration(i)*time.Millisecond + 100*time.Millisecond, End: time.Duration(i) * 100 * time.Millisecond})
	}
	r.Add(Outcome{Err: "HTTP 429: busy"})
	r.SetPrefixCache(25, 100)
	s := r.Summary("p")
	if s.Requests != 100 || s.Failed != 1 || s.InputTokens != 1000 || s.OutputTokens != 1100 || s.DurationS != 10 {
		t.Fatalf("%+v", s)
	}
	if s.RequestThroughput != 10 || s.OutputThroughput != 110 || s.TotalThroughput != 210 {
		t.Fatalf("throughputs %v %v %v", s.RequestThroughput, s.OutputThroughput, s.TotalThroughput)
	}
	if s.TTFTMeanMs != 50.5 || s.TTFTMedianMs != 50.5 || s.TTFTP99Ms < 99 || s.TTFTP99Ms > 100 {
		t.Fatalf("ttft %v %v %v", s.TTFTMeanMs, s.TTFTMedianMs, s.TTFTP99Ms)
	}
	if s.TPOTMeanMs != 10 || s.TPOTP99Ms != 10 {
		t.Fatalf("tpot %v %v: want (latency-ttft)/(tokens-1) = 10ms", s.TPOTMeanMs, s.TPOTP99Ms)
	}
	if s.PrefixHitRatio == nil || *s.PrefixHitRatio != 0.25 {
		t.Fatalf("hit ratio %v", s.PrefixHitRatio)
	}
	var buf bytes.Buffer
	if err := WriteJSON(&buf, []Summary{s}); err != nil {
		t.Fatal(err)
	}
	var arr []map[string]any
	if err := json.Unmarshal(buf.Bytes(), &arr); err != nil || len(arr) != 1 {
		t.Fatalf("%v: %s", err, buf.String())
	}
	var keys []string
	for k := range arr[0] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	want := []string{"duration_s", "input_tokens", "output_tokens", "policy", "prefix_hit_ratio", "request_throughput",
		"rejected", "rejections", "failed", "errors", "per_instance", "requests", "total_throughput", "tpot_mean_ms", "tpot_median_ms", "tpot_p99_ms", "ttft_mean_ms", "ttft_median_ms",
		"ttft_p99_ms", "output_throughput"}
	sort.Strings(want)
	if !slices.Equal(keys, want) {
		t.Fatalf("JSON keys %q, want exactly %q", keys, want)
	}
	buf.Reset()
	WriteTable(&buf, s)
	for _, w := range []string{"Successful requests:", "Benchmark duration (s):", "Total input tokens:", "Total generated tokens:",
		"Request throughput (req/s):", "Output token throughput (tok/s):", "Total Token throughput (tok/s):",
		"Mean TTFT (ms):", "Median TTFT (ms):", "P99 TTFT (ms):", "Mean TPOT (ms):", "Median TPOT (ms):", "P99 TPOT (ms):",
		"Prefix cache hit ratio:", "0.2500", "Failed requests:", "HTTP 429: busy"} {
		if !strings.Contains(buf.String(), w) {
			t.Fatalf("table lacks %q:\n%s", w, buf.String())
		}
	}
}

func TestDriverClosedLoopRampUp(t *testing.T) {
	src := mustMultiTurn(t, DefaultMultiTurn())
	d, err := NewDriver(Plan{Source: src, Arrivals: Arrivals{Concurrency: 4}, RampUp: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		at, ok := d.Next()
		if !ok || at != time.Duration(i)*time.Second {
			t.Fatalf("client %d starts at %s, want %ds", i, at, i)
		}
		d.Pop()
	}
}

func TestDriverClosedLoopBacksOffAfterFailure(t *testing.T) {
	src := mustMultiTurn(t, DefaultMultiTurn())
	d, err := NewDriver(Plan{Source: src, Arrivals: Arrivals{Concurrency: 1}, FailureBackoff: 2 * time.Second, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	r := d.Pop()
	d.Done(5*time.Second, r, "", false)
	at, ok := d.Next()
	if !ok || at != 7*time.Second {
		t.Fatalf("next request at %s (%v), want 2 s after the failure", at, ok)
	}
	if r2 := d.Pop(); r2.Conversation == r.Conversation || r2.Turn != 0 {
		t.Fatal("a failed conversation must end; the slot starts a new one")
	}
}
