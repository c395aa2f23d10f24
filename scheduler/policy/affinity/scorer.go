package affinity

import (
	"container/list"
	"fmt"
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// ScorerType is session affinity as a scorer of the scheduling framework:
// 1 for the instance the request's session (x-session-id or the body's
// user) was last sent to, 0 for the others and for every candidate of a
// request without a known session. Weighted against the load scorers it
// keeps a conversation home until home is that much busier — softer than
// the wrapper, which always sends a session home while home is a
// candidate.
const ScorerType = "session-affinity-scorer"

// ScorerParams are its parameters; the defaults are the session keys of
// llm_scheduler.affinity.
type ScorerParams struct {
	TTL         framework.Duration `json:"ttl" default:"llm_scheduler.affinity.session_ttl"`
	MaxSessions int                `json:"maxSessions" default:"llm_scheduler.affinity.session_max"`
	MaxBytes    int64              `json:"maxBytes" default:"llm_scheduler.affinity.session_max_bytes"`
}

// DefaultScorerParams are the parameters with c's session keys.
func DefaultScorerParams(c config.Config) ScorerParams {
	pc := c.Scheduler.Affinity
	return ScorerParams{TTL: framework.Duration(pc.SessionTTL), MaxSessions: pc.SessionMax, MaxBytes: int64(pc.SessionMaxBytes)}
}

// Validate checks the parameters.
func (pr ScorerParams) Validate() error {
	switch {
	case pr.TTL <= 0:
		return fmt.Errorf("parameter ttl %s: accepted: a positive duration", time.Duration(pr.TTL))
	case pr.MaxSessions < 1:
		return fmt.Errorf("parameter maxSessions %d: accepted: 1 or more", pr.MaxSessions)
	case pr.MaxBytes < 4096:
		return fmt.Errorf("parameter maxBytes %d: accepted: 4096 or more", pr.MaxBytes)
	}
	return nil
}

func init() {
	framework.RegisterPlugin(ScorerType, DefaultScorerParams, func(h *framework.Handle, pr ScorerParams) (any, error) {
		clock := h.Deps.Clock
		if clock == nil {
			clock = policy.SystemClock{}
		}
		return &sessionScorer{s: &sessions{clock: clock, ttl: time.Duration(pr.TTL), max: pr.MaxSessions, maxBytes: pr.MaxBytes,
			lru: list.New(), byKey: map[string]*list.Element{}}}, nil
	})
}

type sessionScorer struct{ s *sessions }

func (x *sessionScorer) Score(_ *framework.CycleState, req *policy.Request, cands []*policy.Instance, out []float64) {
	clear(out)
	if req.SessionKey == "" {
		return
	}
	id, ok := x.s.get(req.SessionKey)
	if !ok {
		return
	}
	for i, c := range cands {
		if c.ID == id {
			out[i] = 1
		}
	}
}

// Picked remembers where the session went.
func (x *sessionScorer) Picked(req *policy.Request, d policy.Decision) {
	if req.SessionKey != "" && len(d.Ranked) > 0 {
		x.s.put(req.SessionKey, d.Ranked[0].ID)
	}
}

func (*sessionScorer) Completed(string, string, int64, int64) {}

// Removed forgets the sessions of an instance that left.
func (x *sessionScorer) Removed(id string) { x.s.dropInstance(id) }
