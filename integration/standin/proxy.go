package standin

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.uber.org/zap"
)

var errTooLarge = errors.New("request body over the buffer limit")

// hopByHop headers are connection-scoped and never forwarded.
var hopByHop = map[string]bool{"connection": true, "keep-alive": true, "proxy-connection": true,
	"transfer-encoding": true, "te": true, "trailer": true, "upgrade": true}

// request is one downstream HTTP request going through the filter chain.
type request struct {
	s       *Server
	w       http.ResponseWriter
	r       *http.Request
	log     *zap.Logger
	hdrs    headerList
	vh      *VirtualHost
	route   *Route
	md      map[string]any
	streams []*procStream
	upgrade string
	eos     bool // the request has no body

	body     []byte
	bodyRead bool
	bodyRest io.Reader // set when the body exceeded the buffer: streamed, no retries

	wroteHeaders bool
}

// ServeHTTP is the HTTP connection manager.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.ready:
	case <-r.Context().Done():
		return
	}
	rq := &request{s: s, w: w, r: r, md: map[string]any{}, streams: make([]*procStream, len(s.cfg.Listener.Filters))}
	defer func() {
		for _, ps := range rq.streams {
			if ps != nil {
				ps.finish()
			}
		}
	}()
	rq.serve()
}

func newRequestID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func (rq *request) buildHeaders() {
	r := rq.r
	h := headerList{{":authority", r.Host}, {":path", r.URL.RequestURI()}, {":method", r.Method}, {":scheme", "http"}}
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		lk := strings.ToLower(k)
		for _, v := range r.Header[k] {
			h.add(lk, v)
		}
	}
	if r.ContentLength > 0 && !h.has("content-length") {
		h.add("content-length", strconv.FormatInt(r.ContentLength, 10))
	}
	if conn, _ := h.get("connection"); headerHasToken(conn, "upgrade") {
		if up, ok := h.get("upgrade"); ok && up != "" {
			rq.upgrade = strings.ToLower(up)
		}
	}
	if rq.upgrade == "" {
		for k := range hopByHop {
			h.del(k)
		}
	} else {
		h.del("keep-alive")
		h.del("proxy-connection")
		h.del("te")
		h.del("transfer-encoding")
	}
	h.set("x-forwarded-proto", "http")
	if _, ok := h.get("x-request-id"); !ok && rq.s.cfg.Listener.GenerateRequestID {
		h.add("x-request-id", newRequestID())
	}
	rq.hdrs = h
	rq.eos = rq.upgrade == "" && (r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 && len(r.TransferEncoding) == 0)
}

func headerHasToken(v, tok string) bool {
	for _, t := range strings.Split(v, ",") {
		if strings.EqualFold(strings.TrimSpace(t), tok) {
			return true
		}
	}
	return false
}

func (rq *request) serve() {
	rq.buildHeaders()
	id, _ := rq.hdrs.get("x-request-id")
	rq.log = rq.s.log.With(zap.String("request_id", id))
	rq.match()
	if rm := rq.s.cfg.Listener.Removals; len(rm) > 0 {
		// header_mutation filters, ahead of every ext_proc filter.
		rq.hdrs = slices.DeleteFunc(rq.hdrs, func(e header) bool {
			return slices.ContainsFunc(rm, func(r HeaderRemoval) bool { return r.matches(e.k) })
		})
	}
	if rq.upgrade != "" && !rq.upgradeAllowed() {
		rq.localReply(&localReply{status: http.StatusForbidden, details: "upgrade_failed"}, 0)
		return
	}
	ctx := rq.r.Context()
	for i, f := range rq.s.cfg.Listener.Filters {
		pr := rq.perFilter(f.Name)
		if pr != nil && pr.Disabled {
			continue
		}
		ps, err := newProcStream(f, pr, rq.s.conns[f.Cluster], rq.md, rq.log)
		if err != nil {
			rq.log.Error("the stand-in cannot run this filter configuration", zap.Error(err))
			rq.localReply(&localReply{status: 500, body: []byte("stand-in: " + err.Error())}, i)
			return
		}
		rq.streams[i] = ps
		if f.Observability {
			if ps.mode.RequestHeaders {
				ps.post(&extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_RequestHeaders{
					RequestHeaders: &extprocsvc.HttpHeaders{Headers: rq.hdrs.toProto(), EndOfStream: rq.eos}}})
			}
			if ps.mode.RequestBody == extprocv3.ProcessingMode_STREAMED && !rq.eos {
				if err := rq.readBody(false); err != nil {
					rq.log.Info("request body read failed", zap.Error(err))
					return
				}
				if rq.bodyRest == nil {
					ps.post(&extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_RequestBody{
						RequestBody: &extprocsvc.HttpBody{Body: rq.body, EndOfStream: true}}})
				}
			}
			continue
		}
		if rq.upgrade != "" && ps.mode.RequestBody != extprocv3.ProcessingMode_NONE {
			// Real Envoy hangs here (envoy#47081, envoy#47048); fail loudly instead.
			err := fmt.Errorf("filter %s: request_body_mode %s on an upgrade request hangs real Envoy; set body mode NONE on the upgrade route (ExtProcPerRoute)", f.Name, ps.mode.RequestBody)
			rq.log.Error("STAND-IN REFUSES A CONFIGURATION THAT HANGS ENVOY", zap.Error(err))
			rq.localReply(&localReply{status: 500, body: []byte("stand-in: " + err.Error())}, i)
			return
		}
		bodyReplaced := false
		if ps.mode.RequestHeaders && !ps.done {
			res := ps.run(ctx, phaseRequestHeaders, &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_RequestHeaders{
				RequestHeaders: &extprocsvc.HttpHeaders{Headers: rq.hdrs.toProto(), EndOfStream: rq.eos}}}, &rq.hdrs, rq.md, false)
			if rq.r.Context().Err() != nil {
				return
			}
			if res.reply != nil {
				rq.localReply(res.reply, i)
				return
			}
			if res.clearRoute {
				rq.match()
			}
			if res.bodySet {
				rq.setBody(res.body)
				bodyReplaced = true
			}
		}
		if ps.mode.RequestBody == extprocv3.ProcessingMode_BUFFERED && !rq.eos && !ps.done && !bodyReplaced {
			if err := rq.readBody(true); err != nil {
				if errors.Is(err, errTooLarge) {
					rq.localReply(&localReply{status: http.StatusRequestEntityTooLarge, body: []byte("Payload Too Large")}, i)
				}
				return
			}
			res := ps.run(ctx, phaseRequestBody, &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_RequestBody{
				RequestBody: &extprocsvc.HttpBody{Body: rq.body, EndOfStream: true}}}, &rq.hdrs, rq.md, true)
			if rq.r.Context().Err() != nil {
				return
			}
			if res.reply != nil {
				rq.localReply(res.reply, i)
				return
			}
			if res.clearRoute {
				rq.match()
			}
			if res.bodySet {
				rq.setBody(res.body)
			}
		}
	}
	rq.router()
}

func (rq *request) setBody(b []byte) {
	rq.body, rq.bodyRead, rq.bodyRest = b, true, nil
	rq.hdrs.set("content-length", strconv.Itoa(len(b)))
}

// readBody buffers the request body up to the listener's buffer limit.
// Over the limit, a buffering filter gets errTooLarge (413); otherwise the
// body is streamed upstream and retries are off, like Envoy's router.
func (rq *request) readBody(mustBuffer bool) error {
	if rq.bodyRead {
		if mustBuffer && rq.bodyRest != nil {
			return errTooLarge
		}
		return nil
	}
	rq.bodyRead = true
	if rq.eos {
		return nil
	}
	limit := rq.s.cfg.Listener.BufferLimit
	b, err := io.ReadAll(io.LimitReader(rq.r.Body, int64(limit)+1))
	if err != nil {
		return err
	}
	if len(b) > limit {
		rq.bodyRest = io.MultiReader(bytes.NewReader(b), rq.r.Body)
		if mustBuffer {
			return errTooLarge
		}
		return nil
	}
	rq.body = b
	return nil
}

func (rq *request) perFilter(name string) *PerRoute {
	if rq.route != nil {
		if pr, ok := rq.route.PerFilter[name]; ok {
			return pr
		}
	}
	if rq.vh != nil {
		if pr, ok := rq.vh.PerFilter[name]; ok {
			return pr
		}
	}
	return nil
}

func (rq *request) upgradeAllowed() bool {
	if rq.route != nil {
		if v, ok := rq.route.Upgrades[rq.upgrade]; ok {
			return v
		}
	}
	return rq.s.cfg.Listener.Upgrades[rq.upgrade]
}

// match selects the virtual host by :authority and the first matching route.
func (rq *request) match() {
	rq.vh, rq.route = nil, nil
	authority, _ := rq.hdrs.get(":authority")
	host := strings.ToLower(authority)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	var best *VirtualHost
	bestScore := -1
	for _, vh := range rq.s.cfg.Listener.VirtualHosts {
		for _, d := range vh.Domains {
			d = strings.ToLower(d)
			score := -1
			switch {
			case d == host || d == strings.ToLower(authority):
				score = 3
			case strings.HasPrefix(d, "*") && strings.HasSuffix(host, d[1:]) && d != "*":
				score = 2
			case strings.HasSuffix(d, "*") && d != "*" && strings.HasPrefix(host, d[:len(d)-1]):
				score = 1
			case d == "*":
				score = 0
			}
			if score > bestScore {
				best, bestScore = vh, score
			}
		}
	}
	if best == nil {
		return
	}
	rq.vh = best
	path, _ := rq.hdrs.get(":path")
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	for _, rt := range best.Routes {
		if rt.matches(path, rq.hdrs) {
			rq.route = rt
			return
		}
	}
}

func (rt *Route) matches(path string, h headerList) bool {
	p, want := path, rt.Prefix
	if rt.HasPath {
		want = rt.Path
	}
	if !rt.CaseSensitive {
		p, want = strings.ToLower(p), strings.ToLower(want)
	}
	switch {
	case rt.Regex != nil:
		if !rt.Regex.MatchString(path) {
			return false
		}
	case rt.HasPath && p != want || !rt.HasPath && !strings.HasPrefix(p, want):
		return false
	}
	for _, hm := range rt.Headers {
		if hm.match(h) == hm.Invert {
			return false
		}
	}
	return true
}

func (hm HeaderMatch) match(h headerList) bool {
	// Envoy matches against all values joined with commas.
	var vals []string
	for _, e := range h {
		if e.k == hm.Name {
			vals = append(vals, e.v)
		}
	}
	if hm.Kind == "present" {
		return (len(vals) > 0) == hm.Present
	}
	if len(vals) == 0 {
		return false
	}
	v, want := strings.Join(vals, ","), hm.Value
	if hm.IgnoreCase {
		v, want = strings.ToLower(v), strings.ToLower(want)
	}
	switch hm.Kind {
	case "exact":
		return v == want
	case "prefix":
		return strings.HasPrefix(v, want)
	case "suffix":
		return strings.HasSuffix(v, want)
	case "contains":
		return strings.Contains(v, want)
	}
	return false
}

// localReply answers from filter `from` (or the router when from equals the
// filter count): the reply passes through the response phases of the
// filters before it only, like Envoy's sendLocalReply.
func (rq *request) localReply(lr *localReply, from int) {
	h := append(headerList{{":status", strconv.Itoa(lr.status)}}, lr.headers...)
	if len(lr.body) > 0 && !h.has("content-type") {
		h.set("content-type", "text/plain")
	}
	h.set("content-length", strconv.Itoa(len(lr.body)))
	rq.log.Info("local reply", zap.Int("status", lr.status), zap.String("details", lr.details))
	rq.respond(h, bytes.NewReader(lr.body), len(lr.body) == 0, from, nil)
}

// respond runs the response phases of filters [0, upto) in encoder order,
// then writes headers and streams the body, flushing every chunk. activity
// is called on every chunk (idle timeout).
func (rq *request) respond(h headerList, body io.Reader, noBody bool, upto int, activity func()) {
	ctx := rq.r.Context()
	for i := upto - 1; i >= 0; i-- {
		ps := rq.streams[i]
		if ps == nil || ps.done || !ps.mode.ResponseHeaders {
			continue
		}
		req := &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_ResponseHeaders{
			ResponseHeaders: &extprocsvc.HttpHeaders{Headers: h.toProto(), EndOfStream: noBody}}}
		if ps.f.Observability {
			ps.post(req)
			continue
		}
		res := ps.run(ctx, phaseResponseHeaders, req, &h, rq.md, false)
		if res.reply != nil {
			if c, ok := body.(io.Closer); ok {
				c.Close()
			}
			rq.localReply(res.reply, i)
			return
		}
	}
	var observers []*procStream
	for i := upto - 1; i >= 0; i-- {
		if ps := rq.streams[i]; ps != nil && !ps.done && ps.f.Observability && ps.mode.ResponseBody == extprocv3.ProcessingMode_STREAMED && !noBody {
			observers = append(observers, ps)
		}
	}
	status, _ := strconv.Atoi(firstOr(h, ":status", "502"))
	wh := rq.w.Header()
	for _, e := range h {
		if strings.HasPrefix(e.k, ":") || hopByHop[e.k] {
			continue
		}
		wh.Add(e.k, e.v)
	}
	if rq.s.cfg.Listener.AlwaysSetRequestID {
		if id, ok := rq.hdrs.get("x-request-id"); ok {
			wh.Set("x-request-id", id)
		}
	}
	rq.w.WriteHeader(status)
	rq.wroteHeaders = true
	rc := http.NewResponseController(rq.w)
	_ = rc.Flush()
	if noBody {
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if activity != nil {
				activity()
			}
			chunk := append([]byte(nil), buf[:n]...)
			for _, ps := range observers {
				ps.post(&extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_ResponseBody{
					ResponseBody: &extprocsvc.HttpBody{Body: chunk, EndOfStream: err == io.EOF}}})
			}
			if _, werr := rq.w.Write(buf[:n]); werr != nil {
				return
			}
			_ = rc.Flush()
		}
		if err == io.EOF {
			if n == 0 {
				for _, ps := range observers {
					ps.post(&extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_ResponseBody{
						ResponseBody: &extprocsvc.HttpBody{EndOfStream: true}}})
				}
			}
			return
		}
		if err != nil {
			rq.log.Info("upstream response aborted", zap.Error(err))
			// Envoy resets the downstream stream when the upstream dies
			// mid-response.
			panic(http.ErrAbortHandler)
		}
	}
}

func firstOr(h headerList, k, def string) string {
	if v, ok := h.get(k); ok {
		return v
	}
	return def
}

// failure kinds of an upstream attempt.
type failKind int

const (
	failNone failKind = iota
	failConnect
	failReset
	failPerTry
	failGlobal
)

func (rq *request) router() {
	nf := len(rq.streams)
	if rq.route == nil {
		rq.localReply(&localReply{status: http.StatusNotFound, details: "route_not_found"}, nf)
		return
	}
	if d := rq.route.Direct; d != nil {
		rq.localReply(&localReply{status: d.Status, body: d.Body, details: "direct_response"}, nf)
		return
	}
	c, _ := rq.s.fleet.cluster(rq.route.Cluster)
	if c == nil {
		rq.localReply(&localReply{status: rq.route.NotFoundCode, details: "cluster_not_found"}, nf)
		return
	}
	pk := newPicker(c, rq.s.fleet, rq.md, rq.hdrs.get)
	if rq.upgrade != "" {
		rq.proxyUpgrade(c, pk)
		return
	}
	rq.proxyHTTP(c, pk)
}

func (rp *RetryPolicy) retriable(kind failKind, status int) bool {
	if rp == nil {
		return false
	}
	on := rp.On
	switch kind {
	case failConnect:
		return on["connect-failure"] || on["reset"] || on["reset-before-request"] || on["5xx"] || on["gateway-error"]
	case failReset:
		return on["reset"] || on["5xx"] || on["gateway-error"]
	case failPerTry:
		return on["5xx"] || on["gateway-error"] || on["reset"]
	case failNone:
		return on["5xx"] && status >= 500 ||
			on["gateway-error"] && (status == 502 || status == 503 || status == 504) ||
			on["retriable-status-codes"] && rp.StatusCodes[status]
	}
	return false
}

func (rp *RetryPolicy) backoff(n int) time.Duration {
	d := rp.Base << n
	if d > rp.Max || d <= 0 {
		d = rp.Max
	}
	return time.Duration(rand.Int64N(int64(d) + 1))
}

// idleWatch cancels a stream after a period without activity.
type idleWatch struct {
	last atomic.Int64
	stop chan struct{}
	once sync.Once
}

func newIdleWatch(d time.Duration, onIdle func()) *idleWatch {
	w := &idleWatch{stop: make(chan struct{})}
	w.touch()
	if d <= 0 {
		return w
	}
	tick := min(max(d/4, 10*time.Millisecond), time.Second)
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				if time.Since(time.Unix(0, w.last.Load())) > d {
					onIdle()
					return
				}
			}
		}
	}()
	return w
}

func (w *idleWatch) touch() { w.last.Store(time.Now().UnixNano()) }
func (w *idleWatch) done()  { w.once.Do(func() { close(w.stop) }) }

func (rq *request) idleTimeout() time.Duration {
	if rq.route.HasIdle {
		return rq.route.IdleTimeout
	}
	return rq.s.cfg.Listener.StreamIdleTimeout
}

func (rq *request) proxyHTTP(c *DynCluster, pk *picker) {
	nf := len(rq.streams)
	if err := rq.readBody(false); err != nil {
		rq.log.Info("request body read failed", zap.Error(err))
		return
	}
	rp := rq.route.Retry
	retries := 0
	if rp != nil && rq.bodyRest == nil {
		retries = rp.NumRetries
	}
	// The route timeout runs from the end of the downstream request to the
	// end of the upstream response; 0 disables it.
	ctx, cancel := context.WithCancel(rq.r.Context())
	defer cancel()
	var globalTimedOut atomic.Bool
	if t := rq.route.Timeout; t > 0 {
		timer := time.AfterFunc(t, func() { globalTimedOut.Store(true); cancel() })
		defer timer.Stop()
	}
	var idleTimedOut atomic.Bool
	idle := newIdleWatch(rq.idleTimeout(), func() { idleTimedOut.Store(true); cancel() })
	defer idle.done()

	var resp *http.Response
	var kind failKind
	var lastErr error
	for attempt := 0; ; attempt++ {
		host, overridden, ok := pk.choose()
		if !ok {
			rq.localReply(&localReply{status: 503, body: []byte("no healthy upstream"), details: "no_healthy_upstream"}, nf)
			return
		}
		resp, kind, lastErr = rq.attempt(ctx, c, host, &globalTimedOut)
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		rq.log.Debug("upstream attempt", zap.Int("attempt", attempt+1), zap.String("host", host), zap.Bool("override", overridden), zap.Int("status", status), zap.Error(lastErr))
		if kind == failGlobal || idleTimedOut.Load() {
			break
		}
		if attempt < retries && rp.retriable(kind, status) {
			if resp != nil {
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
				resp.Body.Close()
				resp = nil
			}
			rq.log.Info("retrying upstream", zap.String("host", host), zap.Int("attempt", attempt+1), zap.Int("status", status), zap.Error(lastErr))
			select {
			case <-time.After(rp.backoff(attempt)):
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				kind = failGlobal
				break
			}
			continue
		}
		break
	}
	if resp == nil {
		switch {
		case rq.r.Context().Err() != nil:
			return
		case kind == failGlobal && globalTimedOut.Load(), kind == failPerTry:
			rq.localReply(&localReply{status: 504, body: []byte("upstream request timeout"), details: "upstream_response_timeout"}, nf)
		case idleTimedOut.Load():
			rq.localReply(&localReply{status: 504, body: []byte("stream timeout"), details: "stream_idle_timeout"}, nf)
		case kind == failConnect:
			rq.localReply(&localReply{status: 503, body: []byte("upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: " + errString(lastErr)), details: "upstream_reset_before_response_started{connection_failure}"}, nf)
		default:
			rq.localReply(&localReply{status: 503, body: []byte("upstream connect error or disconnect/reset before headers. reset reason: connection termination"), details: "upstream_reset_before_response_started{connection_termination}"}, nf)
		}
		return
	}
	defer resp.Body.Close()
	h := headerList{{":status", strconv.Itoa(resp.StatusCode)}}
	keys := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		lk := strings.ToLower(k)
		if hopByHop[lk] {
			continue
		}
		for _, v := range resp.Header[k] {
			h.add(lk, v)
		}
	}
	noBody := resp.Body == http.NoBody || rq.r.Method == http.MethodHead
	rq.respond(h, resp.Body, noBody, nf, idle.touch)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// attempt sends the request to one host and returns once response headers
// arrive (or the attempt failed).
func (rq *request) attempt(ctx context.Context, c *DynCluster, host string, globalTimedOut *atomic.Bool) (*http.Response, failKind, error) {
	actx, cancel := context.WithCancel(context.WithValue(ctx, dialTimeoutKey{}, c.ConnectTimeout))
	var perTryFired atomic.Bool
	var perTry *time.Timer
	if rp := rq.route.Retry; rp != nil && rp.PerTry > 0 {
		perTry = time.AfterFunc(rp.PerTry, func() { perTryFired.Store(true); cancel() })
	}
	path, _ := rq.hdrs.get(":path")
	method, _ := rq.hdrs.get(":method")
	authority, _ := rq.hdrs.get(":authority")
	var body io.Reader
	length := int64(0)
	switch {
	case rq.bodyRest != nil:
		body, length = rq.bodyRest, -1
	case len(rq.body) > 0:
		body, length = bytes.NewReader(rq.body), int64(len(rq.body))
	}
	req, err := http.NewRequestWithContext(actx, method, "http://"+host+path, body)
	if err != nil {
		cancel()
		return nil, failReset, err
	}
	req.Host = authority
	req.ContentLength = length
	if length == 0 {
		req.Body = http.NoBody
	}
	for _, e := range rq.hdrs {
		if strings.HasPrefix(e.k, ":") || hopByHop[e.k] || e.k == "content-length" || e.k == "host" {
			continue
		}
		req.Header.Add(e.k, e.v)
	}
	if t := rq.route.Timeout; t > 0 {
		req.Header.Set("x-envoy-expected-rq-timeout-ms", strconv.FormatInt(t.Milliseconds(), 10))
	}
	resp, err := rq.s.transport.RoundTrip(req)
	if perTry != nil {
		perTry.Stop()
	}
	if err != nil {
		cancel()
		var ce *connectError
		switch {
		case globalTimedOut.Load():
			return nil, failGlobal, err
		case perTryFired.Load():
			return nil, failPerTry, err
		case errors.As(err, &ce):
			return nil, failConnect, err
		case ctx.Err() != nil:
			return nil, failGlobal, err
		}
		return nil, failReset, err
	}
	if resp.Body == http.NoBody {
		cancel()
	} else {
		resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	}
	return resp, failNone, nil
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// proxyUpgrade proxies an upgrade (WebSocket) request: the upgrade request
// goes to the chosen host; after a 101 both connections are spliced.
// Connect failures walk the pick like any retry; the route timeout does not
// apply (Envoy starts it only when the downstream request ends, which an
// upgraded stream never does).
func (rq *request) proxyUpgrade(c *DynCluster, pk *picker) {
	nf := len(rq.streams)
	rp := rq.route.Retry
	retries := 0
	if rp != nil {
		retries = rp.NumRetries
	}
	var conn net.Conn
	var lastErr error
	for attempt := 0; ; attempt++ {
		host, _, ok := pk.choose()
		if !ok {
			rq.localReply(&localReply{status: 503, body: []byte("no healthy upstream"), details: "no_healthy_upstream"}, nf)
			return
		}
		ctx, cancel := context.WithTimeout(rq.r.Context(), c.ConnectTimeout)
		var d net.Dialer
		conn, lastErr = d.DialContext(ctx, "tcp", host)
		cancel()
		if lastErr == nil {
			break
		}
		if attempt < retries && rp.retriable(failConnect, 0) {
			rq.log.Info("retrying upgrade connect", zap.String("host", host), zap.Error(lastErr))
			continue
		}
		rq.localReply(&localReply{status: 503, body: []byte("upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: " + lastErr.Error())}, nf)
		return
	}
	defer conn.Close()
	var b strings.Builder
	path, _ := rq.hdrs.get(":path")
	method, _ := rq.hdrs.get(":method")
	authority, _ := rq.hdrs.get(":authority")
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, authority)
	for _, e := range rq.hdrs {
		if strings.HasPrefix(e.k, ":") || e.k == "host" {
			continue
		}
		fmt.Fprintf(&b, "%s: %s\r\n", e.k, e.v)
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		rq.localReply(&localReply{status: 503, body: []byte("upstream connect error or disconnect/reset before headers. reset reason: connection termination")}, nf)
		return
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, rq.r)
	if err != nil {
		rq.localReply(&localReply{status: 503, body: []byte("upstream connect error or disconnect/reset before headers. reset reason: connection termination")}, nf)
		return
	}
	h := headerList{{":status", strconv.Itoa(resp.StatusCode)}}
	for k, vs := range resp.Header {
		for _, v := range vs {
			h.add(strings.ToLower(k), v)
		}
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		for k := range hopByHop {
			h.del(k)
		}
		defer resp.Body.Close()
		rq.respond(h, resp.Body, resp.Body == http.NoBody, nf, nil)
		return
	}
	// Response header phases (a blocking filter may still replace the 101).
	for i := nf - 1; i >= 0; i-- {
		ps := rq.streams[i]
		if ps == nil || ps.done || !ps.mode.ResponseHeaders {
			continue
		}
		req := &extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_ResponseHeaders{
			ResponseHeaders: &extprocsvc.HttpHeaders{Headers: h.toProto()}}}
		if ps.f.Observability {
			ps.post(req)
			continue
		}
		if res := ps.run(rq.r.Context(), phaseResponseHeaders, req, &h, rq.md, false); res.reply != nil {
			rq.localReply(res.reply, i)
			return
		}
	}
	var observers []*procStream
	for i := nf - 1; i >= 0; i-- {
		if ps := rq.streams[i]; ps != nil && !ps.done && ps.f.Observability && ps.mode.ResponseBody == extprocv3.ProcessingMode_STREAMED {
			observers = append(observers, ps)
		}
	}
	client, cbuf, err := http.NewResponseController(rq.w).Hijack()
	if err != nil {
		rq.log.Error("cannot hijack the downstream connection", zap.Error(err))
		return
	}
	defer client.Close()
	rq.wroteHeaders = true
	var out strings.Builder
	fmt.Fprintf(&out, "HTTP/1.1 101 %s\r\n", http.StatusText(http.StatusSwitchingProtocols))
	for _, e := range h {
		if strings.HasPrefix(e.k, ":") {
			continue
		}
		fmt.Fprintf(&out, "%s: %s\r\n", e.k, e.v)
	}
	out.WriteString("\r\n")
	if _, err := io.WriteString(client, out.String()); err != nil {
		return
	}
	closeBoth := func() { client.Close(); conn.Close() }
	idle := newIdleWatch(rq.idleTimeout(), closeBoth)
	defer idle.done()
	stopOnShutdown := context.AfterFunc(rq.s.ctxOrBackground(), closeBoth)
	defer stopOnShutdown()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 32<<10)
		for {
			n, err := cbuf.Reader.Read(buf)
			if n > 0 {
				idle.touch()
				if _, werr := conn.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := br.Read(buf)
		if n > 0 {
			idle.touch()
			chunk := append([]byte(nil), buf[:n]...)
			for _, ps := range observers {
				ps.post(&extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_ResponseBody{
					ResponseBody: &extprocsvc.HttpBody{Body: chunk}}})
			}
			if _, werr := client.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	for _, ps := range observers {
		ps.post(&extprocsvc.ProcessingRequest{Request: &extprocsvc.ProcessingRequest_ResponseBody{
			ResponseBody: &extprocsvc.HttpBody{EndOfStream: true}}})
	}
	closeBoth()
	<-done
}
