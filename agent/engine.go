package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/llmrouter/llmrouter/internal/clip"
	"github.com/llmrouter/llmrouter/internal/reglimits"
)

// Bounds on what the agent reads from its engine: a /metrics page of a large
// deployment is a few hundred KiB; JSON endpoints are small.
const (
	maxMetricsBytes = 32 << 20
	maxJSONBytes    = 1 << 20
)

// errNotFound marks a 404, so callers can try the next candidate path.
var errNotFound = errors.New("404 not found")

// engineClient speaks HTTP to the engine. Every call is bounded by timeout.
type engineClient struct {
	base    *url.URL
	http    *http.Client
	timeout time.Duration
}

func newEngineClient(rawURL string, timeout time.Duration) (*engineClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("agent.engine_url %q: want an http(s) URL such as http://127.0.0.1:8000", rawURL)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 4
	return &engineClient{base: u, http: &http.Client{Transport: tr}, timeout: timeout}, nil
}

// resolve joins a path to the engine URL; an absolute URL (Triton's metrics
// live on another port) is used as is.
func (c *engineClient) resolve(p string) string {
	if strings.HasPrefix(p, "http://") || strings.HasPrefix(p, "https://") {
		return p
	}
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + "/" + strings.TrimLeft(p, "/")
	return u.String()
}

// get fetches url and returns the body (at most limit bytes) of a 2xx answer.
func (c *engineClient) get(ctx context.Context, p string, limit int64) ([]byte, http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.resolve(p), nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, TransportError(err, c.timeout)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, nil, TransportError(err, c.timeout)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, nil, errNotFound
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return nil, nil, fmt.Errorf("status %d", resp.StatusCode)
	case int64(len(body)) > limit:
		return nil, nil, fmt.Errorf("response larger than %d bytes", limit)
	}
	return body, resp.Header, nil
}

// TransportError shortens the transport error of a request to an engine
// (bounded by timeout) to what an operator needs to read: a report's
// unhealthy_reason, the scheduler's verification and probe verdicts.
func TransportError(err error, timeout time.Duration) error {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return errors.New("connection refused")
	case errors.Is(err, syscall.ECONNRESET):
		return errors.New("connection reset")
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("no answer within %s", timeout)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("connection closed")
	}
	return err
}

// getJSON fetches and decodes a JSON document.
func (c *engineClient) getJSON(ctx context.Context, p string, v any) error {
	body, _, err := c.get(ctx, p, maxJSONBytes)
	if err != nil {
		return err
	}
	return json.Unmarshal(body, v)
}

// modelList is /v1/models. vLLM lists LoRA adapters there too, with parent
// naming their base model.
type modelList struct {
	Data []struct {
		ID      string  `json:"id"`
		OwnedBy string  `json:"owned_by"`
		Parent  *string `json:"parent"`
	} `json:"data"`
}

// models reads /v1/models: base models, LoRA adapters and owned_by values.
func (c *engineClient) models(ctx context.Context) (models, lora, ownedBy []string, err error) {
	var ml modelList
	if err := c.getJSON(ctx, "/v1/models", &ml); err != nil {
		return nil, nil, nil, err
	}
	for _, d := range ml.Data {
		if d.ID == "" {
			continue
		}
		if d.Parent != nil && *d.Parent != "" && *d.Parent != d.ID {
			lora = append(lora, d.ID)
		} else {
			models = append(models, d.ID)
		}
		if d.OwnedBy != "" {
			ownedBy = append(ownedBy, strings.ToLower(d.OwnedBy))
		}
	}
	return models, lora, ownedBy, nil
}

// version asks the adapter's version endpoint; "" when it does not say.
func (c *engineClient) version(ctx context.Context, a *Adapter) string {
	if a.VersionPath == "" {
		return ""
	}
	var doc map[string]any
	if err := c.getJSON(ctx, a.VersionPath, &doc); err != nil {
		return ""
	}
	switch v := doc[a.VersionField].(type) {
	case string:
		// Cut to what a registration may carry, ellipsis included.
		return clip.Prefix(v, reglimits.MaxLabelBytes-len(clip.Ellipsis))
	case float64:
		return fmt.Sprint(v)
	}
	return ""
}

// probeEndpoints is the last detection resort: endpoints only one engine
// serves, each with a key its JSON must hold.
var probeEndpoints = []struct{ engine, path, key string }{
	{"tgi", "/info", "model_id"},
	{"llamacpp", "/props", "default_generation_settings"},
	{"sglang", "/get_server_info", "tp_size"},
	{"trtllm", "/v2", "extensions"}, // Triton's server metadata
}

// probe names the engine from its engine-specific endpoints.
func (c *engineClient) probe(ctx context.Context) (string, bool) {
	for _, p := range probeEndpoints {
		var doc map[string]any
		if err := c.getJSON(ctx, p.path, &doc); err != nil {
			continue
		}
		if _, ok := doc[p.key]; ok {
			return p.engine, true
		}
	}
	return "", false
}
