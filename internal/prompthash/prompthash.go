// Package prompthash is the prompt-hashing contract of ARCHITECTURE §6,
// shared by the gateway (computes), the scheduler (indexes) and the simulator
// (replays). A prompt is rendered to text deterministically, cut into
// fixed-size blocks of bytes, and each full block is hashed together with the
// hash of the block before it, starting from a seed derived from the model
// (and a cache salt). Two prompts therefore share hash i exactly when they
// share their first i+1 blocks and their model, which is what an engine's
// prefix cache rewards.
//
// Only full blocks are hashed: engines cache whole KV blocks, and a trailing
// partial block would never match.
package prompthash

import (
	"encoding/binary"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// Message is one chat message as the hashing scheme sees it.
type Message struct {
	Role    string
	Content string
}

// RenderChat renders chat messages in order. The rendering of message i does
// not depend on later messages, so a conversation's next turn extends the
// previous turn's rendering and keeps its block hashes.
func RenderChat(msgs []Message) string {
	n := 0
	for _, m := range msgs {
		n += len(m.Role) + len(m.Content) + 2
	}
	var b strings.Builder
	b.Grow(n)
	for _, m := range msgs {
		b.WriteString(m.Role)
		b.WriteByte('\n')
		b.WriteString(m.Content)
		b.WriteByte('\n')
	}
	return b.String()
}

// Seed starts a hash chain. Different models never share blocks; a cache salt
// (vLLM's cache_salt) isolates tenants that must not share cached prefixes.
func Seed(model, salt string) uint64 {
	d := xxhash.New()
	_, _ = d.WriteString("llmrouter/v1\x00")
	_, _ = d.WriteString(model)
	_, _ = d.WriteString("\x00")
	_, _ = d.WriteString(salt)
	return d.Sum64()
}

// Blocks hashes the full blocks of the first maxChars bytes of text, in
// blocks of blockChars bytes. Work and output are bounded by maxChars, so a
// huge prompt costs no more than one of maxChars. It appends to dst, which
// may be nil, and returns the extended slice.
func Blocks(dst []uint64, seed uint64, text string, blockChars, maxChars int) []uint64 {
	if blockChars <= 0 {
		return dst
	}
	if maxChars > 0 && len(text) > maxChars {
		text = text[:maxChars]
	}
	return extend(dst, seed, text, 0, blockChars)
}

// extend appends the chain from h over the full blocks of size bytes of
// text from off on.
func extend(dst []uint64, h uint64, text string, off, size int) []uint64 {
	var prev [8]byte
	d := xxhash.New()
	for ; off+size <= len(text); off += size {
		binary.LittleEndian.PutUint64(prev[:], h)
		d.Reset()
		_, _ = d.Write(prev[:])
		_, _ = d.WriteString(text[off : off+size])
		h = d.Sum64()
		dst = append(dst, h)
	}
	return dst
}

// Tiered hashes text as Blocks does up to headChars (rounded down to whole
// blocks of blockChars), then continues the same chain in blocks of
// tailBlockChars up to maxChars, and returns the hashes and how many of
// them are head blocks. The tail starts only once the head is complete, so
// where a block begins depends on its position alone and two prompts still
// share hash i exactly when they share everything up to its block's end.
//
// The head is what engines cache and what a router weighs finely; past it
// a prompt mostly tells conversations apart, which coarse blocks do for
// far fewer hashes: with 64-character blocks to 64 KiB and 4 KiB past it
// (the gateway's defaults) a 1 MiB prompt is 1,024 head and 240 tail
// hashes instead of 16,384. tailBlockChars <= 0, or maxChars no longer
// than the head, hashes the head alone (Blocks).
func Tiered(dst []uint64, seed uint64, text string, blockChars, headChars, tailBlockChars, maxChars int) (hashes []uint64, head int) {
	if blockChars <= 0 {
		return dst, 0
	}
	headEnd := headChars / blockChars * blockChars
	start := len(dst)
	dst = Blocks(dst, seed, text, blockChars, headEnd)
	head = len(dst) - start
	if tailBlockChars <= 0 || maxChars <= headEnd || len(text) < headEnd+tailBlockChars || head*blockChars < headEnd {
		return dst, head
	}
	h := seed
	if head > 0 {
		h = dst[len(dst)-1]
	}
	if len(text) > maxChars {
		text = text[:maxChars]
	}
	return extend(dst, h, text, headEnd, tailBlockChars), head
}

// EstimateTokens converts a character count to tokens at charsPerToken
// characters per token (4 for English text with Llama-style tokenizers).
func EstimateTokens(chars int, charsPerToken float64) int64 {
	if charsPerToken <= 0 {
		charsPerToken = 4
	}
	return int64(float64(chars)/charsPerToken + 0.5)
}
