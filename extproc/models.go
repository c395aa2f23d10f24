package extproc

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.uber.org/zap"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
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

// isModelsPath reports whether path is exactly /v1/models, with or without
// a query string (the shipped route's exact path match ignores the query
// too). /v1/models/{id} is not: it passes through.
func isModelsPath(path string) bool {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	return path == "/v1/models"
}

// modelsCache holds the last rendered /v1/models body, or nil when the
// last attempt found nothing to answer with (an error, a timeout, a
// scheduler without ListModels, an empty fleet: those requests pass
// through), for ttl. One fetch runs at a time; requests arriving meanwhile
// wait for it within their own deadline.
type modelsCache struct {
	ttl time.Duration

	mu       sync.Mutex
	body     []byte
	until    time.Time
	fetching chan struct{} // closed when the fetch in flight ends
}

// get returns the cached body, fetching it once it expired. fetch returns
// the body and whether to keep it (a fetch that did not ask, because the
// scheduler is known unreachable, is not kept).
func (c *modelsCache) get(ctx context.Context, fetch func() ([]byte, bool)) []byte {
	c.mu.Lock()
	for {
		if time.Now().Before(c.until) {
			b := c.body
			c.mu.Unlock()
			return b
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
	body, keep := fetch()
	c.mu.Lock()
	if keep {
		c.body, c.until = body, time.Now().Add(c.ttl)
	}
	c.fetching = nil
	c.mu.Unlock()
	close(ch)
	return body
}

// modelsBody is the /v1/models body to answer with, nil to pass through.
func (s *Server) modelsBody(ctx context.Context) []byte {
	lister, ok := s.sched.(ModelLister)
	if !ok {
		return nil
	}
	return s.models.get(ctx, func() ([]byte, bool) {
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

// renderModels is OpenAI's list object for resp, nil when it lists no
// model. Entries past maxModelsEntries or maxModelsBody are left off.
func renderModels(resp *llmrouterv1.ListModelsResponse, now time.Time) []byte {
	const head, tail = `{"object":"list","data":[`, `]}`
	out := []byte(head)
	n := 0
	for _, m := range resp.GetModels() {
		if m.GetName() == "" {
			continue
		}
		if n == maxModelsEntries {
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
			continue
		}
		if len(out)+1+len(b)+len(tail) > maxModelsBody {
			break
		}
		if n > 0 {
			out = append(out, ',')
		}
		out = append(out, b...)
		n++
	}
	if n == 0 {
		return nil
	}
	return append(out, tail...)
}

// modelsResponse answers GET /v1/models with body.
func modelsResponse(body []byte) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode_OK},
		Headers: &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setHeader("content-type", "application/json")}},
		Body:    body,
		Details: "llmrouter_models",
	}}}
}
