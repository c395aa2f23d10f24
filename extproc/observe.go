package extproc

import (
	"bytes"
	"strconv"
	"strings"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/types/known/durationpb"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
)

// maxSSELine bounds one partial SSE line carried between body chunks.
const maxSSELine = 1 << 20

// usage is token accounting as an engine reports it.
type usage struct {
	prompt, completion, cached int64
	seen                       bool
}

// obsState is filter #2's view of one response.
type obsState struct {
	start     time.Time // this stream's first message
	requestID string
	pickID    string // from the forwarded metadata: the key of the report
	entry     *tracked
	looked    bool // the tracker was consulted
	upstream  string
	meta      *tracked // the request as forwarded metadata describes it
	status    int
	sse       bool

	firstChunk time.Time
	firstToken time.Time
	lastToken  time.Time
	chunks     int64 // token-bearing stream events
	usage      usage

	line    []byte // a partial SSE line carried to the next chunk
	body    []byte // a non-streaming body, bounded
	tooBig  bool
	done    bool
	lastMsg time.Time
}

// observe serves filter #2's stream. Envoy does not wait for answers in
// observability mode and ignores them, so none are sent.
func (s *Server) observe(stream extprocv3.ExternalProcessor_ProcessServer, msg *extprocv3.ProcessingRequest) error {
	o := &obsState{start: time.Now()}
	for {
		now := time.Now()
		o.lastMsg = now
		s.upstreamAttr(o, msg)
		s.forwarded(o, msg)
		switch r := msg.Request.(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			for _, hv := range r.RequestHeaders.GetHeaders().GetHeaders() {
				if strings.EqualFold(hv.Key, HeaderRequestID) {
					o.requestID = headerValue(hv)
				}
			}
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			for _, hv := range r.ResponseHeaders.GetHeaders().GetHeaders() {
				switch strings.ToLower(hv.Key) {
				case ":status":
					o.status, _ = strconv.Atoi(headerValue(hv))
				case "content-type":
					o.sse = strings.HasPrefix(strings.ToLower(strings.TrimSpace(headerValue(hv))), "text/event-stream")
				case HeaderRequestID:
					if o.requestID == "" {
						o.requestID = headerValue(hv)
					}
				}
			}
			if r.ResponseHeaders.EndOfStream {
				s.finish(o, now, "")
			}
		case *extprocv3.ProcessingRequest_ResponseBody:
			s.onResponseBody(o, r.ResponseBody, now)
		case *extprocv3.ProcessingRequest_ResponseTrailers:
			s.finish(o, now, "")
		}
		var err error
		if msg, err = stream.Recv(); err != nil {
			switch {
			case o.done:
			case o.status != 0:
				s.finish(o, time.Now(), "response ended before completion (client or upstream reset)")
			default:
				// Envoy closes the stream when the request ends; with
				// request headers sent (the shipped bootstrap), a stream
				// without a response is a request reset or cancelled before
				// any response: its pick is released here, or it would weigh
				// on the instance until inflight_timeout.
				if s.finish(o, time.Now(), "request ended before any response (client cancel, reset or timeout)") {
					s.m.picksReleased.WithLabelValues(releaseNoResponse).Inc()
				}
			}
			return ignoreEnd(err)
		}
	}
}

// upstreamAttr reads the host that served, when Envoy sends the
// upstream.address attribute (response_attributes).
func (s *Server) upstreamAttr(o *obsState, msg *extprocv3.ProcessingRequest) {
	if o.upstream != "" || len(msg.Attributes) == 0 {
		return
	}
	for _, st := range msg.Attributes {
		if v, ok := st.GetFields()["upstream.address"]; ok && v.GetStringValue() != "" {
			o.upstream = v.GetStringValue()
			return
		}
	}
}

// forwarded reads what filter #1 left in dynamic metadata that Envoy
// forwards to this filter: the request id (GatewayNamespace) and the pick
// (envoy.lb), for requests no header identifies.
func (s *Server) forwarded(o *obsState, msg *extprocv3.ProcessingRequest) {
	fm := msg.GetMetadataContext().GetFilterMetadata()
	if len(fm) == 0 {
		return
	}
	if o.meta != nil {
		return
	}
	gw := fm[GatewayNamespace].GetFields()
	if len(gw) == 0 {
		return
	}
	if o.requestID == "" {
		o.requestID = gw[MetadataKeyRequestID].GetStringValue()
	}
	o.pickID = gw[MetadataKeyPickID].GetStringValue()
	dest := fm[MetadataNamespace].GetFields()[HeaderDestination].GetStringValue()
	if i := strings.IndexByte(dest, ','); i >= 0 {
		dest = dest[:i]
	}
	o.meta = &tracked{
		pickID:       o.pickID,
		requestID:    o.requestID,
		arrival:      time.UnixMicro(int64(gw[metadataKeyArrival].GetNumberValue())),
		model:        gw[metadataKeyModel].GetStringValue(),
		endpoint:     strings.TrimSpace(dest),
		promptTokens: int64(gw[metadataKeyPrompt].GetNumberValue()),
	}
	if gw[metadataKeyArrival] == nil {
		o.meta.arrival = time.Time{}
	}
}

// lookup takes filter #1's record of the request: by the pick id Envoy
// forwards, else (no forwarded metadata) by x-request-id, which names the
// latest of the streams that reused it.
func (s *Server) lookup(o *obsState) *tracked {
	if o.looked {
		return o.entry
	}
	switch {
	case o.pickID != "":
		o.looked = true
		o.entry = s.track.take(o.pickID)
	case o.requestID != "":
		o.looked = true
		o.entry = s.track.takeByRequest(o.requestID)
	}
	return o.entry
}

func (s *Server) onResponseBody(o *obsState, b *extprocv3.HttpBody, now time.Time) {
	if o.done {
		return
	}
	if len(b.Body) > 0 && o.firstChunk.IsZero() {
		o.firstChunk = now
	}
	if o.sse {
		s.sseChunk(o, b.Body, now)
	} else if !o.tooBig {
		if len(o.body)+len(b.Body) > s.opt.MaxObservedBody {
			o.tooBig = true
			o.body = nil
		} else {
			o.body = append(o.body, b.Body...)
		}
	}
	if b.EndOfStream {
		if o.sse && len(o.line) > 0 {
			s.sseLine(o, o.line, now)
			o.line = nil
		}
		if !o.sse && len(o.body) > 0 {
			if u, ok := findUsage(o.body); ok {
				o.usage = u
			}
		}
		s.finish(o, now, "")
	}
}

// sseChunk splits a chunk into lines, carrying a partial last line over.
func (s *Server) sseChunk(o *obsState, chunk []byte, now time.Time) {
	for len(chunk) > 0 {
		i := bytes.IndexByte(chunk, '\n')
		if i < 0 {
			if len(o.line)+len(chunk) <= maxSSELine {
				o.line = append(o.line, chunk...)
			} else {
				o.line = o.line[:0]
			}
			return
		}
		line := chunk[:i]
		if len(o.line) > 0 {
			o.line = append(o.line, line...)
			line = o.line
		}
		s.sseLine(o, line, now)
		o.line = o.line[:0]
		chunk = chunk[i+1:]
	}
}

// sseLine reads one SSE line: data events carry tokens and usage.
func (s *Server) sseLine(o *obsState, line []byte, now time.Time) {
	line = bytes.TrimRight(line, "\r")
	data, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok {
		return
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || bytes.Equal(data, []byte("[DONE]")) {
		return
	}
	tok, u, hasUsage := readEvent(data)
	if hasUsage {
		o.usage = u
	}
	if tok {
		o.chunks++
		if o.firstToken.IsZero() {
			o.firstToken = now
		}
		o.lastToken = now
	}
}

// finish records the outcome once: metrics always, a report to the
// scheduler when the request carried a pick (reported reports whether it did).
func (s *Server) finish(o *obsState, now time.Time, errText string) (reported bool) {
	if o.done {
		return false
	}
	o.done = true
	e := s.lookup(o)
	if e == nil {
		e = o.meta // filter #1 ran on another gateway of a pool
	}
	arrival := o.start
	if e != nil && !e.arrival.IsZero() && e.arrival.Before(arrival) {
		arrival = e.arrival
	}
	model := modelOther
	if e != nil {
		model = s.m.models.label(e.model)
	}
	var ttft, tpot time.Duration
	if !o.firstChunk.IsZero() {
		ttft = o.firstChunk.Sub(arrival)
		s.m.ttft.WithLabelValues(model).Observe(ttft.Seconds())
	}
	completion := o.chunks
	if o.usage.seen {
		completion = o.usage.completion
	}
	if completion > 1 && !o.firstToken.IsZero() && o.lastToken.After(o.firstToken) {
		tpot = o.lastToken.Sub(o.firstToken) / time.Duration(completion-1)
		s.m.tpot.WithLabelValues(model).Observe(tpot.Seconds())
	}
	prompt := o.usage.prompt
	if !o.usage.seen && e != nil {
		prompt = e.promptTokens
	}
	s.m.promptTokens.WithLabelValues(model).Add(float64(prompt))
	s.m.completionTokens.WithLabelValues(model).Add(float64(completion))
	class := "reset"
	if o.status > 0 {
		class = strconv.Itoa(o.status/100) + "xx"
	}
	if errText != "" {
		class = "reset"
	}
	s.m.responses.WithLabelValues(class).Inc()

	if e == nil || e.endpoint == "" {
		return false
	}
	endpoint := e.endpoint
	if o.upstream != "" {
		endpoint = o.upstream
	}
	success := errText == "" && o.status >= 200 && o.status < 400
	if errText == "" && !success {
		errText = "upstream answered " + strconv.Itoa(o.status)
	}
	pickID := e.pickID
	if pickID == "" {
		pickID = o.requestID // filter #1 of an older gateway keyed the pick so
	}
	rep := &llmrouterv1.OutcomeReport{
		RequestId:        pickID,
		Endpoint:         endpoint,
		Model:            e.model,
		Success:          success,
		HttpStatus:       int32(o.status),
		Error:            errText,
		Duration:         durationpb.New(now.Sub(arrival)),
		PromptTokens:     prompt,
		CompletionTokens: completion,
		CachedTokens:     o.usage.cached,
	}
	if ttft > 0 {
		rep.Ttft = durationpb.New(ttft)
	}
	if tpot > 0 {
		rep.Tpot = durationpb.New(tpot)
	}
	s.rep.send(rep)
	s.log.Debug("request completed", zap.String("request_id", o.requestID), zap.String("pick_id", pickID), zap.String("endpoint", endpoint),
		zap.Int("status", o.status), zap.Duration("ttft", ttft), zap.Int64("completion_tokens", completion))
	return true
}

// readEvent reads one SSE data payload: whether it carries output (a
// non-empty delta or text, a tool call, a Responses API delta) and its usage.
func readEvent(data []byte) (token bool, u usage, hasUsage bool) {
	sc := scanner{b: data}
	sc.object(func(k []byte) bool {
		switch string(k) {
		case "usage":
			var ok bool
			u, ok = readUsage(&sc)
			hasUsage = hasUsage || (ok && u.seen)
			return ok
		case "response": // Responses API: response.completed carries usage
			return sc.object(func(k []byte) bool {
				if string(k) == "usage" {
					var ok bool
					u, ok = readUsage(&sc)
					hasUsage = hasUsage || (ok && u.seen)
					return ok
				}
				return sc.skip()
			})
		case "type": // Responses API delta events
			t, ok := sc.strValue()
			if strings.HasSuffix(t, ".delta") {
				token = true
			}
			return ok
		case "choices":
			if sc.peek() != '[' {
				return sc.skip()
			}
			return sc.array(func() bool {
				return sc.object(func(k []byte) bool {
					switch string(k) {
					case "delta":
						if sc.peek() != '{' {
							return sc.skip()
						}
						return sc.object(func(k []byte) bool {
							switch string(k) {
							case "content", "reasoning_content", "reasoning":
								if sc.peek() == '"' {
									raw, ok := sc.str()
									token = token || len(raw) > 0
									return ok
								}
							case "tool_calls":
								if sc.peek() == '[' {
									token = true
								}
							}
							return sc.skip()
						})
					case "text": // completions API
						if sc.peek() == '"' {
							raw, ok := sc.str()
							token = token || len(raw) > 0
							return ok
						}
					}
					return sc.skip()
				})
			})
		}
		return sc.skip()
	})
	return token, u, hasUsage
}

// readUsage reads an OpenAI usage object (Chat/Completions or Responses
// naming); null gives seen=false.
func readUsage(sc *scanner) (usage, bool) {
	var u usage
	if sc.peek() == 'n' {
		return u, sc.literal()
	}
	cached := func() bool {
		if sc.peek() != '{' {
			return sc.skip()
		}
		return sc.object(func(k []byte) bool {
			if string(k) == "cached_tokens" {
				var ok bool
				u.cached, ok = sc.int64Value()
				return ok
			}
			return sc.skip()
		})
	}
	ok := sc.object(func(k []byte) bool {
		var ok bool
		switch string(k) {
		case "prompt_tokens", "input_tokens":
			u.prompt, ok = sc.int64Value()
			u.seen = true
			return ok
		case "completion_tokens", "output_tokens":
			u.completion, ok = sc.int64Value()
			u.seen = true
			return ok
		case "prompt_tokens_details", "input_tokens_details":
			return cached()
		}
		return sc.skip()
	})
	return u, ok
}

// findUsage finds the usage object of a whole JSON response. OpenAI-style
// servers put it last, so the last unescaped "usage" key is read, without
// parsing the rest (an embeddings response can be megabytes of floats).
func findUsage(body []byte) (usage, bool) {
	b := body
	for {
		i := bytes.LastIndex(b, []byte(`"usage"`))
		if i < 0 {
			return usage{}, false
		}
		if i == 0 || body[i-1] != '\\' {
			sc := scanner{b: body, i: i + len(`"usage"`)}
			if sc.consume(':') {
				if u, ok := readUsage(&sc); ok && u.seen {
					return u, true
				}
			}
		}
		b = body[:i]
	}
}
