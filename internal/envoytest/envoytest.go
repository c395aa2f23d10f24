// Package envoytest is a test client that speaks ext_proc to a processor the
// way Envoy's ext_proc filter does (ENVOY-NOTES.md, "ext_proc filter"), so the
// gateway, the integration stand-in and the overhead benchmark can exercise it
// without an Envoy binary:
//
//   - one gRPC stream per HTTP request; one message per phase, in order
//     (request_headers, then request_body), each waiting for exactly one
//     matching answer or an immediate_response;
//   - end_of_stream on headers when the request has no body (no body message
//     follows); BUFFERED bodies arrive as one request_body with end_of_stream;
//     body mode NONE (the WebSocket route override) sends headers only;
//   - message_timeout per message; override_message_timeout honoured once per
//     phase up to max_message_timeout (0 disables it), other fields of such a
//     message ignored;
//   - failure_mode_allow: on a stream error, a timeout, a spurious message or
//     an erroring mutation the request continues unmodified from that point
//     (earlier mutations stay); without it the client gets 500 (504 on timeout);
//   - header values read from raw_value only (a mutation that sets only value
//     yields an empty header, envoy#31555); append_action semantics;
//   - the default mutation rules: set or remove of x-envoy-*, host,
//     :authority, :scheme, :method is refused, and removing any ":" header or
//     host is refused; refused mutations are ignored and recorded, or are an
//     error with DisallowIsError (Envoy's disallow_is_error);
//   - dynamic metadata kept only for receiving namespaces;
//   - observability mode: messages are sent without waiting; answers ignored.
package envoytest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"
)

// Header is one HTTP header; keys are sent lower-cased as Envoy does.
type Header struct{ Key, Value string }

// Get returns the first value of key in hs.
func Get(hs []Header, key string) (string, bool) {
	for _, h := range hs {
		if h.Key == strings.ToLower(key) {
			return h.Value, true
		}
	}
	return "", false
}

// BodyMode is the request body processing mode of the blocking filter.
type BodyMode int

const (
	// Buffered sends the whole body in one message (BUFFERED).
	Buffered BodyMode = iota
	// None never sends the body (NONE; our WebSocket route override).
	None
)

// Filter is a blocking ext_proc filter (our filter #1).
type Filter struct {
	Client extprocv3.ExternalProcessorClient
	// MessageTimeout defaults to Envoy's 200 ms.
	MessageTimeout time.Duration
	// MaxMessageTimeout bounds override_message_timeout; 0 disables it.
	MaxMessageTimeout   time.Duration
	FailureModeAllow    bool
	ReceivingNamespaces []string
	DisallowIsError     bool
	BodyMode            BodyMode
}

// Request is one HTTP request as Envoy's filter sees it.
type Request struct {
	Headers []Header
	// Body is nil for a request without a body (end_of_stream on headers).
	Body []byte
	// Upgrade marks a request whose stream continues after the headers
	// (WebSocket): end_of_stream is false even without Body.
	Upgrade bool
	// BodyMode, when set, overrides the filter's (ExtProcPerRoute).
	BodyMode *BodyMode
}

// Immediate is a local reply the processor asked for.
type Immediate struct {
	Status  int
	Headers []Header
	Body    []byte
	Details string
}

// Event is one thing that happened on the stream, for ordering checks.
type Event struct {
	Kind string // "sent:<phase>", "override", "answer:<phase>", "immediate", "closed", "error"
	At   time.Time
}

// Result is what Envoy would do with the request after the filter.
type Result struct {
	// Headers are the request headers forwarded upstream.
	Headers []Header
	// Metadata is the dynamic metadata kept, by namespace.
	Metadata map[string]*structpb.Struct
	// Immediate is set when the processor answered the client directly.
	Immediate *Immediate
	// Err is the processing failure, if any; with FailureModeAllow the request
	// still continues (Continued) with the headers as they were at the failure.
	Err       error
	Continued bool
	// LocalStatus is Envoy's own reply on failure without FailureModeAllow.
	LocalStatus int
	// Overrides lists the override_message_timeout values honoured.
	Overrides []time.Duration
	// Refused lists refused mutations ("set x-envoy-foo", "remove :path").
	Refused []string
	// ValueOnly lists headers set with value but no raw_value (empty upstream).
	ValueOnly []string
	// DroppedNamespaces lists metadata namespaces not in ReceivingNamespaces.
	DroppedNamespaces []string
	Events            []Event
}

// ErrTimeout is a message timeout.
var ErrTimeout = errors.New("ext_proc message timeout")

// Do runs one request through the filter.
func (f *Filter) Do(ctx context.Context, req Request) *Result {
	res := &Result{Headers: slices.Clone(req.Headers), Metadata: map[string]*structpb.Struct{}}
	mode := f.BodyMode
	if req.BodyMode != nil {
		mode = *req.BodyMode
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := f.Client.Process(ctx)
	if err != nil {
		return f.fail(res, fmt.Errorf("opening stream: %w", err))
	}
	answers := make(chan *extprocv3.ProcessingResponse, 16)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case answers <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() { _ = stream.CloseSend() }()

	sendBody := req.Body != nil && mode == Buffered
	hdrs := &extprocv3.HttpHeaders{Headers: toHeaderMap(req.Headers), EndOfStream: req.Body == nil && !req.Upgrade}
	first := &extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs},
		ProtocolConfig: &extprocv3.ProtocolConfiguration{
			RequestBodyMode:  bodyModeProto(mode),
			ResponseBodyMode: filterv3.ProcessingMode_NONE,
		},
	}
	done, err := f.phase(stream, first, "request_headers", answers, recvErr, res)
	if err != nil {
		return f.fail(res, err)
	}
	if done || !sendBody {
		res.Continued = res.Immediate == nil
		return res
	}
	body := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{
		RequestBody: &extprocv3.HttpBody{Body: req.Body, EndOfStream: true}}}
	if _, err := f.phase(stream, body, "request_body", answers, recvErr, res); err != nil {
		return f.fail(res, err)
	}
	if res.Immediate == nil {
		res.Continued = true
	}
	return res
}

func bodyModeProto(m BodyMode) filterv3.ProcessingMode_BodySendMode {
	if m == None {
		return filterv3.ProcessingMode_NONE
	}
	return filterv3.ProcessingMode_BUFFERED
}

func (f *Filter) fail(res *Result, err error) *Result {
	res.Err = err
	res.Events = append(res.Events, Event{Kind: "error", At: time.Now()})
	if f.FailureModeAllow {
		res.Continued = true
		return res
	}
	res.LocalStatus = 500
	if errors.Is(err, ErrTimeout) {
		res.LocalStatus = 504
	}
	return res
}

// phase sends one message and waits for its answer; done reports an
// immediate response (nothing further is sent).
func (f *Filter) phase(stream extprocv3.ExternalProcessor_ProcessClient, msg *extprocv3.ProcessingRequest, phase string,
	answers <-chan *extprocv3.ProcessingResponse, recvErr <-chan error, res *Result) (done bool, err error) {
	if err := stream.Send(msg); err != nil {
		return false, fmt.Errorf("sending %s: %w", phase, err)
	}
	res.Events = append(res.Events, Event{Kind: "sent:" + phase, At: time.Now()})
	timeout := f.MessageTimeout
	if timeout <= 0 {
		timeout = 200 * time.Millisecond
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	overridden := false
	for {
		var a *extprocv3.ProcessingResponse
		select {
		case a = <-answers:
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				// The processor closed the stream cleanly: Envoy stops
				// processing and lets the request continue as it is.
				res.Events = append(res.Events, Event{Kind: "closed", At: time.Now()})
				return true, nil
			}
			return false, fmt.Errorf("stream ended waiting for the %s answer: %w", phase, err)
		case <-timer.C:
			return false, fmt.Errorf("%w waiting for the %s answer", ErrTimeout, phase)
		}
		if d := a.GetOverrideMessageTimeout(); d != nil {
			// Envoy ignores the rest of such a message; it honours one per
			// phase, within [1ms, max_message_timeout].
			dur := d.AsDuration()
			if f.MaxMessageTimeout > 0 && !overridden && dur >= time.Millisecond && dur <= f.MaxMessageTimeout {
				overridden = true
				timer.Reset(dur)
				res.Overrides = append(res.Overrides, dur)
				res.Events = append(res.Events, Event{Kind: "override", At: time.Now()})
			}
			continue
		}
		if a.Response == nil && a.ModeOverride != nil {
			continue // a standalone mode_override: not used by our filters
		}
		switch r := a.Response.(type) {
		case *extprocv3.ProcessingResponse_ImmediateResponse:
			imm := &Immediate{Status: int(r.ImmediateResponse.GetStatus().GetCode()), Body: r.ImmediateResponse.Body, Details: r.ImmediateResponse.Details}
			if imm.Status == 0 {
				imm.Status = 200
			}
			if err := f.mutate(&imm.Headers, r.ImmediateResponse.Headers, res); err != nil {
				return false, err
			}
			res.Immediate = imm
			res.Events = append(res.Events, Event{Kind: "immediate", At: time.Now()})
			return true, nil
		case *extprocv3.ProcessingResponse_RequestHeaders:
			if phase != "request_headers" {
				return false, fmt.Errorf("spurious request_headers answer to %s", phase)
			}
			if err := f.common(r.RequestHeaders.GetResponse(), res); err != nil {
				return false, err
			}
		case *extprocv3.ProcessingResponse_RequestBody:
			if phase != "request_body" {
				return false, fmt.Errorf("spurious request_body answer to %s", phase)
			}
			if err := f.common(r.RequestBody.GetResponse(), res); err != nil {
				return false, err
			}
		default:
			return false, fmt.Errorf("spurious %T answer to %s", a.Response, phase)
		}
		f.metadata(a.DynamicMetadata, res)
		res.Events = append(res.Events, Event{Kind: "answer:" + phase, At: time.Now()})
		return false, nil
	}
}

func (f *Filter) common(c *extprocv3.CommonResponse, res *Result) error {
	if c == nil {
		return nil
	}
	return f.mutate(&res.Headers, c.HeaderMutation, res)
}

func (f *Filter) metadata(md *structpb.Struct, res *Result) {
	for ns, v := range md.GetFields() {
		if !slices.Contains(f.ReceivingNamespaces, ns) {
			res.DroppedNamespaces = append(res.DroppedNamespaces, ns)
			continue
		}
		if sv := v.GetStructValue(); sv != nil {
			res.Metadata[ns] = sv
		}
	}
}

// refused reports whether the default mutation rules forbid changing key.
func refused(key string) bool {
	return strings.HasPrefix(key, "x-envoy") || key == "host" || key == ":authority" || key == ":scheme" || key == ":method"
}

// mutate applies a header mutation as Envoy does.
func (f *Filter) mutate(hs *[]Header, m *extprocv3.HeaderMutation, res *Result) error {
	if m == nil {
		return nil
	}
	for _, key := range m.RemoveHeaders {
		key = strings.ToLower(key)
		if refused(key) || strings.HasPrefix(key, ":") {
			res.Refused = append(res.Refused, "remove "+key)
			if f.DisallowIsError {
				return fmt.Errorf("mutation refused: remove %s", key)
			}
			continue
		}
		*hs = slices.DeleteFunc(*hs, func(h Header) bool { return h.Key == key })
	}
	for _, o := range m.SetHeaders {
		h := o.GetHeader()
		key := strings.ToLower(h.GetKey())
		if refused(key) {
			res.Refused = append(res.Refused, "set "+key)
			if f.DisallowIsError {
				return fmt.Errorf("mutation refused: set %s", key)
			}
			continue
		}
		if len(h.RawValue) == 0 && h.Value != "" {
			res.ValueOnly = append(res.ValueOnly, key)
		}
		val := string(h.RawValue)
		exists := slices.ContainsFunc(*hs, func(x Header) bool { return x.Key == key })
		action := o.AppendAction
		//lint:ignore SA1019 deprecated, but Envoy still honours append when a processor sets it
		if o.Append != nil {
			action = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			//lint:ignore SA1019 see above
			if o.Append.Value {
				action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
			}
		}
		switch action {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			*hs = append(*hs, Header{key, val})
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			if !exists {
				*hs = append(*hs, Header{key, val})
			}
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD, corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if exists {
				*hs = slices.DeleteFunc(*hs, func(x Header) bool { return x.Key == key })
			}
			if exists || action == corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
				*hs = append(*hs, Header{key, val})
			}
		}
	}
	return nil
}

// toHeaderMap encodes headers as current Envoy does: raw_value only.
func toHeaderMap(hs []Header) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for _, h := range hs {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: strings.ToLower(h.Key), RawValue: []byte(h.Value)})
	}
	return m
}

// Observer is an observability-mode filter (our filter #2): request headers
// SEND (optional), response headers SEND, response body STREAMED.
type Observer struct {
	Client extprocv3.ExternalProcessorClient
	// CloseWait bounds how long Observe waits for the processor to end the
	// stream after the last message (Envoy's deferred close).
	CloseWait time.Duration
}

// Chunk is one piece of a streamed response body, sent after Delay.
type Chunk struct {
	Data  []byte
	Delay time.Duration
}

// Exchange is one request/response as the observability filter sees it.
type Exchange struct {
	// RequestHeaders are sent when non-nil (request_header_mode SEND).
	RequestHeaders  []Header
	ResponseHeaders []Header
	// Chunks is the response body; the last one carries end_of_stream. No
	// chunks: end_of_stream on the response headers.
	Chunks []Chunk
	// Attributes are attached to the response headers message
	// (response_attributes), e.g. upstream.address.
	Attributes map[string]*structpb.Struct
	// Truncate stops after this many chunks without end_of_stream (a reset);
	// 0 sends all.
	Truncate int
	// Forwarded is the dynamic metadata of the forwarding namespaces, sent in
	// metadata_context with every message (pass a Filter Result's Metadata).
	Forwarded map[string]*structpb.Struct
	// NoResponse: the request ended (client cancel, reset, timeout) before
	// any response; only RequestHeaders are sent, then Envoy closes the
	// stream as it does when the request ends.
	NoResponse bool
}

// ObserveResult tells what the processor did on the stream.
type ObserveResult struct {
	// Answers counts messages the processor sent (Envoy ignores them).
	Answers int
	// Sent is when each message left, in order.
	Sent []time.Time
}

// Observe sends the exchange without waiting for answers.
func (o *Observer) Observe(ctx context.Context, ex Exchange) (*ObserveResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := o.Client.Process(ctx)
	if err != nil {
		return nil, err
	}
	res := &ObserveResult{}
	counted := make(chan int, 1)
	go func() {
		n := 0
		for {
			if _, err := stream.Recv(); err != nil {
				counted <- n
				return
			}
			n++
		}
	}()
	send := func(m *extprocv3.ProcessingRequest) error {
		m.ObservabilityMode = true
		if len(ex.Forwarded) > 0 {
			m.MetadataContext = &corev3.Metadata{FilterMetadata: ex.Forwarded}
		}
		res.Sent = append(res.Sent, time.Now())
		return stream.Send(m)
	}
	if ex.RequestHeaders != nil {
		if err := send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{
			RequestHeaders: &extprocv3.HttpHeaders{Headers: toHeaderMap(ex.RequestHeaders)}}}); err != nil {
			return res, err
		}
	}
	if !ex.NoResponse {
		if err := o.respond(ctx, ex, send); err != nil {
			return res, err
		}
	}
	_ = stream.CloseSend()
	wait := o.CloseWait
	if wait <= 0 {
		wait = 5 * time.Second
	}
	select {
	case res.Answers = <-counted:
	case <-time.After(wait):
		cancel()
		res.Answers = <-counted
	}
	return res, nil
}

// respond sends the response headers and body chunks of ex.
func (o *Observer) respond(ctx context.Context, ex Exchange, send func(*extprocv3.ProcessingRequest) error) error {
	if err := send(&extprocv3.ProcessingRequest{
		Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
			Headers: toHeaderMap(ex.ResponseHeaders), EndOfStream: len(ex.Chunks) == 0}},
		Attributes: ex.Attributes,
	}); err != nil {
		return err
	}
	for i, c := range ex.Chunks {
		if ex.Truncate > 0 && i >= ex.Truncate {
			break
		}
		if c.Delay > 0 {
			select {
			case <-time.After(c.Delay):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{
			ResponseBody: &extprocv3.HttpBody{Body: c.Data, EndOfStream: i == len(ex.Chunks)-1}}}); err != nil {
			return err
		}
	}
	return nil
}

// Dial is a convenience for tests: a client of the processor at addr.
func Dial(addr string, opts ...grpc.DialOption) (extprocv3.ExternalProcessorClient, *grpc.ClientConn, error) {
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, nil, err
	}
	return extprocv3.NewExternalProcessorClient(cc), cc, nil
}
