package enginesim

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/llmrouter/llmrouter/internal/prompthash"
	"github.com/llmrouter/llmrouter/sim/engine"
)

type apiKind int

const (
	apiChat apiKind = iota
	apiCompletion
)

// genRequest is the part of an OpenAI chat or completion request the
// simulator reads; everything else is accepted and ignored, as vLLM ignores
// sampling parameters that do not change timing here.
type genRequest struct {
	Model               string          `json:"model"`
	Messages            []chatMessage   `json:"messages"`
	Prompt              json.RawMessage `json:"prompt"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Stream              bool            `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage         bool `json:"include_usage"`
		ContinuousUsageStats bool `json:"continuous_usage_stats"`
	} `json:"stream_options"`
	CacheSalt string `json:"cache_salt"`
	// LoRAPath is SGLang's lora_path (sglang.go); other engines ignore it.
	LoRAPath json.RawMessage `json:"lora_path"`
	// Disaggregation (pd.go): vLLM's NixlConnector field, SGLang's
	// bootstrap fields.
	KVTransferParams json.RawMessage `json:"kv_transfer_params"`
	BootstrapHost    *string         `json:"bootstrap_host"`
	BootstrapPort    *int            `json:"bootstrap_port"`
	BootstrapRoom    *uint64         `json:"bootstrap_room"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// apiError is an error answered in OpenAI's shape.
type apiError struct {
	status int
	typ    string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: "BadRequestError", msg: fmt.Sprintf(format, args...)}
}

// text extracts a message's content: a string, or an array of parts whose
// text parts are concatenated.
func (m chatMessage) text() (string, error) {
	c := bytes.TrimSpace(m.Content)
	if len(c) == 0 || bytes.Equal(c, []byte("null")) {
		return "", nil
	}
	if c[0] == '"' {
		var s string
		err := json.Unmarshal(c, &s)
		return s, err
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(c, &parts); err != nil {
		return "", errors.New("content: want a string or an array of content parts")
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
		}
	}
	return b.String(), nil
}

// prepared is a validated request ready for the engine.
type prepared struct {
	model        string
	lora         string // the LoRA adapter running it when not model itself (SGLang's base:adapter, lora_path)
	prompt       string
	maxTokens    int
	finishReason string
	stream       bool
	usage        bool
	continuous   bool
	salt         string

	pd           pdSide
	room         uint64 // SGLang
	bootstrap    string // SGLang decode: the prefill's bootstrap host:port
	remoteEngine string // vLLM decode: the prefill's engine id
}

// prepare validates a decoded request and renders its prompt as the gateway
// does.
func (s *Server) prepare(kind apiKind, r *genRequest) (*prepared, *apiError) {
	p := &prepared{model: r.Model, stream: r.Stream, salt: r.CacheSalt}
	if p.model == "" {
		p.model = s.opts.Model
	}
	if s.opts.API == APISGLang {
		lora, e := s.sglangAdapter(p.model, r.LoRAPath)
		if e != nil {
			return nil, e
		}
		p.lora = lora
	} else if p.model != s.opts.Model && !s.servedLoRAs()[p.model] {
		return nil, notFound(p.model)
	}
	if r.StreamOptions != nil {
		if !r.Stream {
			return nil, badRequest("stream_options: only allowed when stream is true")
		}
		p.usage, p.continuous = r.StreamOptions.IncludeUsage, r.StreamOptions.ContinuousUsageStats
	}
	switch kind {
	case apiChat:
		if len(r.Messages) == 0 {
			return nil, badRequest("messages: want at least one message")
		}
		msgs := make([]prompthash.Message, len(r.Messages))
		for i, m := range r.Messages {
			if m.Role == "" {
				return nil, badRequest("messages[%d].role: missing", i)
			}
			t, err := m.text()
			if err != nil {
				return nil, badRequest("messages[%d].%v", i, err)
			}
			msgs[i] = prompthash.Message{Role: m.Role, Content: t}
		}
		p.prompt = prompthash.RenderChat(msgs)
	case apiCompletion:
		prompt, err := completionPrompt(r.Prompt)
		if err != nil {
			return nil, badRequest("prompt: %v", err)
		}
		p.prompt = prompt
	}
	max := r.MaxCompletionTokens
	if max == nil {
		max = r.MaxTokens
	}
	switch {
	case max == nil:
		p.maxTokens, p.finishReason = s.opts.DefaultMaxTokens, "stop"
	case *max < 1:
		return nil, badRequest("max_tokens: %d: want 1 or more", *max)
	default:
		p.maxTokens, p.finishReason = *max, "length"
	}
	return p, nil
}

// completionPrompt accepts a string or an array of one string.
func completionPrompt(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", errors.New("missing")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil || len(list) != 1 {
		return "", errors.New("want a string or an array of one string")
	}
	return list[0], nil
}

// newState turns a prepared request into the engine's view of it.
//
// The hash chain continues past the prompt over the reply as a follow-up
// request will send it (for chat, an assistant message), so the blocks the
// engine fills while decoding become cached, as vLLM caches generated tokens
// and a conversation's next turn hits them.
func (s *Server) newState(p *prepared, kind apiKind) *reqState {
	id := s.nextID.Add(1)
	ec := s.opts.Engine
	tokens := ec.PromptTokens(len(p.prompt))
	reply := replyText(uint64(s.opts.Seed), min(p.maxTokens, maxHashedReply))
	full := p.prompt + reply
	if kind == apiChat {
		full = p.prompt + prompthash.RenderChat([]prompthash.Message{{Role: "assistant", Content: reply}})
	}
	hashes := prompthash.Blocks(nil, prompthash.Seed(p.model, p.salt), full, ec.BlockChars(), 0)
	return &reqState{
		id:           id,
		req:          engine.Request{ID: id, PromptTokens: tokens, MaxTokens: p.maxTokens, BlockHashes: hashes},
		model:        cmp.Or(p.lora, p.model),
		finishReason: p.finishReason,
		notify:       make(chan struct{}, 1),
	}
}

// maxHashedReply bounds the reply tokens hashed ahead for a follow-up turn.
const maxHashedReply = 8192

// replyText is the whole filler reply of n tokens.
func replyText(seed uint64, n int) string {
	var b strings.Builder
	b.Grow(4 * n)
	for i := 0; i < n; i++ {
		b.WriteString(token(seed, i))
	}
	return b.String()
}

// checkLength refuses what vLLM refuses: more tokens than the model's context.
func (s *Server) checkLength(st *reqState) *apiError {
	prompt, max := st.req.PromptTokens, st.req.MaxTokens
	if prompt+max <= s.opts.MaxModelLen {
		return nil
	}
	return badRequest("This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the messages, %d in the completion). Please reduce the length of the messages or completion.",
		s.opts.MaxModelLen, prompt+max, prompt, max)
}

// decode reads a bounded body into v, mapping failures to OpenAI errors.
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any) *apiError {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &apiError{status: http.StatusRequestEntityTooLarge, typ: "RequestEntityTooLarge", msg: fmt.Sprintf("request body over %d bytes", limit)}
		}
		return badRequest("reading the request body: %v", err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return badRequest("malformed JSON body: %v", err)
	}
	return nil
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	TotalTokens      int `json:"total_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

func mkUsage(prompt, completion int) *usage {
	return &usage{PromptTokens: prompt, TotalTokens: prompt + completion, CompletionTokens: completion}
}

type delta struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content"`
}

// streamChoice is one choice of a streamed chunk; Delta is set for chat, Text
// for completions.
type streamChoice struct {
	Index        int             `json:"index"`
	Delta        *delta          `json:"delta,omitempty"`
	Text         *string         `json:"text,omitempty"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
	StopReason   json.RawMessage `json:"stop_reason,omitempty"`
}

type chunk struct {
	ID      string         `json:"id"`
	Object  string         `json:"object"`
	Created int64          `json:"created"`
	Model   string         `json:"model"`
	Choices []streamChoice `json:"choices"`
	Usage   *usage         `json:"usage,omitempty"`
}

var jsonNull = json.RawMessage("null")

type fullChoice struct {
	Index        int             `json:"index"`
	Message      *fullMessage    `json:"message,omitempty"`
	Text         *string         `json:"text,omitempty"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
	StopReason   json.RawMessage `json:"stop_reason"`
}

type fullMessage struct {
	Role      string   `json:"role"`
	Content   string   `json:"content"`
	ToolCalls []string `json:"tool_calls"`
}

type fullResponse struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []fullChoice `json:"choices"`
	Usage   *usage       `json:"usage"`
	// KVTransferParams is a vLLM prefill instance's answer to
	// do_remote_decode.
	KVTransferParams *kvTransferParams `json:"kv_transfer_params,omitempty"`
}

func (s *Server) handleCompletion(kind apiKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req genRequest
		if e := decode(w, r, s.opts.MaxBodyBytes, &req); e != nil {
			writeError(w, e.status, e.typ, e.msg)
			return
		}
		p, e := s.prepare(kind, &req)
		if e == nil {
			e = s.pdRequest(&req, p)
		}
		if e != nil {
			writeError(w, e.status, e.typ, e.msg)
			return
		}
		st := s.newState(p, kind)
		if e := s.checkLength(st); e != nil {
			writeError(w, e.status, e.typ, e.msg)
			return
		}
		ctx := r.Context()
		finished := false
		if p.pd == pdPrefill && s.opts.API == APISGLang {
			s.rooms.get(p.room)
			defer func() { s.rooms.finish(p.room, finished) }()
		}
		if err := s.transferIn(ctx, p, st); err != nil {
			if ctx.Err() == nil {
				writeError(w, http.StatusInternalServerError, "InternalServerError", err.Error())
			}
			return
		}
		if err := s.enqueue(ctx, st); err != nil {
			writeError(w, http.StatusServiceUnavailable, "ServiceUnavailableError", err.Error())
			return
		}
		defer func() {
			if !finished {
				s.cancel(st.id)
			}
		}()
		// Wait for the engine to accept (or refuse) before answering.
		for {
			if !s.await(ctx, st) {
				if ctx.Err() == nil {
					writeError(w, http.StatusServiceUnavailable, "ServiceUnavailableError", errStopped.Error())
				}
				return
			}
			v := st.view()
			if v.err != nil {
				writeError(w, http.StatusBadRequest, "BadRequestError", v.err.Error())
				finished = true
				return
			}
			if v.accepted {
				break
			}
		}
		seed := uint64(s.opts.Seed)
		prefix, object := "chatcmpl-", "chat.completion"
		if kind == apiCompletion {
			prefix, object = "cmpl-", "text_completion"
		}
		h := splitmix(seed ^ st.id)
		respID := fmt.Sprintf("%s%016x%016x", prefix, h, splitmix(h))
		created := time.Now().Unix()
		prompt := st.req.PromptTokens
		if !p.stream {
			var v view
			for {
				if !s.await(ctx, st) {
					if ctx.Err() == nil {
						writeError(w, http.StatusServiceUnavailable, "ServiceUnavailableError", errStopped.Error())
					}
					return
				}
				if v = st.view(); v.done || v.err != nil {
					break
				}
			}
			if v.err != nil {
				writeError(w, http.StatusServiceUnavailable, "ServiceUnavailableError", v.err.Error())
				return
			}
			finished = true
			if p.pd == pdPrefill {
				s.m.pd.WithLabelValues(RolePrefill).Inc()
			}
			out := replyText(seed, v.tokens)
			ch := fullChoice{Logprobs: jsonNull, FinishReason: p.finishReason, StopReason: jsonNull}
			if kind == apiChat {
				ch.Message = &fullMessage{Role: "assistant", Content: out, ToolCalls: []string{}}
			} else {
				ch.Text = &out
			}
			resp := fullResponse{ID: respID, Object: object, Created: created, Model: p.model,
				Choices: []fullChoice{ch}, Usage: mkUsage(prompt, v.tokens)}
			if p.pd == pdPrefill && s.opts.API == APIVLLM {
				resp.KVTransferParams = s.prefillParams(st)
			}
			writeJSON(w, http.StatusOK, resp)
			return
		}

		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		flusher, _ := w.(http.Flusher)
		var buf bytes.Buffer
		emit := func(c chunk) {
			buf.WriteString("data: ")
			b, _ := json.Marshal(c)
			buf.Write(b)
			buf.WriteString("\n\n")
		}
		flush := func() bool {
			if buf.Len() == 0 {
				return true
			}
			_, err := w.Write(buf.Bytes())
			buf.Reset()
			if flusher != nil {
				flusher.Flush()
			}
			return err == nil
		}
		chunkObject := object + ".chunk"
		if kind == apiCompletion {
			chunkObject = object
		}
		mk := func(c streamChoice, completion int) chunk {
			c.Logprobs = jsonNull
			ck := chunk{ID: respID, Object: chunkObject, Created: created, Model: p.model, Choices: []streamChoice{c}}
			if p.continuous {
				ck.Usage = mkUsage(prompt, completion)
			}
			return ck
		}
		sent := 0
		for {
			if !s.await(ctx, st) {
				return
			}
			v := st.view()
			if v.err != nil {
				// Headers are gone; end the stream without [DONE] so the
				// client sees it was cut short.
				return
			}
			if sent == 0 && v.tokens > 0 && kind == apiChat {
				emit(mk(streamChoice{Delta: &delta{Role: "assistant"}}, 0))
			}
			for ; sent < v.tokens; sent++ {
				t := token(seed, sent)
				if kind == apiChat {
					emit(mk(streamChoice{Delta: &delta{Content: t}}, sent+1))
				} else {
					emit(mk(streamChoice{Text: &t}, sent+1))
				}
			}
			if v.done {
				finished = true
				if p.pd == pdPrefill {
					s.m.pd.WithLabelValues(RolePrefill).Inc()
				}
				fr := p.finishReason
				last := streamChoice{FinishReason: &fr, StopReason: jsonNull}
				if kind == apiChat {
					last.Delta = &delta{}
				} else {
					empty := ""
					last.Text = &empty
				}
				emit(mk(last, sent))
				if p.usage {
					emit(chunk{ID: respID, Object: chunkObject, Created: created, Model: p.model, Choices: []streamChoice{}, Usage: mkUsage(prompt, sent)})
				}
				buf.WriteString("data: [DONE]\n\n")
				flush()
				return
			}
			if !flush() {
				return
			}
		}
	}
}

type modelCard struct {
	ID          string  `json:"id"`
	Object      string  `json:"object"`
	Created     int64   `json:"created"`
	OwnedBy     string  `json:"owned_by"`
	Root        string  `json:"root"`
	Parent      *string `json:"parent"`
	MaxModelLen int     `json:"max_model_len,omitempty"`
}

func (s *Server) handleModels(w http.ResponseWriter, _ *http.Request) {
	created := s.start.Unix()
	maxLen := s.opts.MaxModelLen
	data := []modelCard{{ID: s.opts.Model, Object: "model", Created: created, OwnedBy: s.opts.API, Root: s.opts.Model, MaxModelLen: maxLen}}
	base := s.opts.Model
	for _, l := range sortedKeys(s.servedLoRAs()) {
		data = append(data, modelCard{ID: l, Object: "model", Created: created, OwnedBy: s.opts.API, Root: l, Parent: &base})
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    int    `json:"code"`
}

// writeError answers in OpenAI's error shape, with vLLM's numeric code.
func writeError(w http.ResponseWriter, status int, typ, msg string) {
	writeJSON(w, status, errorBody{Error: errorDetail{Message: msg, Type: typ, Code: status}})
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
