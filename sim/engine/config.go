package engine

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// Config is everything that shapes one simulated instance.
type Config struct {
	// StepBase (a) is the fixed cost of one engine step.
	StepBase time.Duration
	// PrefillPerToken (b) is the cost of one uncached prompt token in a step.
	PrefillPerToken time.Duration
	// DecodePerToken (c) is the cost of one decode token in a step.
	DecodePerToken time.Duration
	// FixedPrefillStep, when positive, replaces a + b×prefill for any step that
	// schedules prefill tokens, and FixedDecodeStep replaces a + c×decode for a
	// step with decode tokens only. They make time to first token and
	// inter-token delay simple constants for demos; they ignore batch size and
	// prefix hits (a cached prompt still needs its last token computed).
	FixedPrefillStep time.Duration
	FixedDecodeStep  time.Duration

	// MaxNumBatchedTokens bounds the tokens scheduled in one step (chunked prefill).
	MaxNumBatchedTokens int
	// MaxNumSeqs bounds the requests running at once.
	MaxNumSeqs int
	// NumBlocks is the KV cache capacity in blocks of BlockSize tokens.
	NumBlocks int
	BlockSize int
	// CharsPerToken converts prompt characters to tokens (4 for English text
	// with Llama-style tokenizers).
	CharsPerToken float64
	// DisablePrefixCaching turns prefix caching off (vLLM's
	// --no-enable-prefix-caching): every prompt is computed in full.
	DisablePrefixCaching bool
}

// Profile is a named, calibrated Config.
type Profile struct {
	Name        string
	Description string
	Config      Config
}

// DefaultProfile is the profile used when none is named.
const DefaultProfile = "llama3-8b-h100"

func baseConfig() Config {
	return Config{
		MaxNumBatchedTokens: 8192,
		MaxNumSeqs:          256,
		BlockSize:           16,
		CharsPerToken:       4,
	}
}

// The H100 numbers are the published BLIS linear fit for Llama-3-8B on one
// H100 (vLLM V1, bf16). The other GPUs have no published fit: their numbers
// scale the H100 fit by the GPUs' data sheets, a and c (weight and KV reads)
// by HBM bandwidth, b (prefill compute) by dense BF16 throughput, and the block
// count by the memory left after 16 GB of weights at 90 % utilisation
// (Llama-3-8B's KV is 128 KiB per token, 2 MiB per block of 16). They are
// estimates, good for relative comparisons, not measurements.
var profiles = map[string]Profile{
	"llama3-8b-h100": {
		Name:        "llama3-8b-h100",
		Description: "Llama-3-8B on one H100 80GB (BLIS fit: a=5.75ms b=17.25µs c=6µs, 29000 blocks)",
		Config: with(baseConfig(), func(c *Config) {
			c.StepBase = 5750 * time.Microsecond
			c.PrefillPerToken = 17250 * time.Nanosecond
			c.DecodePerToken = 6 * time.Microsecond
			c.NumBlocks = 29000
		}),
	},
	"llama3-8b-a100": {
		Name:        "llama3-8b-a100",
		Description: "Llama-3-8B on one A100 80GB (H100 fit scaled by bandwidth and compute: a=9.4ms b=54.7µs c=9.8µs, 29000 blocks)",
		Config: with(baseConfig(), func(c *Config) {
			c.StepBase = 9400 * time.Microsecond
			c.PrefillPerToken = 54700 * time.Nanosecond
			c.DecodePerToken = 9800 * time.Nanosecond
			c.NumBlocks = 29000
		}),
	},
	"llama3-8b-l4": {
		Name:        "llama3-8b-l4",
		Description: "Llama-3-8B on one L4 24GB (H100 fit scaled by bandwidth and compute: a=64ms b=141µs c=67µs, 2000 blocks)",
		Config: with(baseConfig(), func(c *Config) {
			c.StepBase = 64 * time.Millisecond
			c.PrefillPerToken = 141 * time.Microsecond
			c.DecodePerToken = 67 * time.Microsecond
			c.NumBlocks = 2000
			c.MaxNumSeqs = 128
		}),
	},
}

func with(c Config, f func(*Config)) Config {
	f(&c)
	return c
}

// Profiles lists the named profiles, sorted by name.
func Profiles() []Profile {
	out := make([]Profile, 0, len(profiles))
	for _, p := range profiles {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ProfileNames lists the profile names, sorted.
func ProfileNames() []string {
	var names []string
	for _, p := range Profiles() {
		names = append(names, p.Name)
	}
	return names
}

// ProfileConfig returns the Config of a named profile ("" is DefaultProfile).
func ProfileConfig(name string) (Config, error) {
	if name == "" {
		name = DefaultProfile
	}
	p, ok := profiles[name]
	if !ok {
		return Config{}, fmt.Errorf("unknown engine profile %q: accepted: %s", name, strings.Join(ProfileNames(), ", "))
	}
	return p.Config, nil
}

// DefaultConfig is the default profile's Config.
func DefaultConfig() Config {
	c, _ := ProfileConfig(DefaultProfile)
	return c
}

// Validate names the first bad field and what it accepts.
func (c Config) Validate() error {
	bad := func(name string, v any, want string) error {
		return fmt.Errorf("engine config: %s = %v: want %s", name, v, want)
	}
	switch {
	case c.StepBase < 0:
		return bad("step base (a)", c.StepBase, "a duration >= 0")
	case c.PrefillPerToken < 0:
		return bad("prefill per token (b)", c.PrefillPerToken, "a duration >= 0")
	case c.DecodePerToken < 0:
		return bad("decode per token (c)", c.DecodePerToken, "a duration >= 0")
	case c.FixedPrefillStep < 0:
		return bad("fixed prefill step", c.FixedPrefillStep, "a duration >= 0")
	case c.FixedDecodeStep < 0:
		return bad("fixed decode step", c.FixedDecodeStep, "a duration >= 0")
	case c.MaxNumBatchedTokens < 1:
		return bad("max_num_batched_tokens", c.MaxNumBatchedTokens, "1 or more")
	case c.MaxNumSeqs < 1:
		return bad("max_num_seqs", c.MaxNumSeqs, "1 or more")
	case c.BlockSize < 1:
		return bad("block_size", c.BlockSize, "1 or more")
	case c.NumBlocks < 1 || c.NumBlocks > math.MaxInt32-1:
		return bad("num_blocks", c.NumBlocks, fmt.Sprintf("1 to %d", math.MaxInt32-1))
	case !(c.CharsPerToken > 0) || math.IsInf(c.CharsPerToken, 0):
		return bad("chars_per_token", c.CharsPerToken, "a positive number")
	}
	if c.stepTime(1, 0) <= 0 || c.stepTime(0, 1) <= 0 {
		return fmt.Errorf("engine config: every step must take time: set the step base (a), the per-token costs (b, c) or the fixed step times")
	}
	return nil
}

// StepTime is the duration of a step that schedules prefill uncached prompt
// tokens and decode tokens.
func (c Config) StepTime(prefill, decode int) time.Duration { return c.stepTime(prefill, decode) }

func (c Config) stepTime(prefill, decode int) time.Duration {
	if prefill > 0 && c.FixedPrefillStep > 0 {
		return c.FixedPrefillStep
	}
	if prefill == 0 && c.FixedDecodeStep > 0 {
		return c.FixedDecodeStep
	}
	return c.StepBase + time.Duration(prefill)*c.PrefillPerToken + time.Duration(decode)*c.DecodePerToken
}

// BlockChars is the prompt block size in characters that matches one KV block
// (block_size tokens of chars_per_token characters): hashing prompts with it
// makes the gateway's block hashes and the model's KV blocks line up.
func (c Config) BlockChars() int {
	n := int(float64(c.BlockSize)*c.CharsPerToken + 0.5)
	if n < 1 {
		n = 1
	}
	return n
}

// MinSpeed and MaxSpeed bound WithSpeed: beyond them a step's cost would
// round to nothing or overflow, and no real fleet mixes GPUs a hundred times
// apart.
const (
	MinSpeed = 0.01
	MaxSpeed = 100
)

// WithSpeed is the Config of an instance speed times as fast: every time cost
// (the step base, the per-token prefill and decode costs and the fixed step
// times) is divided by speed, so 0.5 is half as fast. The KV capacity and
// batch limits are kept: they model the memory and the engine's settings,
// not its speed.
func (c Config) WithSpeed(speed float64) (Config, error) {
	if !(speed >= MinSpeed && speed <= MaxSpeed) {
		return Config{}, fmt.Errorf("engine speed %g: want a number from %g to %g (1 = the profile's speed, 0.5 = half as fast)", speed, float64(MinSpeed), float64(MaxSpeed))
	}
	if speed == 1 {
		return c, nil
	}
	scale := func(d time.Duration) time.Duration { return time.Duration(math.Round(float64(d) / speed)) }
	c.StepBase = scale(c.StepBase)
	c.PrefillPerToken = scale(c.PrefillPerToken)
	c.DecodePerToken = scale(c.DecodePerToken)
	c.FixedPrefillStep = scale(c.FixedPrefillStep)
	c.FixedDecodeStep = scale(c.FixedDecodeStep)
	return c, nil
}
