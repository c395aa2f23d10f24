package workload

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// MultiTurn configures the multi-turn chat workload: conversations grouped
// under shared system prompts, each turn sending the whole history.
type MultiTurn struct {
	Seed  uint64
	Model string
	// Groups is the number of distinct system prompts; each conversation
	// uses one, chosen at random.
	Groups       int
	SystemTokens int
	// SystemSigma, when positive, draws each system prompt's length from a
	// log-normal distribution of mean SystemTokens and log-space spread
	// SystemSigma (clipped to [1, 8×SystemTokens]) instead of giving every
	// one SystemTokens: a fleet serving many applications, whose prompts
	// differ in size by an order of magnitude.
	SystemSigma float64
	// Zipf, when positive, chooses a conversation's system prompt with
	// probability proportional to 1/rank^Zipf (rank 1 the most popular)
	// instead of uniformly: a few applications carry most of the traffic.
	Zipf float64
	// UserTokens and OutputTokens are the median lengths of a user message
	// and of a reply. Both are log-normal, as in ShareGPT: user messages
	// spread widely (σ = 1, clipped to [4, 8×median]), replies less
	// (σ = 0.6, clipped to [4, 4×median]).
	UserTokens   int
	OutputTokens int
	// TurnsMin and TurnsMax bound the turns of a conversation (uniform).
	TurnsMin, TurnsMax int
	// ThinkTime is the mean (exponential) pause between a reply and the
	// next turn under Poisson arrivals.
	ThinkTime time.Duration
	// Conversations bounds the workload; 0 is endless.
	Conversations int
}

// DefaultMultiTurn is a chat-assistant mix: 8 system prompts of 1,024
// tokens, user turns of ~100 tokens (tens to hundreds), replies of ~200,
// 3 to 10 turns with 5 s of thinking between them.
func DefaultMultiTurn() MultiTurn {
	return MultiTurn{
		Seed: 1, Groups: 8, SystemTokens: 1024, UserTokens: 100, OutputTokens: 200,
		TurnsMin: 3, TurnsMax: 10, ThinkTime: 5 * time.Second,
	}
}

// Validate names the first bad field.
func (m MultiTurn) Validate() error {
	switch {
	case m.Groups < 1:
		return fmt.Errorf("multi-turn workload: groups = %d: want 1 or more", m.Groups)
	case m.SystemTokens < 0:
		return fmt.Errorf("multi-turn workload: system tokens = %d: want 0 or more", m.SystemTokens)
	case !(m.SystemSigma >= 0 && m.SystemSigma <= 3):
		return fmt.Errorf("multi-turn workload: system sigma = %g: want 0 (every system prompt the same size) to 3", m.SystemSigma)
	case !(m.Zipf >= 0 && m.Zipf <= 5):
		return fmt.Errorf("multi-turn workload: zipf = %g: want 0 (uniform popularity) to 5", m.Zipf)
	case m.UserTokens < 1:
		return fmt.Errorf("multi-turn workload: user tokens = %d: want 1 or more", m.UserTokens)
	case m.OutputTokens < 1:
		return fmt.Errorf("multi-turn workload: output tokens = %d: want 1 or more", m.OutputTokens)
	case m.TurnsMin < 1 || m.TurnsMax < m.TurnsMin:
		return fmt.Errorf("multi-turn workload: turns %d..%d: want 1 <= min <= max", m.TurnsMin, m.TurnsMax)
	case m.ThinkTime < 0:
		return fmt.Errorf("multi-turn workload: think time %s: want 0 or more", m.ThinkTime)
	case m.Conversations < 0:
		return fmt.Errorf("multi-turn workload: conversations = %d: want 0 (endless) or more", m.Conversations)
	}
	return nil
}

type multiTurn struct {
	MultiTurn
	systems []string
	// cdf is the cumulative popularity of the system prompts under Zipf
	// (nil: uniform).
	cdf []float64
}

// NewMultiTurn builds the multi-turn workload.
func NewMultiTurn(m MultiTurn) (Source, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	w := &multiTurn{MultiTurn: m}
	for g := 0; g < m.Groups; g++ {
		r := newRand(m.Seed, "system", g)
		n := m.SystemTokens
		if m.SystemSigma > 0 && n > 0 {
			// The median that gives a log-normal of mean n.
			median := float64(n) * math.Exp(-m.SystemSigma*m.SystemSigma/2)
			n = logNormal(r, median, m.SystemSigma, 1, 8*n)
		}
		w.systems = append(w.systems, Text(r.Uint64(), n))
	}
	if m.Zipf > 0 {
		w.cdf = make([]float64, m.Groups)
		sum := 0.0
		for g := range w.cdf {
			sum += math.Pow(float64(g+1), -m.Zipf)
			w.cdf[g] = sum
		}
		for g := range w.cdf {
			w.cdf[g] /= sum
		}
	}
	return w, nil
}

// group draws a conversation's system prompt.
func (w *multiTurn) group(r *rand.Rand) int {
	if w.cdf == nil {
		return r.IntN(w.Groups)
	}
	u := r.Float64()
	g, _ := slices.BinarySearch(w.cdf, u)
	return min(g, w.Groups-1)
}

// SystemTokens is the length of each system prompt, in tokens, by group.
func (w *multiTurn) SystemTokens() []int {
	out := make([]int, len(w.systems))
	for i, s := range w.systems {
		out[i] = len(s) / CharsPerToken
	}
	return out
}

func (w *multiTurn) Name() string {
	sys := fmt.Sprintf("%d system prompts of %d tokens", w.Groups, w.MultiTurn.SystemTokens)
	if w.SystemSigma > 0 {
		sys = fmt.Sprintf("%d system prompts of log-normal size, mean %d tokens, sigma %g", w.Groups, w.MultiTurn.SystemTokens, w.SystemSigma)
	}
	if w.Zipf > 0 {
		sys += fmt.Sprintf(", Zipf %g popularity", w.Zipf)
	}
	return fmt.Sprintf("multi-turn (%s, user ~%d, output ~%d tokens, %d-%d turns, think %s)",
		sys, w.UserTokens, w.OutputTokens, w.TurnsMin, w.TurnsMax, w.ThinkTime)
}

func (w *multiTurn) MeanTurns() float64 { return float64(w.TurnsMin+w.TurnsMax) / 2 }

func (w *multiTurn) Models() []string { return []string{w.Model} }

func (w *multiTurn) Conversation(i int) (*Conversation, bool) {
	if i < 0 || (w.Conversations > 0 && i >= w.Conversations) {
		return nil, false
	}
	r := newRand(w.Seed, "conversation", i)
	g := w.group(r)
	n := w.TurnsMin + r.IntN(w.TurnsMax-w.TurnsMin+1)
	c := &Conversation{
		ID: fmt.Sprintf("conv-%d", i), Model: w.Model, System: w.systems[g],
		Turns: make([]Turn, n), seed: r.Uint64(),
	}
	for t := range c.Turns {
		c.Turns[t] = Turn{
			User:      Text(r.Uint64(), logNormal(r, float64(w.UserTokens), 1.0, 4, 8*w.UserTokens)),
			MaxTokens: logNormal(r, float64(w.OutputTokens), 0.6, 4, 4*w.OutputTokens),
		}
		if t > 0 {
			c.Turns[t].Think = exponential(r, w.ThinkTime)
		}
	}
	return c, true
}

func exponential(r *rand.Rand, mean time.Duration) time.Duration {
	if mean <= 0 {
		return 0
	}
	return time.Duration(r.ExpFloat64() * float64(mean))
}

// SharedPrefix configures the shared-prefix workload: Groups system prompts,
// each followed by PromptsPerGroup different questions, one turn each, in a
// shuffled order.
type SharedPrefix struct {
	Seed            uint64
	Model           string
	Groups          int
	PromptsPerGroup int
	SystemTokens    int
	QuestionTokens  int
	OutputTokens    int
}

// DefaultSharedPrefix follows SGLang's generated-shared-prefix benchmark in
// shape: 64 groups × 16 prompts, 2,048-token system prompts, 128-token
// questions, 256-token outputs.
func DefaultSharedPrefix() SharedPrefix {
	return SharedPrefix{Seed: 1, Groups: 64, PromptsPerGroup: 16, SystemTokens: 2048, QuestionTokens: 128, OutputTokens: 256}
}

// Validate names the first bad field.
func (s SharedPrefix) Validate() error {
	switch {
	case s.Groups < 1:
		return fmt.Errorf("shared-prefix workload: groups = %d: want 1 or more", s.Groups)
	case s.PromptsPerGroup < 1:
		return fmt.Errorf("shared-prefix workload: prompts per group = %d: want 1 or more", s.PromptsPerGroup)
	case s.SystemTokens < 0:
		return fmt.Errorf("shared-prefix workload: system tokens = %d: want 0 or more", s.SystemTokens)
	case s.QuestionTokens < 1:
		return fmt.Errorf("shared-prefix workload: question tokens = %d: want 1 or more", s.QuestionTokens)
	case s.OutputTokens < 1:
		return fmt.Errorf("shared-prefix workload: output tokens = %d: want 1 or more", s.OutputTokens)
	case s.Groups*s.PromptsPerGroup > 1<<24:
		return fmt.Errorf("shared-prefix workload: %d × %d prompts: want at most %d", s.Groups, s.PromptsPerGroup, 1<<24)
	}
	return nil
}

type sharedPrefix struct {
	SharedPrefix
	systems []string
	order   []int32 // shuffled group×prompt indexes
}

// NewSharedPrefix builds the shared-prefix workload.
func NewSharedPrefix(s SharedPrefix) (Source, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	w := &sharedPrefix{SharedPrefix: s}
	for g := 0; g < s.Groups; g++ {
		r := newRand(s.Seed, "system", g)
		w.systems = append(w.systems, Text(r.Uint64(), s.SystemTokens))
	}
	n := s.Groups * s.PromptsPerGroup
	w.order = make([]int32, n)
	for i := range w.order {
		w.order[i] = int32(i)
	}
	r := newRand(s.Seed, "order", 0)
	r.Shuffle(n, func(i, j int) { w.order[i], w.order[j] = w.order[j], w.order[i] })
	return w, nil
}

func (w *sharedPrefix) Name() string {
	return fmt.Sprintf("shared-prefix (%d groups × %d prompts, system %d, question %d, output %d tokens)",
		w.Groups, w.PromptsPerGroup, w.SystemTokens, w.QuestionTokens, w.OutputTokens)
}

func (w *sharedPrefix) MeanTurns() float64 { return 1 }

func (w *sharedPrefix) Models() []string { return []string{w.Model} }

func (w *sharedPrefix) Conversation(i int) (*Conversation, bool) {
	if i < 0 || i >= len(w.order) {
		return nil, false
	}
	k := int(w.order[i])
	g, p := k/w.PromptsPerGroup, k%w.PromptsPerGroup
	r := newRand(w.Seed, "question", k)
	return &Conversation{
		ID: fmt.Sprintf("group-%d-prompt-%d", g, p), Model: w.Model, System: w.systems[g],
		Turns: []Turn{{User: Text(r.Uint64(), w.QuestionTokens), MaxTokens: w.OutputTokens}},
		seed:  r.Uint64(),
	}, true
}
