//go:build faults

package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// chatReq is one chat completion through the data plane.
type chatReq struct {
	maxTokens int
	prompt    string
	user      string // the body's "user" (a session key); empty: none
	// raw, when set, is sent as the body as is.
	raw []byte
	// timeout bounds the whole exchange (default 30 s).
	timeout time.Duration
}

// reply is what the client saw.
type reply struct {
	status int
	header http.Header
	body   []byte // a non-200 body (bounded)
	events int    // SSE data lines read
	// first is when the first content token arrived; text is its content
	// (the engine's seed decides it: it tells which engine served).
	first      time.Time
	text       string
	done       bool // data: [DONE] read last
	start, end time.Time
	err        error
}

// failure says why r is not a complete 200 answer (nil when it is).
func (r reply) failure() error {
	switch {
	case r.err != nil:
		return r.err
	case r.status != http.StatusOK:
		return fmt.Errorf("status %d: %s", r.status, bytes.TrimSpace(r.body))
	case !r.done:
		return fmt.Errorf("stream broken after %d events", r.events)
	}
	return nil
}

// shed reports a deliberate refusal: 429 or 503 with an answer read whole.
func (r reply) shed() bool {
	return r.err == nil && (r.status == http.StatusTooManyRequests || r.status == http.StatusServiceUnavailable)
}

// chat sends one streaming chat completion to the data plane's listener and
// reads the answer to its end.
func (s *system) chat(ctx context.Context, q chatReq) reply {
	return s.chatTo(ctx, s.Listen, q)
}

// chatTo is chat against addr (an engine directly, to learn its reply text).
func (s *system) chatTo(ctx context.Context, addr string, q chatReq) reply {
	if q.maxTokens == 0 {
		q.maxTokens = 6
	}
	if q.prompt == "" {
		q.prompt = "Tell me about routing requests to inference engines."
	}
	if q.timeout == 0 {
		q.timeout = 30 * time.Second
	}
	body := q.raw
	if body == nil {
		m := map[string]any{
			"model":      model,
			"messages":   []map[string]string{{"role": "user", "content": q.prompt}},
			"max_tokens": q.maxTokens,
			"stream":     true,
		}
		if q.user != "" {
			m["user"] = q.user
		}
		body, _ = json.Marshal(m)
	}
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	r := reply{start: time.Now()}
	defer func() { r.end = time.Now() }()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.Client.Do(req)
	if err != nil {
		r.err = err
		r.end = time.Now()
		return r
	}
	defer resp.Body.Close()
	r.status, r.header = resp.StatusCode, resp.Header
	if resp.StatusCode != http.StatusOK {
		r.body, r.err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		r.end = time.Now()
		return r
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		// A non-streaming answer (a raw body that did not ask to stream).
		r.body, r.err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		r.done = r.err == nil && json.Valid(r.body)
		r.end = time.Now()
		return r
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if data, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "data: "); ok {
			r.events++
			switch {
			case data == "[DONE]":
				r.done = true
			case r.done:
				r.done = false // something after [DONE]
			case r.first.IsZero():
				var c struct {
					Choices []struct {
						Delta struct {
							Content string `json:"content"`
						} `json:"delta"`
					} `json:"choices"`
				}
				if json.Unmarshal([]byte(data), &c) == nil && len(c.Choices) > 0 && c.Choices[0].Delta.Content != "" {
					r.first, r.text = time.Now(), c.Choices[0].Delta.Content
				}
			}
		}
		if err != nil {
			if err != io.EOF {
				r.err = fmt.Errorf("stream broken after %d events: %w", r.events, err)
			}
			break
		}
	}
	r.end = time.Now()
	return r
}

// ---------------------------------------------------------------- open loop

// load is open-loop traffic: requests arrive at a fixed rate for a fixed
// time whatever the system does, each on its own goroutine with its own
// deadline; it ends by itself.
type load struct {
	began time.Time
	last  time.Time // the last arrival
	n     int       // requests sent in all
	wg    sync.WaitGroup
	mu    sync.Mutex
	out   []reply
	done  chan struct{}
}

// openLoop starts rate requests per second for d; q is each request's shape
// (gen, when set, makes request i).
func (s *system) openLoop(rate float64, d time.Duration, q chatReq, gen func(i int) chatReq) *load {
	n := int(rate * d.Seconds())
	gap := time.Duration(float64(time.Second) / rate)
	l := &load{began: time.Now(), done: make(chan struct{}), n: n}
	l.last = l.began.Add(time.Duration(n-1) * gap)
	go func() {
		defer close(l.done)
		for i := range n {
			time.Sleep(time.Until(l.began.Add(time.Duration(i) * gap)))
			qi := q
			if gen != nil {
				qi = gen(i)
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				r := s.chat(context.Background(), qi)
				l.mu.Lock()
				l.out = append(l.out, r)
				l.mu.Unlock()
			}()
		}
		l.wg.Wait()
	}()
	return l
}

// wait returns every reply once the last one has ended, sorted by start.
// When replies are still outstanding stuck after the last arrival, stuck
// is called once (to log where they are).
func (l *load) wait() []reply {
	return l.waitOr(0, nil)
}

func (l *load) waitOr(after time.Duration, stuck func(outstanding int)) []reply {
	if stuck != nil {
		select {
		case <-l.done:
		case <-time.After(time.Until(l.last.Add(after))):
			l.mu.Lock()
			n := l.n - len(l.out)
			l.mu.Unlock()
			stuck(n)
		}
	}
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]reply(nil), l.out...)
	sort.Slice(out, func(i, j int) bool { return out[i].start.Before(out[j].start) })
	return out
}

// outcome counts replies.
type outcome struct{ sent, ok, shed, failed int }

// judge counts rs into the scenario's row and fails the test for every
// failed reply (shed ones too unless shedOK), listing the first few with
// their start relative to t0.
func judge(t *testing.T, row *row, rs []reply, t0 time.Time, shedOK bool) outcome {
	t.Helper()
	var o outcome
	var bad []string
	for _, r := range rs {
		o.sent++
		switch {
		case r.failure() == nil:
			o.ok++
		case shedOK && r.shed():
			o.shed++
		default:
			o.failed++
			if len(bad) < 10 {
				bad = append(bad, fmt.Sprintf("at %+.3fs: %v", r.start.Sub(t0).Seconds(), r.failure()))
			}
		}
	}
	row.add(o)
	t.Logf("%d sent, %d succeeded, %d shed, %d failed", o.sent, o.ok, o.shed, o.failed)
	if o.failed > 0 {
		t.Errorf("%d of %d requests failed; the first: %s", o.failed, o.sent, strings.Join(bad, "; "))
	}
	return o
}
