package engine

import "github.com/llmrouter/llmrouter/internal/prompthash"

// PromptTokens estimates the tokens of a rendered prompt of n characters, at
// least one (an engine always computes one token).
func (c Config) PromptTokens(chars int) int {
	t := int(prompthash.EstimateTokens(chars, c.CharsPerToken))
	if t < 1 {
		t = 1
	}
	return t
}

// HashPrompt returns the token count and block hash chain of a rendered prompt
// exactly as the gateway computes them (internal/prompthash, seeded by model
// and cache salt), with one hash block per KV block. The whole prompt is
// hashed: an engine caches all of it, the gateway only bounds its own work.
func (c Config) HashPrompt(model, salt, text string) (tokens int, hashes []uint64) {
	hashes = prompthash.Blocks(nil, prompthash.Seed(model, salt), text, c.BlockChars(), 0)
	return c.PromptTokens(len(text)), hashes
}
