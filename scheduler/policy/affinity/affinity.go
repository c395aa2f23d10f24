package affinity

import (
	"container/list"
	"slices"
	"time"

	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// New builds the named policy and wraps it.
func New(name string, d policy.Deps) (policy.Policy, error) {
	p, err := policy.New(name, d)
	if err != nil {
		return nil, err
	}
	return Wrap(p, d), nil
}

// Wrap returns inner with session and LoRA affinity as configured in
// d.Config.Scheduler.Affinity; inner itself when both are off. The result
// implements policy.Observer and forwards to inner's.
func Wrap(inner policy.Policy, d policy.Deps) policy.Policy {
	pc := d.Config.Scheduler.Affinity
	if !pc.Session && !pc.LoRA {
		return inner
	}
	w := &Wrapper{inner: inner, lora: pc.LoRA}
	w.obs, _ = inner.(policy.Observer)
	if pc.Session {
		clock := d.Clock
		if clock == nil {
			clock = policy.SystemClock{}
		}
		w.sessions = &sessions{clock: clock, ttl: pc.SessionTTL, max: pc.SessionMax, maxBytes: int64(pc.SessionMaxBytes), lru: list.New(), byKey: map[string]*list.Element{}}
	}
	return w
}

// Wrapper is a policy with affinity preferences. The scheduler calls it
// serially.
type Wrapper struct {
	inner    policy.Policy
	obs      policy.Observer
	lora     bool
	sessions *sessions // nil when session affinity is off
}

// Name is the inner policy's name.
func (w *Wrapper) Name() string { return w.inner.Name() }

// Inner is the wrapped policy.
func (w *Wrapper) Inner() policy.Policy { return w.inner }

// Pick ranks the candidates holding the request's adapter with the inner
// policy, then the others, and puts the session's instance first when it is
// a candidate. A policy may rank only the first few candidates, so both
// preferences look at the candidates, not only at the ranking.
func (w *Wrapper) Pick(req *policy.Request, cands []*policy.Instance) policy.Decision {
	var d policy.Decision
	if with, without := w.splitByAdapter(req, cands); with != nil {
		d = w.inner.Pick(req, with)
		rest := w.inner.Pick(req, without)
		d.Ranked = append(d.Ranked, rest.Ranked...)
		if d.Prefill == nil {
			d.Prefill = rest.Prefill
		}
	} else {
		d = w.inner.Pick(req, cands)
	}
	if w.sessions == nil || req.SessionKey == "" || len(d.Ranked) == 0 {
		return d
	}
	id, ok := w.sessions.get(req.SessionKey)
	if !ok || d.Ranked[0].ID == id {
		return d
	}
	var home *policy.Instance
	for _, c := range cands {
		if c.ID == id {
			home = c
			break
		}
	}
	if home == nil {
		return d // saturated or gone: the policy's choice stands
	}
	// The session yields only to an instance holding the adapter it lacks.
	if w.lora && req.LoRA != "" && !slices.Contains(home.LoRAs, req.LoRA) && slices.Contains(d.Ranked[0].LoRAs, req.LoRA) {
		return d
	}
	ranked := make([]*policy.Instance, 0, len(d.Ranked)+1)
	ranked = append(ranked, home)
	for _, c := range d.Ranked {
		if c != home {
			ranked = append(ranked, c)
		}
	}
	d.Ranked = ranked
	if d.Prefill == home {
		d.Prefill = nil
	}
	return d
}

// splitByAdapter returns the candidates holding req's adapter and the
// others, or nil when the preference does not apply (off, no adapter asked,
// nobody or everybody has it).
func (w *Wrapper) splitByAdapter(req *policy.Request, cands []*policy.Instance) (with, without []*policy.Instance) {
	if !w.lora || req.LoRA == "" {
		return nil, nil
	}
	for _, c := range cands {
		if slices.Contains(c.LoRAs, req.LoRA) {
			with = append(with, c)
		} else {
			without = append(without, c)
		}
	}
	if len(with) == 0 || len(without) == 0 {
		return nil, nil
	}
	return with, without
}

// Picked remembers the session's instance and forwards.
func (w *Wrapper) Picked(req *policy.Request, d policy.Decision) {
	if w.sessions != nil && req.SessionKey != "" && len(d.Ranked) > 0 {
		w.sessions.put(req.SessionKey, d.Ranked[0].ID)
	}
	if w.obs != nil {
		w.obs.Picked(req, d)
	}
}

// Completed forwards.
func (w *Wrapper) Completed(reqID, instanceID string, promptTokens, completionTokens int64) {
	if w.obs != nil {
		w.obs.Completed(reqID, instanceID, promptTokens, completionTokens)
	}
}

// Removed forgets sessions on the instance and forwards.
func (w *Wrapper) Removed(id string) {
	if w.sessions != nil {
		w.sessions.dropInstance(id)
	}
	if w.obs != nil {
		w.obs.Removed(id)
	}
}

// Sessions is the number of sessions remembered.
func (w *Wrapper) Sessions() int {
	if w.sessions == nil {
		return 0
	}
	return len(w.sessions.byKey)
}

// SessionBytes is the memory the remembered sessions are accounted at
// (keys, instance ids and a fixed cost per entry); it stays at most
// llm_scheduler.affinity.session_max_bytes.
func (w *Wrapper) SessionBytes() int64 {
	if w.sessions == nil {
		return 0
	}
	return w.sessions.bytes
}

// sessions maps session keys to instances: bounded in entries and in bytes,
// least recently used first out, entries older than ttl forgotten. The
// scheduler hands it bounded keys (sessionkey.Bound); the byte bound holds
// whatever a caller passes.
type sessions struct {
	clock    policy.Clock
	ttl      time.Duration
	max      int
	maxBytes int64
	bytes    int64
	lru      *list.List // of *session, most recent at the front
	byKey    map[string]*list.Element
}

// sessionOverhead approximates an entry's memory beside its two strings: the
// list element, the session struct and the map slot.
const sessionOverhead = 160

func entryBytes(e *session) int64 { return int64(len(e.key) + len(e.inst) + sessionOverhead) }

func (s *sessions) remove(el *list.Element) {
	e := s.lru.Remove(el).(*session)
	delete(s.byKey, e.key)
	s.bytes -= entryBytes(e)
}

type session struct {
	key, inst string
	at        time.Time
}

func (s *sessions) get(key string) (string, bool) {
	el, ok := s.byKey[key]
	if !ok {
		return "", false
	}
	e := el.Value.(*session)
	if s.clock.Now().Sub(e.at) > s.ttl {
		s.remove(el)
		return "", false
	}
	return e.inst, true
}

func (s *sessions) put(key, inst string) {
	now := s.clock.Now()
	if el, ok := s.byKey[key]; ok {
		e := el.Value.(*session)
		s.bytes += int64(len(inst) - len(e.inst))
		e.inst, e.at = inst, now
		s.lru.MoveToFront(el)
	} else {
		e := &session{key: key, inst: inst, at: now}
		s.byKey[key] = s.lru.PushFront(e)
		s.bytes += entryBytes(e)
	}
	for b := s.lru.Back(); b != nil; b = s.lru.Back() {
		e := b.Value.(*session)
		if s.lru.Len() <= s.max && s.bytes <= s.maxBytes && now.Sub(e.at) <= s.ttl {
			break
		}
		s.remove(b)
	}
}

func (s *sessions) dropInstance(inst string) {
	for el := s.lru.Front(); el != nil; {
		next := el.Next()
		if e := el.Value.(*session); e.inst == inst {
			s.remove(el)
		}
		el = next
	}
}

var _ policy.Observer = (*Wrapper)(nil)
