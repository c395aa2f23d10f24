package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/llmrouter/llmrouter/sim/workload"
)

// Options configure a live run.
type Options struct {
	// Target is the data plane's base URL (http://host:8080); requests go to
	// its /v1/chat/completions.
	Target string
	// Plan is the workload and its pacing. Without a DefaultModel, the
	// target's first model (GET /v1/models) is used.
	Plan workload.Plan
	// APIKey, when set, is sent as a bearer token.
	APIKey string
	// Client defaults to a client without overall timeout (RequestTimeout
	// bounds each request).
	Client *http.Client
	// RequestTimeout bounds one request, first byte to last (default 10 min).
	RequestTimeout time.Duration
	// MaxInFlight bounds requests outstanding at once (default 4096); an
	// arrival beyond it fails as "load generator saturated" rather than
	// piling up goroutines.
	MaxInFlight int
	// Progress, when set, is called now and then with the fraction done.
	Progress func(frac float64)
}

// maxLine bounds one SSE line.
const maxLine = 16 << 20

// Run sends the plan to the target and summarises it; label names the run
// in the summary (the policy the target runs, as far as the caller knows).
func Run(ctx context.Context, o Options, label string) (workload.Summary, error) {
	u, err := url.Parse(o.Target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return workload.Summary{}, fmt.Errorf("target %q: want a base URL such as http://127.0.0.1:8080", o.Target)
	}
	base := strings.TrimRight(o.Target, "/")
	if o.Client == nil {
		o.Client = &http.Client{Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 90 * time.Second,
		}}
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 10 * time.Minute
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 4096
	}
	if o.Plan.DefaultModel == "" {
		m, err := firstModel(ctx, o.Client, base, o.APIKey)
		if err != nil {
			return workload.Summary{}, err
		}
		o.Plan.DefaultModel = m
	}
	driver, err := workload.NewDriver(o.Plan)
	if err != nil {
		return workload.Summary{}, err
	}
	g := &gen{o: o, url: base + "/v1/chat/completions", done: make(chan result, o.MaxInFlight)}
	return g.run(ctx, driver, label)
}

type gen struct {
	o    Options
	url  string
	done chan result
	wg   sync.WaitGroup
}

type result struct {
	req   *workload.Request
	out   workload.Outcome
	reply string
}

func (g *gen) run(ctx context.Context, d *workload.Driver, label string) (workload.Summary, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		g.wg.Wait()
	}()
	start := time.Now()
	since := func() time.Duration { return time.Since(start) }
	var rec workload.Recorder
	inflight := 0
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	handle := func(r result) {
		inflight--
		rec.Add(r.out)
		d.Done(r.out.End, r.req, r.reply, r.out.OK)
	}
	for !d.Finished() {
		var wake <-chan time.Time
		if at, ok := d.Next(); ok {
			if wait := at - since(); wait <= 0 {
				r := d.Pop()
				if inflight >= g.o.MaxInFlight {
					rec.Add(workload.Outcome{Err: fmt.Sprintf("load generator saturated: %d requests in flight", inflight), End: since()})
					d.Done(since(), r, "", false)
					continue
				}
				inflight++
				g.wg.Add(1)
				go g.send(ctx, r, start)
				continue
			} else {
				timer.Reset(wait)
				wake = timer.C
			}
		}
		select {
		case r := <-g.done:
			handle(r)
		case <-wake:
		case <-tick.C:
			g.progress(d, since())
		case <-ctx.Done():
			return workload.Summary{}, ctx.Err()
		}
		if wake != nil && !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
	g.progress(d, since())
	return rec.Summary(label), nil
}

func (g *gen) progress(d *workload.Driver, now time.Duration) {
	if g.o.Progress == nil {
		return
	}
	switch p := g.o.Plan; {
	case p.Duration > 0:
		g.o.Progress(min(float64(now)/float64(p.Duration), 1))
	case p.MaxRequests > 0:
		g.o.Progress(float64(d.Issued()) / float64(p.MaxRequests))
	}
}

type chatRequest struct {
	Model         string             `json:"model"`
	Messages      []workload.Message `json:"messages"`
	MaxTokens     int                `json:"max_tokens"`
	Stream        bool               `json:"stream"`
	StreamOptions struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

type chunk struct {
	Choices []struct {
		Delta *struct {
			Content string `json:"content"`
		} `json:"delta"`
		Text string `json:"text"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens        int `json:"prompt_tokens"`
		CompletionTokens    int `json:"completion_tokens"`
		PromptTokensDetails *struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
	} `json:"usage"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// send runs one streaming request and reports its result.
func (g *gen) send(ctx context.Context, r *workload.Request, start time.Time) {
	defer g.wg.Done()
	res := result{req: r}
	res.out, res.reply = g.do(ctx, r)
	res.out.End = time.Since(start)
	g.done <- res
}

func (g *gen) do(ctx context.Context, r *workload.Request) (workload.Outcome, string) {
	var out workload.Outcome
	body := chatRequest{Model: r.Model, Messages: r.Messages, MaxTokens: r.MaxTokens, Stream: true}
	body.StreamOptions.IncludeUsage = true
	buf, err := json.Marshal(body)
	if err != nil {
		out.Err = err.Error()
		return out, ""
	}
	ctx, cancel := context.WithTimeout(ctx, g.o.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.url, bytes.NewReader(buf))
	if err != nil {
		out.Err = err.Error()
		return out, ""
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if g.o.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+g.o.APIKey)
	}
	sent := time.Now()
	resp, err := g.o.Client.Do(req)
	if err != nil {
		out.Err = shortErr(err)
		return out, ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		out.Err = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, errorMessage(msg))
		// The router shedding load answers 429 (or 503): a rejection, not
		// a failure.
		out.Rejected = resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable
		out.Latency = time.Since(sent)
		return out, ""
	}
	var (
		reply        strings.Builder
		first, last  time.Time
		chunks       int
		usageTokens  = -1
		promptTokens = -1
		cached       int
		cachedKnown  bool
		sawDone      bool
	)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		line := sc.Bytes()
		data, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			continue // comments, event names, blank separators
		}
		data = bytes.TrimSpace(data)
		if string(data) == "[DONE]" {
			sawDone = true
			break
		}
		var c chunk
		if err := json.Unmarshal(data, &c); err != nil {
			out.Err = "malformed SSE chunk: " + err.Error()
			return out, ""
		}
		if c.Error != nil {
			out.Err = "stream error: " + c.Error.Message
			return out, ""
		}
		now := time.Now()
		for _, ch := range c.Choices {
			text := ch.Text
			if ch.Delta != nil {
				text = ch.Delta.Content
			}
			if text == "" {
				continue
			}
			if chunks == 0 {
				first = now
			}
			last = now
			chunks++
			reply.WriteString(text)
		}
		if c.Usage != nil {
			usageTokens, promptTokens = c.Usage.CompletionTokens, c.Usage.PromptTokens
			if d := c.Usage.PromptTokensDetails; d != nil {
				cached, cachedKnown = d.CachedTokens, true
			}
		}
	}
	if err := sc.Err(); err != nil {
		out.Err = "reading the stream: " + shortErr(err)
		return out, ""
	}
	if !sawDone {
		out.Err = "the stream ended without data: [DONE]"
		return out, ""
	}
	if chunks == 0 {
		out.Err = "no content in the reply"
		return out, ""
	}
	out.OK = true
	out.TTFT = first.Sub(sent)
	out.Latency = last.Sub(sent)
	out.OutputTokens = chunks
	if usageTokens > 0 {
		out.OutputTokens = usageTokens
	}
	if promptTokens > 0 {
		out.InputTokens = promptTokens
	} else {
		out.InputTokens = int((len(workload.Render(r.Messages)) + workload.CharsPerToken/2) / workload.CharsPerToken)
	}
	out.CachedTokens, out.CachedKnown = cached, cachedKnown
	return out, reply.String()
}

// errorMessage extracts OpenAI's error.message from a body, else the body.
func errorMessage(body []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func shortErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// firstModel asks the target which models it serves.
func firstModel(ctx context.Context, c *http.Client, base, key string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/models", nil)
	if err != nil {
		return "", err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("asking %s/v1/models for a model (or pass --model): %s", base, shortErr(err))
	}
	defer resp.Body.Close()
	var l struct {
		Data []struct {
			ID     string `json:"id"`
			Parent string `json:"parent"` // a LoRA adapter's base model (vLLM, the gateway's fleet list)
		} `json:"data"`
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s/v1/models answered HTTP %d: pass --model", base, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&l); err != nil || len(l.Data) == 0 || l.Data[0].ID == "" {
		return "", fmt.Errorf("%s/v1/models lists no model: pass --model", base)
	}
	// A base model, not an adapter: the gateway lists the fleet sorted by
	// name, where an adapter may come first.
	for _, m := range l.Data {
		if m.Parent == "" && m.ID != "" {
			return m.ID, nil
		}
	}
	return l.Data[0].ID, nil
}
