package prefixcache

import (
	"fmt"
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
)

// Params are prefix-cache's parameters: plugin type prefix-cache in an
// endpoint_picker_config file; the built-in profile prefix-cache runs with
// DefaultParams. docs/policies.md gives the reasons for the defaults.
type Params struct {
	// DecodeWeight scales the batch term of the cost: the delay a pick's
	// prefill and decode add to the requests already running on the
	// instance (the name predates the prefill part).
	DecodeWeight float64 `json:"decodeWeight"`
	// MaxLoadRatio: nothing is sent to an instance whose load would exceed
	// this multiple of the candidates' mean while another is below; 0 sets
	// no such cap.
	MaxLoadRatio float64 `json:"maxLoadRatio"`
	// SpeedCalibration measures each instance's speed from its reported
	// token throughput; the prefill sent to an instance drains at that
	// speed.
	SpeedCalibration bool `json:"speedCalibration"`
	// MaxKVCacheUsage is the KV cache fraction at which admission holds an
	// instance back (llm_scheduler.max_kv_cache_usage): the cost prices
	// the KV a pick takes as it grows scarce toward it.
	MaxKVCacheUsage float64 `json:"maxKVCacheUsage" default:"llm_scheduler.max_kv_cache_usage"`

	// The engine cost model this policy prices with; defaults
	// llm_scheduler.cost_model, which admission prices with too.
	StepTime            framework.Duration `json:"stepTime" default:"llm_scheduler.cost_model.step_time"`
	PrefillTokenTime    framework.Duration `json:"prefillTokenTime" default:"llm_scheduler.cost_model.prefill_token_time"`
	DecodeTokenTime     framework.Duration `json:"decodeTokenTime" default:"llm_scheduler.cost_model.decode_token_time"`
	MaxBatchedTokens    int                `json:"maxBatchedTokens" default:"llm_scheduler.cost_model.max_batched_tokens"`
	DefaultOutputTokens int                `json:"defaultOutputTokens" default:"llm_scheduler.cost_model.default_output_tokens"`

	// The prefix index's size; defaults llm_scheduler.prefix_index.
	PrefixIndexMaxBlocks     int `json:"prefixIndexMaxBlocks" default:"llm_scheduler.prefix_index.max_blocks"`
	PrefixIndexDefaultBlocks int `json:"prefixIndexDefaultBlocks" default:"llm_scheduler.prefix_index.default_blocks"`
}

// DefaultParams are the parameters with c's shared sections
// (llm_scheduler.cost_model, prefix_index).
func DefaultParams(c config.Config) Params {
	m, x := c.Scheduler.CostModel, c.Scheduler.PrefixIndex
	return Params{
		DecodeWeight:             1,
		MaxLoadRatio:             2,
		SpeedCalibration:         true,
		MaxKVCacheUsage:          c.Scheduler.MaxKVCacheUsage,
		StepTime:                 framework.Duration(m.StepTime),
		PrefillTokenTime:         framework.Duration(m.PrefillTokenTime),
		DecodeTokenTime:          framework.Duration(m.DecodeTokenTime),
		MaxBatchedTokens:         m.MaxBatchedTokens,
		DefaultOutputTokens:      m.DefaultOutputTokens,
		PrefixIndexMaxBlocks:     x.MaxBlocks,
		PrefixIndexDefaultBlocks: x.DefaultBlocks,
	}
}

// Validate checks every parameter, naming the first bad one.
func (p Params) Validate() error {
	switch {
	case !(p.DecodeWeight >= 0):
		return fmt.Errorf("parameter decodeWeight %g: accepted: 0 or more", p.DecodeWeight)
	case p.MaxLoadRatio != 0 && !(p.MaxLoadRatio >= 1):
		return fmt.Errorf("parameter maxLoadRatio %g: accepted: 0 (no cap) or 1 or more", p.MaxLoadRatio)
	case !(p.MaxKVCacheUsage > 0 && p.MaxKVCacheUsage <= 1):
		return fmt.Errorf("parameter maxKVCacheUsage %g: accepted: a fraction in (0, 1]", p.MaxKVCacheUsage)
	}
	if err := ValidateCostModel(p.StepTime, p.PrefillTokenTime, p.DecodeTokenTime, p.MaxBatchedTokens, p.DefaultOutputTokens); err != nil {
		return err
	}
	return ValidateIndexSize(p.PrefixIndexMaxBlocks, p.PrefixIndexDefaultBlocks)
}

// ValidateCostModel checks cost-model parameters by llm_scheduler.cost_model's
// rules, naming the parameter.
func ValidateCostModel(step, prefill, decode framework.Duration, maxBatched, defaultOutput int) error {
	switch {
	case step < 0:
		return fmt.Errorf("parameter stepTime %s: accepted: 0 or a positive duration", step)
	case prefill <= 0:
		return fmt.Errorf("parameter prefillTokenTime %s: accepted: a positive duration such as %q", prefill, (17250 * time.Nanosecond).String())
	case decode < 0:
		return fmt.Errorf("parameter decodeTokenTime %s: accepted: 0 or a positive duration", decode)
	case maxBatched < 1:
		return fmt.Errorf("parameter maxBatchedTokens %d: accepted: 1 or more", maxBatched)
	case defaultOutput < 1:
		return fmt.Errorf("parameter defaultOutputTokens %d: accepted: 1 or more", defaultOutput)
	}
	return nil
}

// ValidateIndexSize checks prefix index sizes by llm_scheduler.prefix_index's
// rules, naming the parameter.
func ValidateIndexSize(maxBlocks, defaultBlocks int) error {
	switch {
	case maxBlocks < 1024:
		return fmt.Errorf("parameter prefixIndexMaxBlocks %d: accepted: 1024 or more", maxBlocks)
	case defaultBlocks < 1:
		return fmt.Errorf("parameter prefixIndexDefaultBlocks %d: accepted: 1 or more", defaultBlocks)
	}
	return nil
}

// config is c with the shared sections these parameters override.
func (p Params) config(c config.Config) config.Config {
	c.Scheduler.CostModel = config.CostModel{
		StepTime:            time.Duration(p.StepTime),
		PrefillTokenTime:    time.Duration(p.PrefillTokenTime),
		DecodeTokenTime:     time.Duration(p.DecodeTokenTime),
		MaxBatchedTokens:    p.MaxBatchedTokens,
		DefaultOutputTokens: p.DefaultOutputTokens,
	}
	c.Scheduler.PrefixIndex = config.PrefixIndex{MaxBlocks: p.PrefixIndexMaxBlocks, DefaultBlocks: p.PrefixIndexDefaultBlocks}
	return c
}
