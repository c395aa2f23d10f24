package pdproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Headers the gateway sets from a pd-split pick.
const (
	HeaderPrefiller          = "x-prefiller-host-port"
	HeaderPrefillerBootstrap = "x-prefiller-bootstrap-port"
)

// Engine protocols the proxy speaks.
const (
	EngineVLLM   = "vllm"
	EngineSGLang = "sglang"
)

// Defaults for Options left zero.
const (
	DefaultPrefillTimeout = 10 * time.Second
	DefaultMaxBodyBytes   = 8 << 20
)

// Options configure a Proxy.
type Options struct {
	// EngineURL is the local engine's base URL.
	EngineURL string
	// Engine returns the local engine's kind as the agent detected it
	// ("vllm", "sglang", or "" while unknown); only vllm and sglang are
	// disaggregated, anything else is served locally.
	Engine func() string
	// PrefillTimeout bounds the prefill request (vLLM) or the wait for the
	// decode's answer while the prefill runs (SGLang).
	PrefillTimeout time.Duration
	// APIKey, when set, is presented to prefill instances as
	// "Authorization: Bearer"; else the client's Authorization goes along.
	APIKey string
	// MaxBodyBytes bounds a body read for disaggregation; a larger one is
	// served locally.
	MaxBodyBytes int64
	Log          *zap.Logger
	Registerer   prometheus.Registerer
}

// Proxy is an http.Handler; SetFleet tells it the prefill instances.
type Proxy struct {
	opts   Options
	engine *url.URL
	rp     *httputil.ReverseProxy
	client *http.Client
	log    *zap.Logger
	m      *metrics
	fleet  atomic.Pointer[map[string]int32]
}

// New builds a proxy in front of opts.EngineURL.
func New(opts Options) (*Proxy, error) {
	u, err := url.Parse(opts.EngineURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("agent.engine_url %q: want an http(s) URL such as http://127.0.0.1:8000", opts.EngineURL)
	}
	if opts.PrefillTimeout <= 0 {
		opts.PrefillTimeout = DefaultPrefillTimeout
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Log == nil {
		opts.Log = zap.NewNop()
	}
	if opts.Engine == nil {
		opts.Engine = func() string { return "" }
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	p := &Proxy{opts: opts, engine: u, log: opts.Log, client: &http.Client{Transport: tr}, m: newMetrics(opts.Registerer)}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host
		},
		Transport:     tr,
		FlushInterval: -1, // SSE: every chunk as it comes
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() == nil {
				p.log.Warn("pd proxy: engine unreachable", zap.String("path", r.URL.Path), zap.Error(err))
			}
			http.Error(w, "engine unreachable", http.StatusBadGateway)
		},
	}
	empty := map[string]int32{}
	p.fleet.Store(&empty)
	return p, nil
}

// SetFleet replaces the prefill instances: published address to SGLang
// bootstrap port (0 when none).
func (p *Proxy) SetFleet(peers map[string]int32) {
	cp := make(map[string]int32, len(peers))
	for k, v := range peers {
		cp[k] = v
	}
	p.fleet.Store(&cp)
}

// ServeHTTP forwards r, disaggregating it when the gateway named a prefill
// instance.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	prefiller := r.Header.Get(HeaderPrefiller)
	r.Header.Del(HeaderPrefiller)
	r.Header.Del(HeaderPrefillerBootstrap)
	if !generation(r) {
		p.rp.ServeHTTP(w, r)
		return
	}
	if prefiller == "" {
		p.m.requests.WithLabelValues(pathLocal).Inc()
		p.rp.ServeHTTP(w, r)
		return
	}
	bootstrap, known := (*p.fleet.Load())[prefiller]
	engine := p.opts.Engine()
	switch {
	case !known:
		// Never follow a host only a header names.
		p.local(w, r, nil, reasonUnknownPrefiller)
		return
	case engine != EngineVLLM && engine != EngineSGLang:
		p.local(w, r, nil, reasonEngine)
		return
	case engine == EngineSGLang && bootstrap == 0:
		p.local(w, r, nil, reasonNoBootstrapPort)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, p.opts.MaxBodyBytes+1))
	if err != nil {
		if r.Context().Err() == nil {
			http.Error(w, "reading the request body: "+err.Error(), http.StatusBadRequest)
		}
		return
	}
	if int64(len(body)) > p.opts.MaxBodyBytes {
		r.Body = readCloser{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
		p.local(w, r, nil, reasonBody)
		return
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil || fields == nil {
		p.local(w, r, body, reasonBody) // the engine words the error
		return
	}
	if engine == EngineVLLM {
		p.vllm(w, r, prefiller, body, fields)
	} else {
		p.sglang(w, r, prefiller, bootstrap, body, fields)
	}
}

type readCloser struct {
	io.Reader
	io.Closer
}

func generation(r *http.Request) bool {
	return r.Method == http.MethodPost && (r.URL.Path == "/v1/chat/completions" || r.URL.Path == "/v1/completions")
}

// vllm runs NixlConnector's exchange: prefill remotely, decode here.
func (p *Proxy) vllm(w http.ResponseWriter, r *http.Request, prefiller string, body []byte, fields map[string]json.RawMessage) {
	pre := clone(fields)
	pre["max_tokens"] = json.RawMessage("1")
	if _, ok := pre["max_completion_tokens"]; ok {
		pre["max_completion_tokens"] = json.RawMessage("1")
	}
	pre["stream"] = json.RawMessage("false")
	delete(pre, "stream_options")
	pre["kv_transfer_params"] = json.RawMessage(`{"do_remote_decode":true,"do_remote_prefill":false,"remote_engine_id":null,"remote_block_ids":null,"remote_host":null,"remote_port":null}`)
	preBody, _ := json.Marshal(pre)

	began := time.Now()
	ctx, cancel := context.WithTimeout(r.Context(), p.opts.PrefillTimeout)
	resp, err := p.send(ctx, r, "http://"+prefiller+r.URL.RequestURI(), preBody, true)
	var kv json.RawMessage
	if err == nil {
		var ans struct {
			KV json.RawMessage `json:"kv_transfer_params"`
		}
		raw, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		switch {
		case rerr != nil:
			err = rerr
		case resp.StatusCode != http.StatusOK:
			err = fmt.Errorf("prefill answered %d", resp.StatusCode)
		case json.Unmarshal(raw, &ans) != nil || len(ans.KV) == 0 || string(ans.KV) == "null":
			err = errors.New("prefill answer has no kv_transfer_params")
		default:
			kv = ans.KV
		}
	}
	timedOut := ctx.Err() == context.DeadlineExceeded
	cancel()
	if r.Context().Err() != nil {
		return // the client left
	}
	if err != nil {
		p.prefillFailed(w, r, body, prefiller, err, timedOut)
		return
	}
	p.m.prefill.Observe(time.Since(began).Seconds())
	dec := clone(fields)
	dec["kv_transfer_params"] = kv
	decBody, _ := json.Marshal(dec)
	prefilled := time.Now()
	resp, err = p.send(r.Context(), r, p.engineURL(r), decBody, false)
	if err == nil && resp.StatusCode != http.StatusOK {
		// Whatever the decode refuses with the prefill's parameters, the
		// engine is asked again without them: a client error repeats
		// there and reaches the client as the engine words it.
		resp.Body.Close()
		err = fmt.Errorf("decode answered %d", resp.StatusCode)
	}
	if err != nil {
		if r.Context().Err() == nil {
			p.m.fallbacks.WithLabelValues(reasonDecodeError).Inc()
			p.log.Warn("pd proxy: decode with transferred KV failed; prefilling locally", zap.String("prefiller", prefiller), zap.Error(err))
			p.local(w, r, body, "")
		}
		return
	}
	p.m.requests.WithLabelValues(pathDisaggregated).Inc()
	p.relay(w, resp, prefilled)
}

// sglang sends the request to the prefill and the local decode at once,
// joined by a bootstrap room.
func (p *Proxy) sglang(w http.ResponseWriter, r *http.Request, prefiller string, bootstrap int32, body []byte, fields map[string]json.RawMessage) {
	host, _, err := net.SplitHostPort(prefiller)
	if err != nil {
		p.local(w, r, body, reasonUnknownPrefiller)
		return
	}
	f := clone(fields)
	hostJSON, _ := json.Marshal(host)
	f["bootstrap_host"] = hostJSON
	f["bootstrap_port"] = json.RawMessage(strconv.Itoa(int(bootstrap)))
	f["bootstrap_room"] = json.RawMessage(strconv.FormatUint(rand.Uint64()>>1, 10))
	both, _ := json.Marshal(f)

	began := time.Now()
	ctx, cancelPrefill := context.WithCancel(r.Context())
	defer cancelPrefill()
	preDone := make(chan error, 1)
	var preAt time.Time
	go func() {
		resp, err := p.send(ctx, r, "http://"+prefiller+r.URL.RequestURI(), both, true)
		if err == nil {
			_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<20))
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("prefill answered %d", resp.StatusCode)
			}
		}
		preAt = time.Now()
		preDone <- err
	}()
	decCtx, cancelDecode := context.WithCancel(r.Context())
	type answer struct {
		resp *http.Response
		err  error
	}
	decDone := make(chan answer, 1)
	go func() {
		resp, err := p.send(decCtx, r, p.engineURL(r), both, false)
		decDone <- answer{resp, err}
	}()
	timer := time.NewTimer(p.opts.PrefillTimeout)
	defer timer.Stop()
	abandon := func(why error, timedOut bool) {
		cancelDecode()
		if a := <-decDone; a.resp != nil {
			a.resp.Body.Close()
		}
		if r.Context().Err() == nil {
			p.prefillFailed(w, r, body, prefiller, why, timedOut)
		}
	}
	var preErr error
	preFinished := false
	for {
		select {
		case err := <-preDone:
			preFinished, preErr = true, err
			if err != nil {
				abandon(err, false)
				return
			}
			p.m.prefill.Observe(preAt.Sub(began).Seconds())
			preDone = nil
			continue
		case a := <-decDone:
			if a.err == nil && a.resp.StatusCode == http.StatusOK {
				// The decode answered: its KV arrived (the decode waits for
				// the room before answering).
				p.m.requests.WithLabelValues(pathDisaggregated).Inc()
				// The prefill's request is left to end by itself (its
				// channel is buffered): cancelling it could abort the room
				// the decode still reads.
				mark := began
				if preFinished {
					mark = preAt
				}
				p.relay(w, a.resp, mark)
				cancelDecode()
				return
			}
			if a.resp != nil {
				a.resp.Body.Close()
				a.err = fmt.Errorf("decode answered %d", a.resp.StatusCode)
			}
			cancelDecode()
			if r.Context().Err() != nil {
				return
			}
			if preErr == nil && !preFinished {
				cancelPrefill()
				<-preDone
			}
			p.m.fallbacks.WithLabelValues(reasonDecodeError).Inc()
			p.log.Warn("pd proxy: decode with transferred KV failed; prefilling locally", zap.String("prefiller", prefiller), zap.Error(a.err))
			p.local(w, r, body, "")
			return
		case <-timer.C:
			if preFinished {
				continue // prefilled in time; the decode's first step may be slow
			}
			cancelPrefill()
			<-preDone
			abandon(errors.New("prefill timed out"), true)
			return
		case <-r.Context().Done():
			cancelDecode()
			return
		}
	}
}

func (p *Proxy) prefillFailed(w http.ResponseWriter, r *http.Request, body []byte, prefiller string, err error, timedOut bool) {
	reason := reasonPrefillError
	if timedOut {
		reason = reasonPrefillTimeout
	}
	p.log.Warn("pd proxy: prefill failed; prefilling locally", zap.String("prefiller", prefiller), zap.String("reason", reason), zap.Error(err))
	p.local(w, r, body, reason)
}

// local serves the request on the local engine alone; reason, when set,
// counts a fallback.
func (p *Proxy) local(w http.ResponseWriter, r *http.Request, body []byte, reason string) {
	if reason != "" {
		p.m.fallbacks.WithLabelValues(reason).Inc()
	}
	p.m.requests.WithLabelValues(pathLocal).Inc()
	if body != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	}
	p.rp.ServeHTTP(w, r)
}

func (p *Proxy) engineURL(r *http.Request) string {
	u := *p.engine
	u.Path = strings.TrimRight(u.Path, "/") + r.URL.Path
	u.RawQuery = r.URL.RawQuery
	return u.String()
}

// send posts body with the client's end-to-end headers; toPrefill swaps in
// the API key when one is configured.
func (p *Proxy) send(ctx context.Context, in *http.Request, target string, body []byte, toPrefill bool) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	conn := connectionTokens(in.Header)
	for k, vs := range in.Header {
		if hopByHop[http.CanonicalHeaderKey(k)] || conn[http.CanonicalHeaderKey(k)] || strings.EqualFold(k, "Content-Length") {
			continue
		}
		req.Header[k] = append([]string(nil), vs...)
	}
	req.Header.Set("Content-Type", "application/json")
	if toPrefill {
		// The proxy reads the prefill's answer: let the transport
		// negotiate (and undo) compression.
		req.Header.Del("Accept-Encoding")
		if p.opts.APIKey != "" {
			req.Header.Set("Authorization", "Bearer "+p.opts.APIKey)
		}
	}
	return p.client.Do(req)
}

// connectionTokens are the headers a Connection header names: hop-by-hop
// too (RFC 9110 7.6.1).
func connectionTokens(h http.Header) map[string]bool {
	var out map[string]bool
	for _, v := range h.Values("Connection") {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				if out == nil {
					out = map[string]bool{}
				}
				out[http.CanonicalHeaderKey(t)] = true
			}
		}
	}
	return out
}

var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Proxy-Connection": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// relay copies the decode's answer to the client as it arrives, observing
// the time from mark (the prefill's end) to its first byte.
func (p *Proxy) relay(w http.ResponseWriter, resp *http.Response, mark time.Time) {
	defer resp.Body.Close()
	conn := connectionTokens(resp.Header)
	for k, vs := range resp.Header {
		if !hopByHop[k] && !conn[k] {
			w.Header()[k] = vs
		}
	}
	w.WriteHeader(resp.StatusCode)
	fl, _ := w.(http.Flusher)
	buf := make([]byte, 32<<10)
	first := true
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if first {
				first = false
				p.m.transfer.Observe(time.Since(mark).Seconds())
			}
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

func clone(m map[string]json.RawMessage) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(m)+3)
	for k, v := range m {
		out[k] = v
	}
	return out
}

// ---------------------------------------------------------------- metrics

const (
	pathDisaggregated = "disaggregated"
	pathLocal         = "local"

	reasonPrefillError     = "prefill_error"
	reasonPrefillTimeout   = "prefill_timeout"
	reasonDecodeError      = "decode_error"
	reasonUnknownPrefiller = "unknown_prefiller"
	reasonNoBootstrapPort  = "no_bootstrap_port"
	reasonEngine           = "engine_not_disaggregating"
	reasonBody             = "body"
)

type metrics struct {
	requests, fallbacks *prometheus.CounterVec
	prefill, transfer   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_pd_requests_total",
			Help: "Generation requests through the pd proxy, by path: disaggregated (prefilled on another instance) or local (prefilled here, fallbacks included)."}, []string{"path"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "llmrouter_pd_fallbacks_total",
			Help: "Requests the gateway sent for disaggregation that were prefilled locally instead, by reason."}, []string{"reason"}),
		prefill: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "llmrouter_pd_prefill_duration_seconds",
			Help: "Time of successful remote prefills, from sending the prefill request to its answer.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		transfer: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "llmrouter_pd_transfer_duration_seconds",
			Help: "From the prefill's answer to the decode engine's first byte: the KV transfer plus the decode's first step.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
	}
	for _, p := range []string{pathDisaggregated, pathLocal} {
		m.requests.WithLabelValues(p)
	}
	for _, r := range []string{reasonPrefillError, reasonPrefillTimeout, reasonDecodeError, reasonUnknownPrefiller, reasonNoBootstrapPort, reasonEngine, reasonBody} {
		m.fallbacks.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.fallbacks, m.prefill, m.transfer)
	}
	return m
}
