package stack

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// ChatReq is one OpenAI chat completion.
type ChatReq struct {
	// MaxTokens is max_tokens (the suites set their own default).
	MaxTokens int
	// Prompt is the user message (default: a sentence about routing).
	Prompt string
	// NoStream asks for one JSON answer instead of a stream.
	NoStream bool
	// Usage asks a stream for its token usage (stream_options.include_usage).
	Usage bool
	// User is the body's "user" (a session key); empty: none.
	User string
	// Raw, when set, is sent as the body as is.
	Raw []byte
	// Header is added to the request's headers.
	Header http.Header
	// Timeout, when set, bounds the whole exchange.
	Timeout time.Duration
}

// Usage is OpenAI's token usage.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

// SSEEvent is one `data:` line and when the client read it.
type SSEEvent struct {
	At   time.Time
	Data string
}

// Reply is what the client saw.
type Reply struct {
	Status int
	Header http.Header
	Body   []byte // a non-200 or non-streaming body (bounded)
	Events []SSEEvent
	// First is when the first content token arrived; Text is its content
	// (an enginesim's seed decides it: it tells which engine served).
	First time.Time
	Text  string
	// Done: the stream ended with data: [DONE], or the answer was JSON.
	Done       bool
	Usage      *Usage
	Start, End time.Time
	Err        error
}

// Failure says why r is not a complete 200 answer (nil when it is).
func (r Reply) Failure() error {
	switch {
	case r.Err != nil:
		return r.Err
	case r.Status != http.StatusOK:
		return fmt.Errorf("status %d: %s", r.Status, bytes.TrimSpace(r.Body))
	case !r.Done:
		return fmt.Errorf("stream broken after %d events", len(r.Events))
	}
	return nil
}

// Shed reports a deliberate refusal: 429 or 503 with an answer read whole.
func (r Reply) Shed() bool {
	return r.Err == nil && (r.Status == http.StatusTooManyRequests || r.Status == http.StatusServiceUnavailable)
}

// maxBody bounds a body the client keeps.
const maxBody = 1 << 20

// Chat sends one chat completion to the data plane's listener and reads the
// answer to its end, timing every SSE event.
func (s *Stack) Chat(ctx context.Context, q ChatReq) Reply {
	return s.ChatTo(ctx, s.Listen, q)
}

// ChatTo is Chat against addr (an engine directly, say).
func (s *Stack) ChatTo(ctx context.Context, addr string, q ChatReq) Reply {
	if q.Prompt == "" {
		q.Prompt = "Tell me about routing requests to inference engines."
	}
	body := q.Raw
	if body == nil {
		m := map[string]any{
			"model":      s.Opts.Model,
			"messages":   []map[string]string{{"role": "user", "content": q.Prompt}},
			"max_tokens": q.MaxTokens,
		}
		if !q.NoStream {
			m["stream"] = true
			if q.Usage {
				m["stream_options"] = map[string]any{"include_usage": true}
			}
		}
		if q.User != "" {
			m["user"] = q.User
		}
		body, _ = json.Marshal(m)
	}
	if q.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, q.Timeout)
		defer cancel()
	}
	r := Reply{Start: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		r.Err, r.End = err, time.Now()
		return r
	}
	req.Header.Set("Content-Type", "application/json")
	for k, vs := range q.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		r.Err, r.End = err, time.Now()
		return r
	}
	defer resp.Body.Close()
	r.Status, r.Header = resp.StatusCode, resp.Header
	switch {
	case resp.StatusCode != http.StatusOK:
		r.Body, r.Err = io.ReadAll(io.LimitReader(resp.Body, maxBody))
	case !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream"):
		// A JSON answer (asked for, or a raw body that did not ask to stream).
		if r.Body, r.Err = io.ReadAll(io.LimitReader(resp.Body, maxBody)); r.Err == nil {
			var full struct{ Usage *Usage }
			if err := json.Unmarshal(r.Body, &full); err != nil {
				r.Err = fmt.Errorf("answer is not JSON: %v: %s", err, r.Body)
			} else {
				r.Usage, r.Done = full.Usage, true
			}
		}
	default:
		r.readStream(resp.Body)
	}
	r.End = time.Now()
	return r
}

// readStream reads SSE data lines to the end of the stream.
func (r *Reply) readStream(body io.Reader) {
	br := bufio.NewReader(body)
	for {
		line, err := br.ReadString('\n')
		if data, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "data: "); ok {
			r.Events = append(r.Events, SSEEvent{At: time.Now(), Data: data})
			switch {
			case data == "[DONE]":
				r.Done = true
			case r.Done:
				r.Done = false // something after [DONE]
			case r.First.IsZero() || strings.Contains(data, `"usage"`):
				var c struct {
					Choices []struct {
						Delta struct {
							Content string `json:"content"`
						} `json:"delta"`
					} `json:"choices"`
					Usage *Usage `json:"usage"`
				}
				if json.Unmarshal([]byte(data), &c) != nil {
					break
				}
				if r.First.IsZero() && len(c.Choices) > 0 && c.Choices[0].Delta.Content != "" {
					r.First, r.Text = time.Now(), c.Choices[0].Delta.Content
				}
				if c.Usage != nil {
					r.Usage = c.Usage
				}
			}
		}
		if err != nil {
			if err != io.EOF {
				r.Err = fmt.Errorf("stream broken after %d events: %w", len(r.Events), err)
			}
			return
		}
	}
}
