package standin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"
)

// localReply is a response the stand-in generates itself (Envoy's
// sendLocalReply): immediate responses, filter failures, router errors.
type localReply struct {
	status  int
	headers headerList
	body    []byte
	details string
}

// phaseResult is what one blocking ext_proc exchange decided.
type phaseResult struct {
	reply      *localReply // stop the request with this response
	clearRoute bool
	body       []byte // replacement body (body mutation)
	bodySet    bool
}

type phase int

const (
	phaseRequestHeaders phase = iota
	phaseRequestBody
	phaseResponseHeaders
	phaseResponseBody
)

func (p phase) String() string {
	return [...]string{"request_headers", "request_body", "response_headers", "response_body"}[p]
}

// procStream is one ext_proc filter's gRPC stream for one HTTP request
// (Envoy opens one stream per request and filter, on the first message).
type procStream struct {
	f         *ExtProcFilter
	conn      *grpc.ClientConn
	log       *zap.Logger
	mode      Mode
	failAllow bool
	receiving map[string]bool
	forward   []string
	dynMD     map[string]any // the request's dynamic metadata (forwarding)
	md        [][2]string

	st      grpc.BidiStreamingClient[extprocsvc.ProcessingRequest, extprocsvc.ProcessingResponse]
	cancel  context.CancelFunc
	recv    chan *extprocsvc.ProcessingResponse
	recvErr error // set before recv is closed
	done    bool  // no further messages go to this processor
	opened  bool
	mu      sync.Mutex // guards st/cancel/closed between opener and closer
	closed  bool

	// observability mode
	async     chan *extprocsvc.ProcessingRequest
	asyncOnce sync.Once
	dropped   int
}

func newProcStream(f *ExtProcFilter, pr *PerRoute, conn *grpc.ClientConn, dynMD map[string]any, log *zap.Logger) (*procStream, error) {
	p := &procStream{f: f, conn: conn, log: log.With(zap.String("filter", f.Name)), mode: f.Mode,
		failAllow: f.FailureModeAllow, md: f.InitialMetadata, receiving: map[string]bool{},
		forward: f.Forwarding, dynMD: dynMD}
	recv := f.Receiving
	if pr != nil {
		if pr.Mode != nil {
			if err := pr.Mode.check(f.Observability, "ExtProcPerRoute processing_mode"); err != nil {
				return nil, err
			}
			p.mode = *pr.Mode
		}
		if pr.FailureModeAllow != nil {
			p.failAllow = *pr.FailureModeAllow
		}
		if pr.HasReceiving {
			recv = pr.Receiving
		}
		if pr.HasForwarding {
			p.forward = pr.Forwarding
		}
		p.md = mergeMetadata(p.md, pr.InitialMetadata)
	}
	for _, ns := range recv {
		p.receiving[ns] = true
	}
	return p, nil
}

func mergeMetadata(base, over [][2]string) [][2]string {
	out := append([][2]string(nil), base...)
	for _, o := range over {
		replaced := false
		for i := range out {
			if out[i][0] == o[0] {
				out[i] = o
				replaced = true
			}
		}
		if !replaced {
			out = append(out, o)
		}
	}
	return out
}

func (p *procStream) open(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	for _, kv := range p.md {
		ctx = metadata.AppendToOutgoingContext(ctx, kv[0], kv[1])
	}
	st, err := extprocsvc.NewExternalProcessorClient(p.conn).Process(ctx)
	if err != nil {
		cancel()
		return err
	}
	p.st, p.cancel = st, cancel
	return nil
}

// first decorates the stream's first message the way Envoy does.
func (p *procStream) decorate(req *extprocsvc.ProcessingRequest) {
	req.ObservabilityMode = p.f.Observability
	// forwarding_namespaces: the request's dynamic metadata of those
	// namespaces rides along in metadata_context.
	for _, ns := range p.forward {
		m, ok := p.dynMD[ns].(map[string]any)
		if !ok {
			continue
		}
		st, err := structpb.NewStruct(m)
		if err != nil {
			p.log.Warn("dynamic metadata not forwardable", zap.String("namespace", ns), zap.Error(err))
			continue
		}
		if req.MetadataContext == nil {
			req.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
		}
		req.MetadataContext.FilterMetadata[ns] = st
	}
	if !p.opened {
		p.opened = true
		req.ProtocolConfig = &extprocsvc.ProtocolConfiguration{
			RequestBodyMode:  p.mode.RequestBody,
			ResponseBodyMode: p.mode.ResponseBody,
		}
	}
}

// exchange sends one message of a blocking filter and waits for its answer
// under message_timeout, honouring one override_message_timeout per phase up
// to max_message_timeout. A nil response with nil error never happens.
func (p *procStream) exchange(ctx context.Context, ph phase, req *extprocsvc.ProcessingRequest) (*extprocsvc.ProcessingResponse, error, bool) {
	p.decorate(req)
	sent := make(chan error, 1)
	go func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closed {
			sent <- errors.New("stream closed")
			return
		}
		if p.st == nil {
			if err := p.open(context.WithoutCancel(ctx)); err != nil {
				sent <- err
				return
			}
			p.recv = make(chan *extprocsvc.ProcessingResponse, 4)
			go p.reader(p.st, p.recv)
		}
		sent <- p.st.Send(req)
	}()
	timer := time.NewTimer(p.f.MessageTimeout)
	defer timer.Stop()
	overridden := false
	sendDone := false
	for {
		var recv chan *extprocsvc.ProcessingResponse
		if sendDone {
			recv = p.recv
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err(), false
		case err := <-sent:
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("send %s: %w", ph, err), false
			}
			sendDone = true // on io.EOF the reader reports the real status
		case <-timer.C:
			return nil, fmt.Errorf("no response to %s within the message timeout", ph), true
		case resp, ok := <-recv:
			if !ok {
				if p.recvErr == nil || errors.Is(p.recvErr, io.EOF) {
					return nil, fmt.Errorf("processor closed the stream before answering %s", ph), false
				}
				return nil, fmt.Errorf("stream error during %s: %w", ph, p.recvErr), false
			}
			if d := resp.GetOverrideMessageTimeout(); d != nil {
				// Envoy ignores every other field of such a message.
				nd := d.AsDuration()
				switch {
				case p.f.MaxMessageTimeout <= 0:
					p.log.Warn("override_message_timeout ignored: max_message_timeout is not set")
				case overridden:
					p.log.Warn("override_message_timeout ignored: already overridden in this phase", zap.Stringer("phase", ph))
				case nd < time.Millisecond || nd > p.f.MaxMessageTimeout:
					p.log.Warn("override_message_timeout ignored: out of range", zap.Duration("override", nd), zap.Duration("max", p.f.MaxMessageTimeout))
				default:
					overridden = true
					if !timer.Stop() {
						select {
						case <-timer.C:
						default:
						}
					}
					timer.Reset(nd)
				}
				continue
			}
			return resp, nil, false
		}
	}
}

func (p *procStream) reader(st grpc.BidiStreamingClient[extprocsvc.ProcessingRequest, extprocsvc.ProcessingResponse], out chan *extprocsvc.ProcessingResponse) {
	for {
		resp, err := st.Recv()
		if err != nil {
			p.recvErr = err
			close(out)
			return
		}
		out <- resp
	}
}

// fail turns a stream failure into Envoy's behaviour: with
// failure_mode_allow the request continues unmodified and this filter sends
// nothing more; otherwise a local reply (504 on timeout, else
// status_on_error, default 500).
func (p *procStream) fail(err error, timeout bool) *phaseResult {
	p.done = true
	p.close()
	if p.failAllow {
		p.log.Warn("ext_proc failed; failure_mode_allow: continuing unmodified", zap.Error(err))
		return &phaseResult{}
	}
	status := p.f.StatusOnError
	if timeout {
		status = 504
	}
	p.log.Warn("ext_proc failed; answering with a local reply", zap.Error(err), zap.Int("status", status))
	return &phaseResult{reply: &localReply{status: status, details: "ext_proc_error"}}
}

// run performs one blocking phase: send, wait, apply the answer to headers
// (nil for body phases without headers), metadata and body.
func (p *procStream) run(ctx context.Context, ph phase, req *extprocsvc.ProcessingRequest, hdrs *headerList, md map[string]any, bufferedBody bool) *phaseResult {
	resp, err, timeout := p.exchange(ctx, ph, req)
	if err != nil {
		return p.fail(err, timeout)
	}
	var common *extprocsvc.CommonResponse
	switch r := resp.GetResponse().(type) {
	case *extprocsvc.ProcessingResponse_ImmediateResponse:
		if p.f.DisableImmediate {
			p.log.Warn("immediate_response ignored (disable_immediate_response); closing the stream")
			p.done = true
			p.close()
			return &phaseResult{}
		}
		p.mergeMetadata(resp, md)
		p.done = true
		p.close()
		return &phaseResult{reply: immediateReply(r.ImmediateResponse, p.log)}
	case *extprocsvc.ProcessingResponse_RequestHeaders:
		if ph != phaseRequestHeaders {
			return p.fail(fmt.Errorf("spurious request_headers response during %s", ph), false)
		}
		common = r.RequestHeaders.GetResponse()
	case *extprocsvc.ProcessingResponse_RequestBody:
		if ph != phaseRequestBody {
			return p.fail(fmt.Errorf("spurious request_body response during %s", ph), false)
		}
		common = r.RequestBody.GetResponse()
	case *extprocsvc.ProcessingResponse_ResponseHeaders:
		if ph != phaseResponseHeaders {
			return p.fail(fmt.Errorf("spurious response_headers response during %s", ph), false)
		}
		common = r.ResponseHeaders.GetResponse()
	default:
		return p.fail(fmt.Errorf("unexpected response %T during %s", resp.GetResponse(), ph), false)
	}
	p.mergeMetadata(resp, md)
	res := &phaseResult{}
	replacing := common.GetStatus() == extprocsvc.CommonResponse_CONTINUE_AND_REPLACE
	// Header mutations in a body response apply only in BUFFERED mode,
	// where the headers are still held.
	if hdrs != nil && (ph != phaseRequestBody || bufferedBody) {
		rejected, err := applyMutation(hdrs, common.GetHeaderMutation(), replacing)
		if err != nil {
			return p.fail(fmt.Errorf("%s header mutation: %w", ph, err), false)
		}
		if rejected > 0 {
			p.log.Info("header mutations ignored by the default mutation rules", zap.Int("count", rejected), zap.Stringer("phase", ph))
		}
	}
	if bm := common.GetBodyMutation(); bm != nil && (ph == phaseRequestBody || replacing) {
		switch m := bm.GetMutation().(type) {
		case *extprocsvc.BodyMutation_Body:
			res.body, res.bodySet = m.Body, true
		case *extprocsvc.BodyMutation_ClearBody:
			if m.ClearBody {
				res.body, res.bodySet = nil, true
			}
		}
	}
	if common.GetClearRouteCache() && ph == phaseRequestHeaders || common.GetClearRouteCache() && ph == phaseRequestBody {
		res.clearRoute = p.f.ClearRouteCache
	}
	if mo := resp.GetModeOverride(); mo != nil && (ph == phaseRequestHeaders || ph == phaseResponseHeaders) {
		if !p.f.AllowModeOverride {
			p.log.Debug("mode_override ignored: allow_mode_override is false")
		} else {
			nm := Mode{
				RequestHeaders:  mo.GetRequestHeaderMode() != extprocv3.ProcessingMode_SKIP,
				ResponseHeaders: mo.GetResponseHeaderMode() != extprocv3.ProcessingMode_SKIP,
				RequestBody:     mo.GetRequestBodyMode(),
				ResponseBody:    mo.GetResponseBodyMode(),
			}
			if err := nm.check(false, "mode_override"); err != nil {
				p.log.Error("mode_override refused by the stand-in", zap.Error(err))
			} else {
				p.mode = nm
			}
		}
	}
	return res
}

// mergeMetadata keeps dynamic metadata only for the receiving namespaces.
func (p *procStream) mergeMetadata(resp *extprocsvc.ProcessingResponse, md map[string]any) {
	for ns, v := range resp.GetDynamicMetadata().GetFields() {
		if !p.receiving[ns] {
			p.log.Debug("dynamic metadata dropped: namespace not in receiving_namespaces", zap.String("namespace", ns))
			continue
		}
		sv := v.GetStructValue()
		if sv == nil {
			continue
		}
		cur, _ := md[ns].(map[string]any)
		if cur == nil {
			cur = map[string]any{}
			md[ns] = cur
		}
		for k, fv := range sv.AsMap() {
			cur[k] = fv
		}
	}
}

func immediateReply(ir *extprocsvc.ImmediateResponse, log *zap.Logger) *localReply {
	status := int(ir.GetStatus().GetCode())
	if status < 200 {
		status = 500
	}
	lr := &localReply{status: status, body: ir.GetBody(), details: ir.GetDetails()}
	if len(lr.body) > 0 {
		lr.headers.set("content-type", "text/plain")
	}
	if _, err := applyMutation(&lr.headers, ir.GetHeaders(), false); err != nil {
		log.Warn("immediate_response headers refused", zap.Error(err))
	}
	if gs := ir.GetGrpcStatus(); gs != nil {
		lr.headers.set("grpc-status", fmt.Sprint(gs.GetStatus()))
	}
	return lr
}

// post sends a message of an observability-mode filter without waiting;
// the response path is never delayed, and a full queue drops messages.
func (p *procStream) post(req *extprocsvc.ProcessingRequest) {
	if p.done {
		return
	}
	p.decorate(req)
	if p.async == nil {
		p.async = make(chan *extprocsvc.ProcessingRequest, 1024)
		go p.asyncLoop(p.async)
	}
	select {
	case p.async <- req:
	default:
		p.dropped++
		if p.dropped == 1 {
			p.log.Warn("observability queue full; dropping messages")
		}
	}
}

func (p *procStream) asyncLoop(in chan *extprocsvc.ProcessingRequest) {
	defer func() {
		for range in {
		}
	}()
	if err := p.open(context.Background()); err != nil {
		p.log.Debug("observability stream did not open", zap.Error(err))
		return
	}
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			if _, err := p.st.Recv(); err != nil {
				return
			}
		}
	}()
	for req := range in {
		if err := p.st.Send(req); err != nil {
			p.log.Debug("observability stream send failed", zap.Error(err))
			break
		}
	}
	_ = p.st.CloseSend()
	// Deferred close: give the processor time to finish, then reset.
	select {
	case <-recvDone:
	case <-time.After(p.f.DeferredClose):
	}
	p.cancel()
}

// finish ends the filter's stream at the end of the HTTP request.
func (p *procStream) finish() {
	if p.f.Observability {
		p.asyncOnce.Do(func() {
			if p.async != nil {
				close(p.async)
			}
		})
		return
	}
	p.close()
}

func (p *procStream) close() {
	// The opener may still be connecting: closing waits for it, in the
	// background, so the request path never blocks here.
	go p.closeNow()
}

func (p *procStream) closeNow() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.st == nil || p.cancel == nil {
		return
	}
	st, cancel, recv := p.st, p.cancel, p.recv
	p.cancel = nil
	_ = st.CloseSend()
	go func() {
		// Let the processor see a clean half-close before the reset.
		t := time.NewTimer(time.Second)
		defer t.Stop()
		for {
			select {
			case _, ok := <-recv:
				if !ok {
					cancel()
					return
				}
			case <-t.C:
				cancel()
				return
			}
		}
	}()
}
