package extproc

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/clip"
	"github.com/llmrouter/llmrouter/internal/prompthash"
	"github.com/llmrouter/llmrouter/internal/sessionkey"
)

// reqState is filter #1's view of one request.
type reqState struct {
	arrival   time.Time
	api       llmrouterv1.ApiKind
	method    string
	path      string
	requestID string // x-request-id: logs and correlation only (clients may reuse it)
	// pickID keys this stream's pick at the scheduler and in the tracker:
	// unique per stream, generated here, never taken from the client.
	pickID   string
	picked   bool // the scheduler committed a pick for this stream
	session  string
	priority int32
	model    string // from headers
	lora     string // x-lora-adapter
	decided  bool   // the request's fate is settled; later messages just continue
	models   bool   // GET /v1/models or /v1/models/{id}: the gateway answers it from the fleet's list

	sendMu   sync.Mutex
	stream   extprocv3.ExternalProcessor_ProcessServer
	override bool // override_message_timeout already sent in this phase
}

func (st *reqState) send(r *extprocv3.ProcessingResponse) error {
	st.sendMu.Lock()
	defer st.sendMu.Unlock()
	return st.stream.Send(r)
}

// blocking serves filter #1's stream: one answer per message, in order.
func (s *Server) blocking(stream extprocv3.ExternalProcessor_ProcessServer, msg *extprocv3.ProcessingRequest) error {
	st := &reqState{arrival: time.Now(), stream: stream, pickID: newRequestID()}
	for {
		var resp *extprocv3.ProcessingResponse
		switch r := msg.Request.(type) {
		case *extprocv3.ProcessingRequest_RequestHeaders:
			resp = s.onRequestHeaders(stream.Context(), st, r.RequestHeaders)
		case *extprocv3.ProcessingRequest_RequestBody:
			resp = s.onRequestBody(stream.Context(), st, r.RequestBody)
			releaseBody(r.RequestBody) // nothing refers to the body any more
		case *extprocv3.ProcessingRequest_RequestTrailers:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}
		case *extprocv3.ProcessingRequest_ResponseHeaders:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
		case *extprocv3.ProcessingRequest_ResponseBody:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
		case *extprocv3.ProcessingRequest_ResponseTrailers:
			resp = &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}
		}
		if resp != nil {
			if err := st.send(resp); err != nil {
				// Envoy never got the answer, so no response will carry
				// this stream's pick to filter #2: release it here.
				s.abandonPick(st)
				return ignoreEnd(err)
			}
		}
		var err error
		if msg, err = stream.Recv(); err != nil {
			return ignoreEnd(err)
		}
		st.override = false
	}
}

func (s *Server) onRequestHeaders(ctx context.Context, st *reqState, h *extprocv3.HttpHeaders) *extprocv3.ProcessingResponse {
	var mut extprocv3.HeaderMutation
	upgrade := ""
	var hdrModel string
	for _, hv := range h.GetHeaders().GetHeaders() {
		key := strings.ToLower(hv.Key)
		if key == s.opt.TrustedPriorityHeader {
			if p, err := strconv.ParseInt(strings.TrimSpace(headerValue(hv)), 10, 32); err == nil {
				st.priority = int32(p)
			}
		}
		switch key {
		case ":method":
			st.method = headerValue(hv)
		case ":path":
			st.path = headerValue(hv)
		case HeaderRequestID:
			st.requestID = headerValue(hv)
		case HeaderSessionID:
			st.session = headerValue(hv)
		case HeaderPriority:
			// Read above only when it is the trusted source; never sent on.
			mut.RemoveHeaders = append(mut.RemoveHeaders, HeaderPriority)
		case HeaderModel:
			hdrModel = headerValue(hv)
		case HeaderLoRA:
			st.lora = headerValue(hv)
		case "upgrade":
			upgrade = strings.ToLower(headerValue(hv))
		case HeaderDestination, HeaderPrefiller, HeaderPrefillerBootstrap:
			// A client must never steer routing: drop what it sent.
			mut.RemoveHeaders = append(mut.RemoveHeaders, key)
		}
	}
	if st.requestID == "" {
		// Envoy generates x-request-id unless told not to; without one the
		// observability filter could not find this request, so add it.
		st.requestID = newRequestID()
		mut.SetHeaders = append(mut.SetHeaders, setHeader(HeaderRequestID, st.requestID))
	}
	if list, id, bad, ok := modelsPath(st.path); ok && st.method == "GET" && upgrade == "" {
		st.decided, st.models = true, true
		return s.answerModels(ctx, st, &mut, list, id, bad)
	}
	st.api = APIForPath(st.path)
	if hdrModel == "" {
		hdrModel = queryModel(st.path)
	}
	st.model = hdrModel

	switch {
	case upgrade == "websocket":
		st.api = llmrouterv1.ApiKind_API_KIND_WEBSOCKET
		st.decided = true
		if st.model == "" {
			return s.passHeaders(st, &mut, "no_model")
		}
		return s.decide(ctx, st, &mut, s.headerPick(st), true)
	case h.EndOfStream:
		st.decided = true
		if st.api == llmrouterv1.ApiKind_API_KIND_UNSPECIFIED {
			return s.passHeaders(st, &mut, "path")
		}
		if st.model == "" {
			return s.passHeaders(st, &mut, "no_body")
		}
		return s.decide(ctx, st, &mut, s.headerPick(st), true)
	case st.api == llmrouterv1.ApiKind_API_KIND_UNSPECIFIED:
		st.decided = true
		return s.passHeaders(st, &mut, "path")
	case st.method != "" && st.method != "POST":
		st.decided = true
		return s.passHeaders(st, &mut, "method")
	}
	// The body follows; the pick is written in the body response.
	return headersResponse(&mut, nil)
}

// headerPick is the pick request of a request decided from headers alone.
func (s *Server) headerPick(st *reqState) *llmrouterv1.PickRequest {
	return &llmrouterv1.PickRequest{
		RequestId:   st.pickID,
		Model:       st.model,
		Api:         st.api,
		BlockChars:  int32(s.opt.BlockChars),
		SessionKey:  sessionkey.Digest(st.session),
		Priority:    st.priority,
		LoraAdapter: loraFor(st.lora, st.model),
	}
}

// loraFor names the adapter a request asks for. vLLM and SGLang serve each
// loaded adapter under its own model name, so the model is the adapter
// candidate unless a header names one; the scheduler prefers instances that
// report it loaded and ignores it when none (a base model) or all do.
func loraFor(header, model string) string {
	if header != "" {
		return header
	}
	return model
}

func (s *Server) onRequestBody(ctx context.Context, st *reqState, b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	if st.decided {
		return bodyResponse(nil, nil)
	}
	if !b.EndOfStream {
		// Envoy streams the body (STREAMED or BUFFERED_PARTIAL): the upstream
		// host is chosen before the body is complete, so no pick can apply.
		st.decided = true
		return s.passBody(st, "body_not_buffered")
	}
	st.decided = true
	start := time.Now()
	bufp := s.bufPool.Get().(*[]byte)
	defer s.bufPool.Put(bufp)
	body, err := ParseBody(st.api, b.Body, s.opt.MaxHashedChars, (*bufp)[:0])
	*bufp = body.Prefix[:0]
	if err != nil {
		s.log.Debug("request body not understood, passing through", zap.String("request_id", st.requestID), zap.Error(err))
		return s.passBody(st, "bad_body")
	}
	if body.Model == "" {
		body.Model = st.model
	}
	if body.Model == "" {
		return s.passBody(st, "no_model")
	}
	st.model = body.Model
	hp := s.hashes.Get().(*[]uint64)
	defer s.hashes.Put(hp)
	hashes, head := prompthash.Tiered((*hp)[:0], prompthash.Seed(seedModel(&body), body.CacheSalt), bytesString(body.Prefix),
		s.opt.BlockChars, s.opt.MaxPrefixChars, s.opt.TailBlockChars, s.opt.MaxHashedChars)
	*hp = hashes[:0]
	var tailChars, headBlocks int32
	if head < len(hashes) {
		tailChars, headBlocks = int32(s.opt.TailBlockChars), int32(head)
	}
	session := st.session
	if session == "" {
		session = body.User
	}
	req := &llmrouterv1.PickRequest{
		RequestId:         st.pickID,
		Model:             body.Model,
		Api:               st.api,
		PromptBlockHashes: append([]uint64(nil), hashes...),
		BlockChars:        int32(s.opt.BlockChars),
		TailBlockChars:    tailChars,
		HeadBlocks:        headBlocks,
		PromptTokens:      prompthash.EstimateTokens(body.PromptChars, s.opt.CharsPerToken),
		MaxTokens:         body.MaxTokens,
		Stream:            body.Stream,
		SessionKey:        sessionkey.Digest(session),
		Priority:          st.priority,
		LoraAdapter:       loraFor(st.lora, body.Model),
		LoraPath:          body.LoRAPath,
	}
	resp := s.decide(ctx, st, &extprocv3.HeaderMutation{}, req, false)
	s.m.pickDuration.Observe(time.Since(start).Seconds())
	return resp
}

// seedModel is the model a request's prompt hashes are seeded with: an
// adapter's cached prefixes are its own, so SGLang's model plus lora_path
// hashes as the same request written "model:lora_path" does.
func seedModel(b *Body) string {
	if b.LoRAPath == "" || strings.Contains(b.Model, ":") {
		return b.Model
	}
	return b.Model + ":" + b.LoRAPath
}

// bytesString views b as a string without copying; the caller does not
// modify b while the string is in use (hashing only).
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// decide asks the scheduler and turns its answer into Envoy's response to
// the current phase (headers when onHeaders, else body).
func (s *Server) decide(ctx context.Context, st *reqState, mut *extprocv3.HeaderMutation, req *llmrouterv1.PickRequest, onHeaders bool) *extprocv3.ProcessingResponse {
	pass := func(reason string) *extprocv3.ProcessingResponse {
		if onHeaders {
			return s.passHeaders(st, mut, reason)
		}
		return s.passBody(st, reason)
	}
	api := apiLabel(int32(st.api))
	now := time.Now()
	if !s.health.allow(now) {
		s.noteHealth()
		s.m.requests.WithLabelValues(api, "degraded", s.m.models.label(req.Model)).Inc()
		s.m.passthrough.WithLabelValues("degraded").Inc()
		s.trackPassthrough(st, req.PromptTokens)
		return pass2(st, onHeaders, mut, req.PromptTokens)
	}
	s.m.pending.Inc()
	resp, err := s.pick(ctx, st, req)
	s.m.pending.Dec()
	if err != nil {
		if status.Code(err) != codes.Unavailable {
			// The scheduler may have committed a pick whose answer was lost
			// (a timeout or cancel racing it): release it by its id.
			s.releasePick(st.pickID, releasePickFailed, "pick abandoned: "+err.Error())
		}
		if ctx.Err() != nil {
			// Envoy gave up on this stream; nobody reads the answer.
			return pass("cancelled")
		}
		// A refused token will not fix itself: open the breaker at once
		// (requests pass through) and say so, not "unreachable".
		auth := status.Code(err) == codes.Unauthenticated
		s.unauthenticated.Store(auth)
		hard := status.Code(err) == codes.Unavailable || auth
		s.health.failure(time.Now(), hard)
		s.noteHealth()
		s.log.Debug("pick failed, passing through", zap.String("request_id", st.requestID), zap.Error(err))
		return pass("scheduler_error")
	}
	wasUnauth := s.unauthenticated.Swap(false)
	if s.health.success() || wasUnauth {
		s.noteHealth()
	}
	if resp.Pool != "" && resp.Pool == req.Model {
		s.m.models.served(req.Model)
	}
	model := s.m.models.label(req.Model)
	switch resp.Status {
	case llmrouterv1.PickResponse_ROUTED:
		if len(resp.Endpoints) == 0 {
			return pass("no_endpoint")
		}
		dest := strings.Join(resp.Endpoints, ",")
		mut.SetHeaders = append(mut.SetHeaders, setHeader(HeaderDestination, dest))
		if resp.PrefillEndpoint != "" {
			mut.SetHeaders = append(mut.SetHeaders, setHeader(HeaderPrefiller, resp.PrefillEndpoint))
			if resp.PrefillBootstrapPort > 0 {
				mut.SetHeaders = append(mut.SetHeaders, setHeader(HeaderPrefillerBootstrap, strconv.Itoa(int(resp.PrefillBootstrapPort))))
			}
		}
		md := decisionMetadata(st, req.PromptTokens)
		md.Fields[MetadataNamespace] = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			HeaderDestination: structpb.NewStringValue(dest),
		}})
		s.m.requests.WithLabelValues(api, "routed", model).Inc()
		st.picked = true
		s.track.put(&tracked{pickID: st.pickID, requestID: st.requestID, arrival: st.arrival, model: req.Model, api: st.api,
			endpoint: resp.Endpoints[0], promptTokens: req.PromptTokens}, time.Now())
		if onHeaders {
			return headersResponse(mut, md)
		}
		return bodyResponse(mut, md)
	case llmrouterv1.PickResponse_REJECTED:
		switch resp.HttpStatus {
		case 429:
			s.m.requests.WithLabelValues(api, "rejected", model).Inc()
			retry := resp.RetryAfterSeconds
			if retry <= 0 {
				retry = 1
			}
			msg := clip.Prefix(resp.Reason, maxReason)
			if msg == "" {
				msg = "every instance is busy; retry later"
			}
			// The scheduler sheds load this way: its queue full, or a
			// request's wait_schedule_timeout over with every instance
			// saturated (scheduler/admission).
			return immediate(429, "requests", "rate_limit_exceeded", "overloaded", msg, retry)
		case 404:
			s.m.requests.WithLabelValues(api, "rejected", model).Inc()
			msg := clip.Prefix(resp.Reason, maxReason)
			if msg == "" {
				msg = fmt.Sprintf("The model `%s` does not exist.", clip.Input(req.Model))
			}
			return immediate(404, "invalid_request_error", "model_not_found", "model_not_found", msg, 0)
		}
		return pass("rejected_" + strconv.Itoa(int(resp.HttpStatus)))
	case llmrouterv1.PickResponse_PASSTHROUGH:
		// Every candidate is silent but still in EDS: Envoy balances.
		return pass("scheduler_passthrough")
	}
	return pass("bad_pick_status")
}

// maxReason bounds the scheduler's reason in an error body: the scheduler
// quotes only a prefix of the client's input (clip.Input), and an older or
// foreign scheduler is cut here.
const maxReason = 1024

// pass2 answers without a pick after the caller counted the request.
func pass2(st *reqState, onHeaders bool, mut *extprocv3.HeaderMutation, promptTokens int64) *extprocv3.ProcessingResponse {
	if onHeaders {
		return headersResponse(mut, decisionMetadata(st, promptTokens))
	}
	return bodyResponse(mut, decisionMetadata(st, promptTokens))
}

// decisionMetadata is the GatewayNamespace metadata of a settled request:
// its request id, which the observability filter receives back (forwarding
// namespaces) to find the request even when no header carries the id.
func decisionMetadata(st *reqState, promptTokens int64) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		GatewayNamespace: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			MetadataKeyRequestID: structpb.NewStringValue(st.requestID),
			MetadataKeyPickID:    structpb.NewStringValue(st.pickID),
			metadataKeyModel:     structpb.NewStringValue(st.model),
			metadataKeyArrival:   structpb.NewNumberValue(float64(st.arrival.UnixMicro())),
			metadataKeyPrompt:    structpb.NewNumberValue(float64(promptTokens)),
		}}),
	}}
}

// Further GatewayNamespace keys: with a pool of gateways, filter #2's stream
// may reach another gateway than filter #1's, which then knows the request
// only from this metadata.
const (
	metadataKeyModel   = "model"
	metadataKeyArrival = "arrival_unix_us"
	metadataKeyPrompt  = "prompt_tokens"
)

// pick runs one Pick with the gateway's deadlines: PickTimeout until the
// scheduler says the request is queued; then Envoy's message timeout is
// extended first and the wait is bounded by it.
func (s *Server) pick(ctx context.Context, st *reqState, req *llmrouterv1.PickRequest) (*llmrouterv1.PickResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.AfterFunc(s.opt.PickTimeout, cancel)
	defer timer.Stop()
	override := s.opt.WaitScheduleTimeout + QueueTimeoutSlack
	queued := func(*llmrouterv1.PickResponse) {
		if !timer.Stop() {
			return // the pick already timed out
		}
		st.sendMu.Lock()
		first := !st.override
		st.override = true
		var err error
		if first {
			err = st.stream.Send(&extprocv3.ProcessingResponse{OverrideMessageTimeout: durationpb.New(override)})
		}
		st.sendMu.Unlock()
		if err != nil {
			cancel()
			return
		}
		// Give up a little before Envoy would, so the answer (a pass
		// through at worst) still arrives in time.
		timer.Reset(override - 200*time.Millisecond)
	}
	resp, err := s.sched.Pick(ctx, req, queued)
	switch {
	case err == nil && resp == nil:
		err = status.Error(codes.Internal, "scheduler returned no answer")
	case err != nil && parentDone(st):
		err = context.Canceled
	case err != nil && ctx.Err() != nil && status.Code(err) != codes.Unavailable:
		err = status.Errorf(codes.DeadlineExceeded, "pick timed out: %v", err)
	}
	return resp, err
}

func parentDone(st *reqState) bool { return st.stream.Context().Err() != nil }

// trackPassthrough keeps a request without a pick for the observability
// filter (TTFT and tokens still count).
func (s *Server) trackPassthrough(st *reqState, promptTokens int64) {
	s.track.put(&tracked{pickID: st.pickID, requestID: st.requestID, arrival: st.arrival, model: st.model, api: st.api, promptTokens: promptTokens}, time.Now())
}

// abandonPick releases the stream's pick when its answer cannot have reached
// Envoy: no response will carry it, so filter #2 never reports it.
func (s *Server) abandonPick(st *reqState) {
	if !st.picked {
		return
	}
	st.picked = false
	s.track.take(st.pickID)
	s.releasePick(st.pickID, releaseAnswerLost, "the stream ended before the pick reached Envoy")
}

// releasePick tells the scheduler to forget pick id without an outcome; an
// id it never committed is ignored there.
func (s *Server) releasePick(pickID, reason, text string) {
	s.m.picksReleased.WithLabelValues(reason).Inc()
	s.rep.send(&llmrouterv1.OutcomeReport{RequestId: pickID, Error: text})
}

func (s *Server) passHeaders(st *reqState, mut *extprocv3.HeaderMutation, reason string) *extprocv3.ProcessingResponse {
	s.countPass(st, reason)
	return headersResponse(mut, decisionMetadata(st, 0))
}

func (s *Server) passBody(st *reqState, reason string) *extprocv3.ProcessingResponse {
	s.countPass(st, reason)
	return bodyResponse(nil, decisionMetadata(st, 0))
}

func (s *Server) countPass(st *reqState, reason string) {
	api := apiLabel(int32(st.api))
	if st.models {
		api = apiModels
	}
	s.m.requests.WithLabelValues(api, "passthrough", s.m.models.label(st.model)).Inc()
	s.m.passthrough.WithLabelValues(reason).Inc()
	if reason != "cancelled" {
		s.trackPassthrough(st, 0)
	}
}

func emptyMutation(m *extprocv3.HeaderMutation) bool {
	return m == nil || (len(m.SetHeaders) == 0 && len(m.RemoveHeaders) == 0)
}

func headersResponse(mut *extprocv3.HeaderMutation, md *structpb.Struct) *extprocv3.ProcessingResponse {
	cr := &extprocv3.CommonResponse{}
	if !emptyMutation(mut) {
		cr.HeaderMutation = mut
	}
	return &extprocv3.ProcessingResponse{
		Response:        &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{Response: cr}},
		DynamicMetadata: md,
	}
}

func bodyResponse(mut *extprocv3.HeaderMutation, md *structpb.Struct) *extprocv3.ProcessingResponse {
	cr := &extprocv3.CommonResponse{}
	if !emptyMutation(mut) {
		cr.HeaderMutation = mut
	}
	return &extprocv3.ProcessingResponse{
		Response:        &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{Response: cr}},
		DynamicMetadata: md,
	}
}

// immediate answers the client directly in OpenAI's error shape.
func immediate(code int, typ, errCode, details, msg string, retryAfter int32) *extprocv3.ProcessingResponse {
	body, _ := json.Marshal(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": errCode}})
	hdrs := []*corev3.HeaderValueOption{setHeader("content-type", "application/json")}
	if retryAfter > 0 {
		hdrs = append(hdrs, setHeader("retry-after", strconv.Itoa(int(retryAfter))))
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(code)},
		Headers: &extprocv3.HeaderMutation{SetHeaders: hdrs},
		Body:    body,
		Details: "llmrouter_" + details,
	}}}
}

// queryModel reads model= from a path's query string.
func queryModel(path string) string {
	i := strings.IndexByte(path, '?')
	if i < 0 {
		return ""
	}
	q, err := url.ParseQuery(path[i+1:])
	if err != nil {
		return ""
	}
	return q.Get("model")
}
