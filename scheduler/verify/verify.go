package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/llmrouter/llmrouter/agent"
)

// Defaults bounding one check.
const (
	// DefaultTimeout bounds one verification request.
	DefaultTimeout = 2 * time.Second
	// DefaultProbeTimeout bounds one probe of a silent instance: short, so a
	// host that vanished is confirmed down within the 2 s the fleet allows.
	DefaultProbeTimeout = time.Second
	// MaxModelsBytes bounds a /v1/models answer.
	MaxModelsBytes = 1 << 20
	// MaxMetricsBytes bounds a metrics answer (engines with many LoRA
	// adapters or histograms run to a few MiB).
	MaxMetricsBytes = 16 << 20
)

// Claim is what an agent said about the engine at Address.
type Claim struct {
	Address string   // ip:port
	Engine  string   // engine kind, as agent.EngineNames lists them
	Models  []string // served models, as registered
}

// Options configure a Checker; zero values take the defaults.
type Options struct {
	Timeout      time.Duration
	ProbeTimeout time.Duration
	// Transport, when set, replaces the default (tests).
	Transport http.RoundTripper
}

// Checker verifies and probes engine addresses. Safe for concurrent use.
type Checker struct {
	client       *http.Client
	timeout      time.Duration
	probeTimeout time.Duration
}

// New returns a Checker.
func New(o Options) *Checker {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = DefaultProbeTimeout
	}
	tr := o.Transport
	if tr == nil {
		tr = &http.Transport{
			Proxy:                 nil, // engines are reached directly, as Envoy reaches them
			DialContext:           (&net.Dialer{Timeout: o.Timeout}).DialContext,
			MaxIdleConnsPerHost:   1,
			IdleConnTimeout:       30 * time.Second,
			ResponseHeaderTimeout: o.Timeout,
			DisableCompression:    true,
		}
	}
	return &Checker{
		client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("redirects are not followed: the engine must answer on the advertised address")
		}},
		timeout: o.Timeout, probeTimeout: o.ProbeTimeout,
	}
}

// Verify checks that c.Address answers as the engine c describes: its
// /v1/models lists every model of c, and its metrics (at the engine kind's
// metrics path) are recognised as that kind. The error names the address
// and what did not match.
func (k *Checker) Verify(ctx context.Context, c Claim) error {
	ad, err := agent.AdapterFor(c.Engine)
	if err != nil {
		return fmt.Errorf("%s: agent reported engine %q: %w", c.Address, c.Engine, err)
	}
	served, ownedBy, err := k.models(ctx, c.Address, k.timeout)
	if err != nil {
		return fmt.Errorf("%s: GET /v1/models: %w", c.Address, err)
	}
	var missing []string
	for _, m := range c.Models {
		if !slices.Contains(served, m) {
			missing = append(missing, m)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s: /v1/models does not list %q that the agent registered (it lists %s)", c.Address, missing, clip(served))
	}
	body, ctype, err := k.get(ctx, c.Address, ad.MetricsPath, MaxMetricsBytes, k.timeout)
	if err != nil && ad.MetricsPath != "/metrics" {
		body, ctype, err = k.get(ctx, c.Address, "/metrics", MaxMetricsBytes, k.timeout)
	}
	if err != nil {
		return fmt.Errorf("%s: GET %s: %w", c.Address, ad.MetricsPath, err)
	}
	m, err := agent.Parse(body, ctype)
	if err != nil {
		return fmt.Errorf("%s: metrics are not Prometheus text: %w", c.Address, err)
	}
	kind, ok := agent.DetectKind(m, ownedBy)
	switch {
	case !ok:
		return fmt.Errorf("%s: answers as no known engine (no engine metrics, /v1/models owned_by %s); the agent reported %s", c.Address, clip(ownedBy), c.Engine)
	case kind != c.Engine:
		return fmt.Errorf("%s: answers as engine %s; the agent reported %s", c.Address, kind, c.Engine)
	}
	return nil
}

// Probe asks a silent instance's address for /v1/models: nil when the
// engine answers 2xx within the probe timeout, else why not.
func (k *Checker) Probe(ctx context.Context, address string) error {
	_, _, err := k.get(ctx, address, "/v1/models", MaxModelsBytes, k.probeTimeout)
	return err
}

// ProbeConnect is the probe for fleets whose engines do not answer
// /v1/models on the advertised address (llm_scheduler.verify_engines
// false): nil when the address accepts a TCP connection within the probe
// timeout.
func (k *Checker) ProbeConnect(ctx context.Context, address string) error {
	ctx, cancel := context.WithTimeout(ctx, k.probeTimeout)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", address)
	if err != nil {
		return agent.TransportError(err, k.probeTimeout)
	}
	return c.Close()
}

// modelList is /v1/models as OpenAI-compatible engines answer it.
type modelList struct {
	Data []struct {
		ID      string `json:"id"`
		OwnedBy string `json:"owned_by"`
	} `json:"data"`
}

func (k *Checker) models(ctx context.Context, address string, timeout time.Duration) (ids, ownedBy []string, err error) {
	body, _, err := k.get(ctx, address, "/v1/models", MaxModelsBytes, timeout)
	if err != nil {
		return nil, nil, err
	}
	var ml modelList
	if err := json.Unmarshal(body, &ml); err != nil {
		return nil, nil, fmt.Errorf("not an OpenAI model list: %w", err)
	}
	for _, d := range ml.Data {
		if d.ID != "" {
			ids = append(ids, d.ID)
		}
		if d.OwnedBy != "" {
			ownedBy = append(ownedBy, d.OwnedBy)
		}
	}
	return ids, ownedBy, nil
}

// get fetches http://address+path and returns a 2xx body of at most limit
// bytes.
func (k *Checker) get(ctx context.Context, address, path string, limit int64, timeout time.Duration) ([]byte, string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+address+path, nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, "", agent.TransportError(err, timeout)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	switch {
	case err != nil:
		return nil, "", agent.TransportError(err, timeout)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return nil, "", fmt.Errorf("status %d", resp.StatusCode)
	case int64(len(body)) > limit:
		return nil, "", fmt.Errorf("answer larger than %d bytes", limit)
	}
	return body, resp.Header.Get("Content-Type"), nil
}

// clip renders a list for an error message, at most 5 entries of 64 bytes:
// what a listener sends back is not ours to log in full.
func clip(xs []string) string {
	out := make([]string, 0, 6)
	for i, x := range xs {
		if i == 5 {
			out = append(out, fmt.Sprintf("... %d more", len(xs)-5))
			break
		}
		if len(x) > 64 {
			x = x[:64] + "..."
		}
		out = append(out, fmt.Sprintf("%q", x))
	}
	return "[" + strings.Join(out, ", ") + "]"
}
