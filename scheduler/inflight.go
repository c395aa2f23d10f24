package scheduler

import (
	"context"
	"time"

	"go.uber.org/zap"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/sessionkey"
	"github.com/llmrouter/llmrouter/scheduler/admission"
)

// pick is one committed decision whose outcome no gateway reported yet.
type pick struct {
	reqID    string
	inst     *inst
	at       time.Time
	prompt   int64 // prompt tokens, counted until a report shows the request
	decode   int64 // expected output tokens, counted until completion
	seen     bool  // an agent report's counts show the request (markSeen)
	released bool
}

// commit records a pick on in. The request's prompt and one request count
// as "not yet visible" until a report's counts show it (markSeen); the expected
// output counts until the gateway reports completion (engines report no
// per-request progress, so the decode estimate stays whole until then).
func (s *Scheduler) commit(reqID string, in *inst, prompt, maxTokens int64) *pick {
	if old := s.inflight[reqID]; old != nil {
		// The same request id picked twice: the gateway's ids are unique per
		// stream, so this is another client of the picker API reusing one.
		// The older pick can no longer be told apart, so it is released.
		s.release(old)
		s.m.fallbacks.WithLabelValues(fallbackReplaced).Inc()
	}
	if maxTokens <= 0 {
		maxTokens = defaultDecodeTokens
	}
	p := &pick{reqID: reqID, inst: in, at: s.clock.Now(), prompt: max(prompt, 0), decode: maxTokens}
	s.inflight[reqID] = p
	// Released picks stay in fifo and unseen until Tick or the next report
	// skips them; compact here too, so the lists stay proportional to the
	// live picks even when neither comes for a while.
	if live := len(s.inflight); len(s.fifo)-s.fifoHead > 2*live+1024 {
		s.fifo = compact(s.fifo[s.fifoHead:], s.fifo)
		s.fifoHead = 0
	}
	s.fifo = append(s.fifo, p)
	if len(in.unseen) > 2*int(in.view.InflightRequests)+64 {
		in.unseen = compact(in.unseen, in.unseen)
	}
	in.unseen = append(in.unseen, p)
	in.picks++
	in.view.InflightRequests++
	in.view.InflightPromptTokens += p.prompt
	in.view.InflightDecodeTokens += p.decode
	admission.Remember(&in.view)
	s.m.inflight.Set(float64(len(s.inflight)))
	return p
}

// release ends a pick's bookkeeping (completion, timeout, instance gone).
func (s *Scheduler) release(p *pick) {
	if p.released {
		return
	}
	p.released = true
	delete(s.inflight, p.reqID)
	in := p.inst
	in.picks--
	if !p.seen {
		in.view.InflightRequests--
		in.view.InflightPromptTokens -= p.prompt
		admission.Remember(&in.view)
	}
	in.view.InflightDecodeTokens -= p.decode
	s.m.inflight.Set(float64(len(s.inflight)))
}

// unseenLimit bounds how long a pick may stay counted as not yet at its
// engine (see markSeen).
const unseenLimit = 5 * time.Second

// markSeen folds into this report the picks it shows. The engine's
// running+waiting counts every request that reached it, so of this
// instance's live picks at most that many can be in the report; the
// others have not reached the engine yet (under load the data plane and
// the engine's own intake take longer than a report interval, and a report
// scraped before a pick arrives after it) and stay counted as unreported,
// newest first, until a report's counts show them. Taking every pick made
// before a report as in it would show, for a report interval or more, a
// free place that is not there. A count the engine shows above the picks
// (requests not picked here, fallbacks) folds them all, as before; one
// below them because the engine finished a request its gateway has not
// reported yet keeps a pick counted a moment longer — the safe side — but
// no longer than unseenLimit: a request reaches its engine well within
// that, so a pick still not shown by then is one whose outcome report was
// lost (a gateway killed mid-request) and whose request is long gone, and
// counting it until inflight_timeout would hold a healthy engine back as
// saturated for minutes.
func (s *Scheduler) markSeen(in *inst) {
	live := 0
	for _, p := range in.unseen {
		if !p.released && !p.seen {
			live++
		}
	}
	hidden := min(max(int64(in.picks)-(in.view.Running+in.view.Waiting), 0), int64(live))
	fold := live - int(hidden) // the oldest unseen picks are in the report
	stale := s.clock.Now().Add(-unseenLimit)
	kept := in.unseen[:0]
	for _, p := range in.unseen {
		if p.released || p.seen {
			continue
		}
		if fold > 0 || p.at.Before(stale) {
			fold--
			p.seen = true
			in.view.InflightRequests--
			in.view.InflightPromptTokens -= p.prompt
			admission.Remember(&in.view)
			continue
		}
		kept = append(kept, p)
	}
	clear(in.unseen[len(kept):])
	in.unseen = kept
}

// expireInflight releases picks older than llm_scheduler.inflight_timeout: a
// gateway that crashed never reports, and its picks must not weigh forever.
func (s *Scheduler) expireInflight(now time.Time) (released bool) {
	limit := now.Add(-s.cfg.Scheduler.InflightTimeout)
	for s.fifoHead < len(s.fifo) {
		p := s.fifo[s.fifoHead]
		if !p.released {
			if p.at.After(limit) {
				break
			}
			s.log.Debug("in-flight pick expired", zap.String("request_id", p.reqID), zap.String("instance", p.inst.view.ID))
			s.release(p)
			released = true
		}
		s.fifo[s.fifoHead] = nil
		s.fifoHead++
	}
	// Compact once the consumed head dominates, so the slice stays bounded by
	// the live picks.
	if s.fifoHead > 1024 && s.fifoHead*2 > len(s.fifo) {
		n := copy(s.fifo, s.fifo[s.fifoHead:])
		clear(s.fifo[n:])
		s.fifo = s.fifo[:n]
		s.fifoHead = 0
	}
	if s.fifoHead == len(s.fifo) {
		s.fifo = s.fifo[:0]
		s.fifoHead = 0
	}
	return released
}

// Report records a gateway's outcome for a picked request and releases its
// in-flight bookkeeping. An unknown request id (already expired, or picked
// by a scheduler that restarted) is not an error.
func (s *Scheduler) Report(_ context.Context, r *llmrouterv1.OutcomeReport) error {
	if r == nil {
		return nil
	}
	s.mu.Lock()
	defer s.unlock()
	// Keyed as submit keys picks: a client-chosen id is bounded.
	p := s.inflight[sessionkey.Bound(r.GetRequestId())]
	if p == nil {
		return nil
	}
	instID := p.inst.view.ID
	if ep := r.GetEndpoint(); ep != "" && s.insts[ep] != nil {
		// Envoy retried on a fallback: the instance that served is the one
		// whose cache now holds the prompt.
		instID = ep
	}
	s.release(p)
	s.sat.Completed(r.GetCompletionTokens())
	if s.observer != nil {
		s.observer.Completed(p.reqID, instID, r.GetPromptTokens(), r.GetCompletionTokens())
	}
	s.capacityChanged()
	return nil
}

// compact copies the unreleased picks of src to the front of dst's array
// (src may alias dst at or after its start) and clears the rest.
func compact(src, dst []*pick) []*pick {
	out := dst[:0]
	for _, p := range src {
		if !p.released {
			out = append(out, p)
		}
	}
	clear(dst[len(out):cap(dst)])
	return out
}
