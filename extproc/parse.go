package extproc

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
)

// Body is what the gateway takes from an OpenAI-style request body. The raw
// prompt stays here: only its hashes and size leave the gateway.
type Body struct {
	Model     string
	MaxTokens int64
	Stream    bool
	// IncludeUsage is stream_options.include_usage: the engine sends a final
	// chunk with usage.
	IncludeUsage bool
	User         string
	// CacheSalt is vLLM's cache_salt: prompts with different salts never
	// share cached prefixes, so it seeds the hash chain.
	CacheSalt string
	// LoRAPath is SGLang's lora_path when a string: the adapter asked of
	// an SGLang engine of Model (a list, SGLang's per-prompt adapters of a
	// batch, is not read: no one adapter names the request's instances).
	LoRAPath string
	// PromptChars is the length of the whole rendered prompt.
	PromptChars int
	// Prefix is the rendered prompt (prompthash's rendering), cut at the
	// parser's bound.
	Prefix []byte
}

// maxLoRAPath bounds the lora_path the gateway reads: adapter names are
// short, and a longer one (a client's mistake) is left unread, so the
// request is routed by its model alone.
const maxLoRAPath = 1024

// APIForPath maps a request path (query string allowed) to the API it
// serves; API_KIND_UNSPECIFIED for paths the gateway does not route.
func APIForPath(path string) llmrouterv1.ApiKind {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	path = strings.TrimSuffix(path, "/")
	switch {
	case strings.HasSuffix(path, "/v1/chat/completions"):
		return llmrouterv1.ApiKind_API_KIND_CHAT_COMPLETIONS
	case strings.HasSuffix(path, "/v1/completions"):
		return llmrouterv1.ApiKind_API_KIND_COMPLETIONS
	case strings.HasSuffix(path, "/v1/embeddings"):
		return llmrouterv1.ApiKind_API_KIND_EMBEDDINGS
	case strings.HasSuffix(path, "/v1/responses"):
		return llmrouterv1.ApiKind_API_KIND_RESPONSES
	}
	return llmrouterv1.ApiKind_API_KIND_UNSPECIFIED
}

// msgSpan is one chat message, still as spans of the body, so key order
// inside the message does not matter and nothing is copied until rendering.
type msgSpan struct {
	role []byte // raw string, may hold escapes
	// content is the raw text of a string content when text is set (the
	// common case, kept as read so a long prompt is swept once), else the
	// raw JSON value (an array of parts, null, or absent).
	content []byte
	text    bool
}

// ParseBody reads an OpenAI request body for api. The rendered prompt is
// appended to buf (may be nil; pass a reused buffer to avoid allocation) up
// to maxPrefix bytes (<= 0: unbounded). An error means the body is not
// something the gateway understands; the request then passes through.
func ParseBody(api llmrouterv1.ApiKind, body []byte, maxPrefix int, buf []byte) (Body, error) {
	var out Body
	var msgs []msgSpan
	var prompt, instructions []byte
	s := scanner{b: body}
	var fieldErr error
	ok := s.object(func(key []byte) bool {
		var ok bool
		switch string(key) {
		case "model":
			out.Model, ok = s.strValue()
			if !ok {
				fieldErr = errors.New(`"model" must be a string`)
			}
			return ok
		case "messages":
			if api != llmrouterv1.ApiKind_API_KIND_CHAT_COMPLETIONS {
				return s.skip()
			}
			msgs = msgs[:0]
			return s.array(func() bool {
				var m msgSpan
				ok := s.object(func(k []byte) bool {
					var ok bool
					switch string(k) {
					case "role":
						m.role, ok = s.str()
						return ok
					case "content":
						if s.peek() == '"' {
							m.content, ok = s.str()
							m.text = true
							return ok
						}
						m.content, ok = s.span()
						m.text = false
						return ok
					}
					return s.skip()
				})
				msgs = append(msgs, m)
				return ok
			})
		case "prompt":
			if api != llmrouterv1.ApiKind_API_KIND_COMPLETIONS {
				return s.skip()
			}
			prompt, ok = s.span()
			return ok
		case "input":
			if api != llmrouterv1.ApiKind_API_KIND_EMBEDDINGS && api != llmrouterv1.ApiKind_API_KIND_RESPONSES {
				return s.skip()
			}
			prompt, ok = s.span()
			return ok
		case "instructions":
			if api != llmrouterv1.ApiKind_API_KIND_RESPONSES {
				return s.skip()
			}
			instructions, ok = s.span()
			return ok
		case "max_tokens", "max_completion_tokens", "max_output_tokens":
			var n int64
			n, ok = s.int64Value()
			if ok && n > 0 {
				out.MaxTokens = n
			}
			return ok
		case "stream":
			out.Stream, ok = s.boolValue()
			return ok
		case "stream_options":
			if s.peek() == 'n' {
				return s.literal()
			}
			return s.object(func(k []byte) bool {
				if string(k) == "include_usage" {
					var ok bool
					out.IncludeUsage, ok = s.boolValue()
					return ok
				}
				return s.skip()
			})
		case "user":
			if s.peek() == 'n' {
				return s.literal()
			}
			out.User, ok = s.strValue()
			return ok
		case "lora_path":
			out.LoRAPath = "" // the last lora_path counts, as for every field
			if s.peek() != '"' {
				return s.skip()
			}
			var raw []byte
			if raw, ok = s.str(); ok && len(raw) <= maxLoRAPath {
				var text []byte
				text, ok = appendUnescaped(nil, raw, -1)
				out.LoRAPath = string(text)
			}
			return ok
		case "cache_salt":
			if s.peek() == 'n' {
				return s.literal()
			}
			out.CacheSalt, ok = s.strValue()
			return ok
		}
		return s.skip()
	})
	if !ok {
		if fieldErr != nil {
			return out, fieldErr
		}
		return out, fmt.Errorf("%w near byte %d", errSyntax, s.i)
	}
	if s.peek() != 0 {
		return out, fmt.Errorf("%w: data after the top-level object at byte %d", errSyntax, s.i)
	}
	r := renderer{buf: buf, max: maxPrefix}
	switch api {
	case llmrouterv1.ApiKind_API_KIND_CHAT_COMPLETIONS:
		if len(msgs) == 0 {
			return out, errors.New(`"messages" is missing or empty`)
		}
		for _, m := range msgs {
			ok := false
			if m.text {
				ok = r.messageText(m.role, m.content)
			} else {
				ok = r.message(m.role, m.content)
			}
			if !ok {
				return out, errors.New(`a message's "role" or "content" is not valid`)
			}
		}
	case llmrouterv1.ApiKind_API_KIND_RESPONSES:
		if prompt == nil {
			return out, errors.New(`"input" is missing`)
		}
		if instructions != nil && !r.message([]byte("system"), instructions) {
			return out, errors.New(`"instructions" is not valid`)
		}
		if !r.responsesInput(prompt) {
			return out, errors.New(`"input" is not valid`)
		}
	default:
		if prompt == nil {
			if api == llmrouterv1.ApiKind_API_KIND_EMBEDDINGS {
				return out, errors.New(`"input" is missing`)
			}
			return out, errors.New(`"prompt" is missing`)
		}
		if !r.prompt(prompt) {
			return out, errors.New(`the prompt is not a string, a list of strings or a list of token ids`)
		}
	}
	out.Prefix = r.buf
	out.PromptChars = r.total
	return out, nil
}

// renderer builds prompthash's rendering of a prompt into buf, bounded by
// max, while counting the full length.
type renderer struct {
	buf   []byte
	max   int
	total int
}

func (r *renderer) room() int {
	if r.max <= 0 {
		return -1
	}
	if n := r.max - len(r.buf); n > 0 {
		return n
	}
	return 0
}

// lit appends literal text.
func (r *renderer) lit(b []byte) {
	r.total += len(b)
	if n := r.room(); n != 0 {
		if n > 0 && len(b) > n {
			b = b[:n]
		}
		r.buf = append(r.buf, b...)
	}
}

// raw appends a raw JSON string's unescaped text; past the bound only its
// length is estimated (each escape sequence counted as one character).
func (r *renderer) raw(raw []byte) bool {
	n := r.room()
	if n == 0 {
		r.total += len(raw) - countByte(raw, '\\')
		return true
	}
	before := len(r.buf)
	var ok bool
	r.buf, ok = appendUnescaped(r.buf, raw, n)
	if !ok {
		return false
	}
	written := len(r.buf) - before
	if n > 0 && written >= n {
		// Truncated: estimate the rest.
		r.total += written + max(0, len(raw)-countByte(raw, '\\')-written)
		return true
	}
	r.total += written
	return true
}

func countByte(b []byte, c byte) int { return bytes.Count(b, []byte{c}) }

// message renders one chat message as prompthash.RenderChat does: role,
// newline, content, newline. Content is a string or an array of parts whose
// text parts are joined by newlines; other parts (images, audio) add nothing.
func (r *renderer) message(role, content []byte) bool {
	if !r.raw(role) {
		return false
	}
	r.lit(nl)
	if !r.content(content) {
		return false
	}
	r.lit(nl)
	return true
}

// messageText is message for a string content the parser already read as
// raw text, so it is not scanned a second time.
func (r *renderer) messageText(role, text []byte) bool {
	if !r.raw(role) {
		return false
	}
	r.lit(nl)
	if !r.raw(text) {
		return false
	}
	r.lit(nl)
	return true
}

var nl = []byte{'\n'}

// sep writes s before every item of a list but the first.
func (r *renderer) sep(first *bool, s []byte) {
	if !*first {
		r.lit(s)
	}
	*first = false
}

func (r *renderer) content(content []byte) bool {
	s := scanner{b: content}
	switch s.peek() {
	case '"':
		raw, ok := s.str()
		return ok && r.raw(raw)
	case 'n', 0:
		return true
	case '[':
		first := true
		return s.array(func() bool {
			if s.peek() == '"' { // a bare string part
				raw, ok := s.str()
				if !ok {
					return false
				}
				r.sep(&first, nl)
				return r.raw(raw)
			}
			var text []byte
			isText := false
			ok := s.object(func(k []byte) bool {
				switch string(k) {
				case "text":
					if s.peek() != '"' {
						return s.skip()
					}
					var ok bool
					text, ok = s.str()
					isText = true
					return ok
				}
				return s.skip()
			})
			if !ok {
				return false
			}
			if isText {
				r.sep(&first, nl)
				return r.raw(text)
			}
			return true
		})
	}
	return false
}

// prompt renders a completions prompt or an embeddings input: a string, a
// list of strings (joined by newlines), or token ids (rendered as their JSON
// text, which is deterministic for the same ids).
func (r *renderer) prompt(v []byte) bool {
	s := scanner{b: v}
	switch s.peek() {
	case '"':
		raw, ok := s.str()
		return ok && r.raw(raw)
	case '[':
		first := true
		return s.array(func() bool {
			switch s.peek() {
			case '"':
				raw, ok := s.str()
				if !ok {
					return false
				}
				r.sep(&first, nl)
				return r.raw(raw)
			case '[':
				sp, ok := s.span()
				if !ok {
					return false
				}
				r.sep(&first, nl)
				r.lit(sp)
				return true
			default:
				num, ok := s.number()
				if !ok {
					return false
				}
				r.sep(&first, []byte{','})
				r.lit(num)
				return true
			}
		})
	}
	return false
}

// responsesInput renders /v1/responses input: a string (one user message) or
// a list of items; message items render like chat messages, tool outputs as
// "tool" messages, anything else is left out.
func (r *renderer) responsesInput(v []byte) bool {
	s := scanner{b: v}
	switch s.peek() {
	case '"':
		raw, ok := s.str()
		return ok && r.messageText([]byte("user"), raw)
	case '[':
		return s.array(func() bool {
			var role, content, output []byte
			ok := s.object(func(k []byte) bool {
				var ok bool
				switch string(k) {
				case "role":
					if s.peek() != '"' {
						return s.skip()
					}
					role, ok = s.str()
					return ok
				case "content":
					content, ok = s.span()
					return ok
				case "output":
					if s.peek() != '"' {
						return s.skip()
					}
					output, ok = s.span()
					return ok
				}
				return s.skip()
			})
			if !ok {
				return false
			}
			switch {
			case content != nil:
				if role == nil {
					role = []byte("user")
				}
				return r.message(role, content)
			case output != nil:
				return r.message([]byte("tool"), output)
			}
			return true
		})
	}
	return false
}
