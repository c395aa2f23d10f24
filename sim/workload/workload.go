package workload

import (
	"math"
	"math/rand/v2"
	"time"

	"github.com/llmrouter/llmrouter/internal/prompthash"
)

// CharsPerToken is the text density of generated content: every generated
// token is one four-character word, the ratio the engines and the gateway
// assume for English text.
const CharsPerToken = 4

// Message is one chat message, as the OpenAI API and the workload file spell it.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Render renders messages exactly as the gateway does for prompt hashing
// (prompthash.RenderChat).
func Render(msgs []Message) string {
	pm := make([]prompthash.Message, len(msgs))
	for i, m := range msgs {
		pm[i] = prompthash.Message{Role: m.Role, Content: m.Content}
	}
	return prompthash.RenderChat(pm)
}

// Turn is one request of a conversation.
type Turn struct {
	// Messages, when set, is the whole request as given (file workloads).
	// Otherwise the request is built from the conversation's history: its
	// system prompt, every earlier turn's user message and reply, then User.
	Messages []Message
	// User is the turn's user message (generated workloads).
	User string
	// Model, when set, overrides the conversation's model for this turn.
	Model string
	// MaxTokens is the output length asked for; the simulated engines
	// generate exactly this many tokens.
	MaxTokens int
	// Think is the pause between the previous turn's completion and this
	// turn, used when conversations start as a Poisson process.
	Think time.Duration
	// Arrival is the turn's arrival time since the start of the run when
	// HasArrival (the file's arrival_ms).
	Arrival    time.Duration
	HasArrival bool
}

// Conversation is a sequence of turns that share a history.
type Conversation struct {
	ID string
	// Model is the model asked for; "" lets the runner choose its default.
	Model string
	// System is the system prompt of generated conversations ("" for none).
	System string
	Turns  []Turn
	// seed makes the simulated replies of this conversation deterministic.
	seed uint64
}

// Reply is the deterministic stand-in for the reply to turn (0-based) of
// the conversation, tokens tokens long: what a simulated engine generates
// and what the next turn carries in its history.
func (c *Conversation) Reply(turn, tokens int) string {
	return Text(c.seed^(uint64(turn+1)*0x9e3779b97f4a7c15), tokens)
}

// Source is a workload: an indexed, possibly endless, set of conversations.
// Conversation i must not depend on which other conversations were asked
// for, or when, so every run sees the same conversations.
type Source interface {
	// Name describes the workload in reports.
	Name() string
	// Conversation returns conversation i (from 0), or false when the
	// workload has no more.
	Conversation(i int) (*Conversation, bool)
	// MeanTurns is the mean number of turns per conversation; Poisson
	// arrivals start conversations at rate/MeanTurns so that the request
	// rate is the one asked for.
	MeanTurns() float64
	// Models lists the models the workload names ("" for the default).
	Models() []string
}

// Text returns deterministic filler of the given number of tokens: words of
// three lowercase letters and a space, so it is CharsPerToken characters per
// token and two different seeds share no block of text.
func Text(seed uint64, tokens int) string {
	if tokens <= 0 {
		return ""
	}
	b := make([]byte, tokens*CharsPerToken)
	x := seed
	for i := 0; i < len(b); i += CharsPerToken {
		// splitmix64: fast, and every word depends on the seed.
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		b[i] = 'a' + byte(z%26)
		b[i+1] = 'a' + byte((z>>8)%26)
		b[i+2] = 'a' + byte((z>>16)%26)
		b[i+3] = ' '
	}
	return string(b)
}

// newRand is the generator of one item of a workload: independent of every
// other item, so items can be generated in any order.
func newRand(seed uint64, stream string, i int) *rand.Rand {
	return rand.New(rand.NewPCG(seed^hashString(stream), uint64(i)*0x9e3779b97f4a7c15+1))
}

func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// logNormal draws a length whose median is median, with log-space spread
// sigma, clipped to [lo, hi]: the shape of ShareGPT's turn lengths.
func logNormal(r *rand.Rand, median, sigma float64, lo, hi int) int {
	v := median * math.Exp(sigma*r.NormFloat64())
	n := int(math.Round(v))
	return min(max(n, lo), hi)
}
