package prefixindex

import "github.com/llmrouter/llmrouter/internal/config"

// Sizing relates a request's hashed prompt blocks to tokens, and an
// instance's KV capacity to blocks, as every policy that keeps an index
// must: a block is block_chars prompt characters (the request's, when the
// gateway states it, else the configuration's) at chars_per_token
// characters a token; an instance that reports no KV capacity gets
// llm_scheduler.prefix_index.default_blocks.
type Sizing struct {
	charsPerToken float64
	blockChars    int
	defaultBlocks int
}

// NewSizing takes cfg's llm_gateway.chars_per_token and block_chars and
// llm_scheduler.prefix_index.default_blocks (config.Validate holds them
// positive).
func NewSizing(cfg config.Config) Sizing {
	return Sizing{cfg.Gateway.CharsPerToken, cfg.Gateway.BlockChars, cfg.Scheduler.PrefixIndex.DefaultBlocks}
}

// TokensPerBlock is the tokens in one block of a request whose blocks are
// reqBlockChars characters (0: the configuration's).
func (z Sizing) TokensPerBlock(reqBlockChars int) float64 {
	return float64(z.chars(reqBlockChars)) / z.charsPerToken
}

// PromptTokens is a request's prompt length: promptTokens when the gateway
// counted them, else estimated from its blocks.
func (z Sizing) PromptTokens(promptTokens int64, blocks, reqBlockChars int) float64 {
	if promptTokens > 0 {
		return float64(promptTokens)
	}
	return float64(blocks) * z.TokensPerBlock(reqBlockChars)
}

// Capacity is an instance's index capacity in blocks of reqBlockChars
// characters, from its KV capacity (numGPUBlocks × blockSize tokens).
func (z Sizing) Capacity(numGPUBlocks, blockSize int64, reqBlockChars int) int {
	return CapacityBlocks(numGPUBlocks, blockSize, z.charsPerToken, z.chars(reqBlockChars), z.defaultBlocks)
}

func (z Sizing) chars(reqBlockChars int) int {
	if reqBlockChars > 0 {
		return reqBlockChars
	}
	return z.blockChars
}
