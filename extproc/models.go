package extproc

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.uber.org/zap"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/clip"
	"github.com/llmrouter/llmrouter/internal/reglimits"
)

// ModelLister is implemented by a Scheduler that lists the models the
// fleet serves (the in-process scheduler, and schedclient over
// PickerService.ListModels). The gateway then answers GET /v1/models
// itself with the whole fleet's models; without it, or while it cannot
// answer, the request passes through and one engine answers, as Envoy's
// round robin chooses.
type ModelLister interface {
	ListModels(ctx context.Context, req *llmrouterv1.ListModelsRequest) (*llmrouterv1.ListModelsResponse, error)
}

// DefaultModelsCacheTTL is how long one model list is served before the
// scheduler is asked again: a client polling /v1/models costs the
// scheduler one call a second per gateway at most.
const DefaultModelsCacheTTL = time.Second

// Bounds of the cached /v1/models body, whatever the scheduler sends (an
// older or foreign one included); past either the list stops there. They
// sit above the scheduler's own (scheduler.MaxListedModels names,
// scheduler.MaxListedModelBytes bytes of names) plus each entry's JSON.
const (
	maxModelsEntries = 1024
	maxModelsBody    = 512 << 10
)

// modelsOwner is the owned_by of every listed model: the fleet's models
// are served by llmrouter's engines, not by their makers.
const modelsOwner = "llmrouter"

// modelsPrefix starts the path of OpenAI's model retrieval,
// GET /v1/models/{id}.
const modelsPrefix = "/v1/models/"

// maxModelPath bounds the id part of a GET /v1/models/{id} path the
// gateway reads: a name a registration may carry (reglimits.MaxNameBytes)
// with every byte escaped.
const maxModelPath = 3 * reglimits.MaxNameBytes

// modelsPath reads a GET path the gateway answers from the fleet's model
// list: exactly /v1/models (list: the list), or /v1/models/{id} (id: the
// model to retrieve, unescaped; ids hold '/' and ':' as they are, or
// escaped as clients' SDKs send them). The query string is ignored, as the
// shipped routes ignore it. ok is false for any other path, and for
// /v1/models/ with no id. bad is set, id empty, when the id part cannot be
// a served name: longer than maxModelPath, or not validly escaped.
func modelsPath(path string) (list bool, id string, bad, ok bool) {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if path == "/v1/models" {
		return true, "", false, true
	}
	raw, found := strings.CutPrefix(path, modelsPrefix)
	if !found || raw == "" {
		return false, "", false, false
	}
	if len(raw) > maxModelPath {
		return false, "", true, true
	}
	id, err := url.PathUnescape(raw)
	if err != nil || id == "" {
		return false, "", true, true
	}
	return false, id, false, true
}

// modelList is one rendered answer of the scheduler's ListModels.
type modelList struct {
	// body is the GET /v1/models answer.
	body []byte
	// entries are the listed models' objects, as body holds them (sub-slices
	// of it), by name: GET /v1/models/{id}'s answer.
	entries map[string]modelEntry
	// complete: every model the scheduler listed is in entries (it cut
	// nothing, nor did renderModels), so a name missing from it is served
	// by no routable instance.
	complete bool
}

type modelEntry struct {
	object []byte
}

// modelsCache holds the last rendered model list, or nil when the last
// attempt found nothing to answer with (an error, a timeout, a scheduler
// without ListModels, an empty fleet: those requests pass through), for
// ttl. One fetch runs at a time; requests arriving meanwhile wait for it
// within their own deadline.
type modelsCache struct {
	ttl time.Duration

	mu       sync.Mutex
	list     *modelList
	until    time.Time
	fetching chan struct{} // closed when the fetch in flight ends
}

// get returns the cached list, fetching it once it expired. fetch returns
// the list and whether to keep it (a fetch that did not ask, because the
// scheduler is known unreachable, is not kept).
func (c *modelsCache) get(ctx context.Context, fetch func() (*modelList, bool)) *modelList {
	c.mu.Lock()
	for {
		if time.Now().Before(c.until) {
			l := c.list
			c.mu.Unlock()
			return l
		}
		if c.fetching == nil {
			break
		}
		ch := c.fetching
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		}
		c.mu.Lock()
	}
	ch := make(chan struct{})
	c.fetching = ch
	c.mu.Unlock()
	list, keep := fetch()
	c.mu.Lock()
	if keep {
		c.list, c.until = list, time.Now().Add(c.ttl)
	}
	c.fetching = nil
	c.mu.Unlock()
	close(ch)
	return list
}

// answerModels answers GET /v1/models (list) or GET /v1/models/{id} (id;
// bad: an id that cannot be a served name) from the fleet's model list,
// or lets the request continue unchanged to Envoy's round robin whenever
// the gateway has no list, or for a retrieval, no list that can tell.
func (s *Server) answerModels(ctx context.Context, st *reqState, mut *extprocv3.HeaderMutation, list bool, id string, bad bool) *extprocv3.ProcessingResponse {
	l := s.modelList(ctx)
	if l != nil && list {
		s.m.requests.WithLabelValues(apiModels, "answered", modelOther).Inc()
		return modelsResponse(l.body)
	}
	if l != nil {
		if e, ok := l.entries[id]; ok && !bad {
			s.m.requests.WithLabelValues(apiModels, "answered", modelOther).Inc()
			return modelsResponse(e.object)
		}
		// Not listed. Unless the list may be missing it (cut), nobody
		// serves it: the 404 a POST naming it gets. SGLang's base:adapter
		// names, routed unlisted, too: no engine retrieves one (SGLang's
		// /v1/models/{model} finds its served base model alone, vLLM has no
		// such route), so passing it on could only bring an engine's 404,
		// vLLM's not in OpenAI's shape.
		if bad || l.complete {
			s.m.requests.WithLabelValues(apiModels, "rejected", modelOther).Inc()
			shown := id
			if bad { // as sent, without the query
				shown, _, _ = strings.Cut(strings.TrimPrefix(st.path, modelsPrefix), "?")
			}
			return immediate(404, "invalid_request_error", "model_not_found", "model_not_found",
				fmt.Sprintf("The model `%s` does not exist.", clip.Input(shown)), 0)
		}
	}
	reason := "models_unlisted"
	if s.Degraded() {
		reason = "degraded"
	}
	return s.passHeaders(st, mut, reason)
}

// modelList is the fleet's model list to answer with, nil to pass through.
func (s *Server) modelList(ctx context.Context) *modelList {
	lister, ok := s.sched.(ModelLister)
	if !ok {
		return nil
	}
	return s.models.get(ctx, func() (*modelList, bool) {
		if s.Degraded() {
			return nil, false
		}
		// The pick deadline bounds the call, below Envoy's message timeout,
		// so a slow scheduler costs the client that much before its request
		// passes through. Not the client's stream: the answer serves every
		// request waiting for it.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opt.PickTimeout)
		defer cancel()
		resp, err := lister.ListModels(fctx, &llmrouterv1.ListModelsRequest{})
		if err != nil {
			s.log.Debug("model list unavailable, GET /v1/models passes through", zap.Error(err))
			return nil, true
		}
		return renderModels(resp, time.Now()), true
	})
}

// openAIModel is one entry of OpenAI's model list; parent names an
// adapter's base model as vLLM's /v1/models does.
type openAIModel struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	Parent  string `json:"parent,omitempty"`
}

// renderModels is OpenAI's list object for resp and each listed model's
// object, nil when it lists no model. Entries past maxModelsEntries or
// maxModelsBody are left off (the list is then not complete).
func renderModels(resp *llmrouterv1.ListModelsResponse, now time.Time) *modelList {
	const head, tail = `{"object":"list","data":[`, `]}`
	out := []byte(head)
	type span struct {
		name       string
		start, end int
	}
	var spans []span
	complete := !resp.GetTruncated()
	for _, m := range resp.GetModels() {
		if m.GetName() == "" {
			continue
		}
		if len(spans) == maxModelsEntries {
			complete = false
			break
		}
		e := openAIModel{ID: m.GetName(), Object: "model", Created: m.GetCreatedUnix(), OwnedBy: modelsOwner}
		if e.Created <= 0 {
			e.Created = now.Unix()
		}
		if m.GetLoraAdapter() {
			e.Parent = m.GetParent()
		}
		b, err := json.Marshal(e)
		if err != nil {
			complete = false
			continue
		}
		if len(out)+1+len(b)+len(tail) > maxModelsBody {
			complete = false
			break
		}
		if len(spans) > 0 {
			out = append(out, ',')
		}
		spans = append(spans, span{name: e.ID, start: len(out), end: len(out) + len(b)})
		out = append(out, b...)
	}
	if len(spans) == 0 {
		return nil
	}
	out = append(out, tail...)
	l := &modelList{body: out, entries: make(map[string]modelEntry, len(spans)), complete: complete}
	for _, sp := range spans {
		if _, dup := l.entries[sp.name]; !dup { // the scheduler lists each name once; a foreign one might not
			l.entries[sp.name] = modelEntry{object: out[sp.start:sp.end:sp.end]}
		}
	}
	return l
}

// modelsResponse answers GET /v1/models with body, or GET /v1/models/{id}
// with the model's object.
func modelsResponse(body []byte) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode_OK},
		Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setHeader("content-type", "application/json")}},
		Body:    body,
		Details: "llmrouter_models",
	}}}
}
