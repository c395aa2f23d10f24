package engine

import (
	"fmt"
	"time"
)

// Request is one generation request as the model sees it.
type Request struct {
	// ID names the request in events; unique among the engine's live requests.
	ID uint64
	// PromptTokens is the prompt length in tokens (at least 1).
	PromptTokens int
	// MaxTokens is the number of tokens to generate (at least 1); the model
	// always generates exactly this many.
	MaxTokens int
	// BlockHashes is the hash chain of the request's token blocks: hash i
	// covers tokens [i×block_size, (i+1)×block_size). It may continue past the
	// prompt into the output as a follow-up turn will render it; those blocks
	// become cached as decoding fills them. The engine keeps the slice; the
	// caller must not change it while the request lives.
	BlockHashes []uint64
	// KVTransferred says the prompt's KV cache arrived from a prefill
	// instance (prefill/decode disaggregation): at its first admission the
	// request computes only its last prompt token, as a vLLM decode
	// instance does after NixlConnector's pull. The transfer's duration is
	// the caller's to model (it adds the request when the transfer ends);
	// a request preempted later recomputes its prompt like any other.
	KVTransferred bool
}

// EventKind says what happened to a request.
type EventKind uint8

const (
	// FirstToken: the request's first output token (its prefill completed).
	FirstToken EventKind = iota + 1
	// Token: one more output token.
	Token
	// Finished: the request generated its last token (reported right after that
	// token's event) and left the engine.
	Finished
	// Preempted: the request lost its KV blocks and went back to the front of
	// the waiting queue; it will recompute its prompt and the tokens generated
	// so far.
	Preempted
)

func (k EventKind) String() string {
	switch k {
	case FirstToken:
		return "first_token"
	case Token:
		return "token"
	case Finished:
		return "finished"
	case Preempted:
		return "preempted"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is one thing that happened to a request at the end of a step.
type Event struct {
	ID   uint64
	Kind EventKind
	// At is the model time of the event (the end of the step).
	At time.Duration
	// Tokens is the number of output tokens generated so far.
	Tokens int
	// CachedTokens is, for FirstToken, how many prompt tokens were served from
	// the prefix cache when the request was (last) admitted.
	CachedTokens int
	// Scheduled is, for FirstToken, when the request was first scheduled; its
	// time in the waiting queue is Scheduled minus its arrival.
	Scheduled time.Duration
}

// Stats is the engine's true state, as vLLM's /metrics exposes it.
type Stats struct {
	Running, Waiting int
	// KVUsage is the fraction of blocks held by requests (0..1); cached blocks
	// that no request holds count as free, as in vLLM.
	KVUsage    float64
	UsedBlocks int
	// CachedBlocks holds a reusable prefix hash, in use or free.
	CachedBlocks int
	NumBlocks    int
	BlockSize    int
	// PrefixQueries and PrefixHits count tokens looked up in and served from
	// the prefix cache at admission.
	PrefixQueries, PrefixHits int64
	// PromptTokens counts the prompt tokens of requests that produced their
	// first token; GenerationTokens counts output tokens.
	PromptTokens, GenerationTokens int64
	// TransferredTokens counts prompt tokens whose KV came from a prefill
	// instance instead of being computed here.
	TransferredTokens              int64
	Preemptions, Finished, Aborted int64
	Steps                          int64
	// BusyTime is the total duration of the steps run.
	BusyTime time.Duration
}

type seqState uint8

const (
	stateWaiting seqState = iota + 1
	stateRunning
)

// seq is a request inside the engine.
type seq struct {
	id        uint64
	prompt    int
	maxTokens int
	hashes    []uint64
	state     seqState
	computed  int // tokens whose KV is computed
	generated int // output tokens generated
	scheduled int // tokens scheduled in the step in flight
	committed int // leading blocks registered in the prefix cache
	cached    int // tokens served from the cache at the last admission
	admitted  bool
	remoteKV  bool          // the prompt's KV arrives with the first admission
	firstAt   time.Duration // first scheduled
	blocks    []int32
}

// seqLen is the number of tokens whose KV the next output token needs.
func (s *seq) seqLen() int { return s.prompt + s.generated }

// Engine is one simulated vLLM instance. It is not safe for concurrent use:
// one owner drives it.
type Engine struct {
	cfg     Config
	kv      *kvCache
	waiting deque
	running []*seq
	byID    map[uint64]*seq
	free    []*seq

	inFlight bool
	stepEnd  time.Duration
	// readyAt is when the idle engine got work; the next step starts then.
	readyAt time.Duration
	lastEnd time.Duration

	events []Event
	stats  Stats
}

// New builds an engine; the Config must be valid.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Engine{
		cfg:     cfg,
		kv:      newKVCache(cfg.NumBlocks, cfg.BlockSize),
		byID:    make(map[uint64]*seq),
		running: make([]*seq, 0, cfg.MaxNumSeqs),
		events:  make([]Event, 0, 2*cfg.MaxNumSeqs),
	}, nil
}

// Config returns the engine's configuration.
func (e *Engine) Config() Config { return e.cfg }

// Add queues a request that arrives at now. It fails when the request is
// malformed, its id is live, or it could never fit in the KV cache.
//
// A request added while a step is in flight joins the batch that Step
// schedules when it completes that step, as in vLLM; a caller driving virtual
// time therefore adds every arrival at or before t before calling Step(t).
func (e *Engine) Add(now time.Duration, r Request) error {
	if r.PromptTokens < 1 {
		return fmt.Errorf("request %d: prompt of %d tokens: want 1 or more", r.ID, r.PromptTokens)
	}
	if r.MaxTokens < 1 {
		return fmt.Errorf("request %d: max tokens %d: want 1 or more", r.ID, r.MaxTokens)
	}
	if _, dup := e.byID[r.ID]; dup {
		return fmt.Errorf("request %d: id already in the engine", r.ID)
	}
	if need := e.kv.blocksFor(r.PromptTokens + r.MaxTokens); need > e.cfg.NumBlocks {
		return fmt.Errorf("request %d: %d prompt + %d output tokens need %d KV blocks, the cache holds %d",
			r.ID, r.PromptTokens, r.MaxTokens, need, e.cfg.NumBlocks)
	}
	var s *seq
	if n := len(e.free); n > 0 {
		s = e.free[n-1]
		e.free = e.free[:n-1]
		blocks := s.blocks[:0]
		*s = seq{blocks: blocks}
	} else {
		s = &seq{}
	}
	s.id, s.prompt, s.maxTokens, s.hashes, s.state = r.ID, r.PromptTokens, r.MaxTokens, r.BlockHashes, stateWaiting
	s.remoteKV = r.KVTransferred
	e.byID[r.ID] = s
	if !e.inFlight && !e.hasWork() {
		e.readyAt = max(now, e.lastEnd)
	}
	e.waiting.pushBack(s)
	return nil
}

func (e *Engine) hasWork() bool { return e.waiting.len() > 0 || len(e.running) > 0 }

// NextStepAt is when the engine next wants Step called: the end of the step in
// flight, or, when idle with work, the time the work arrived. ok is false when
// the engine is idle with nothing to do.
func (e *Engine) NextStepAt() (at time.Duration, ok bool) {
	if e.inFlight {
		return e.stepEnd, true
	}
	if e.hasWork() {
		return e.readyAt, true
	}
	return 0, false
}

// Busy reports whether a step is in flight.
func (e *Engine) Busy() bool { return e.inFlight }

// Step completes the step in flight if it has ended by now, reporting its
// events, and schedules the next batch: right after the completed step, or at
// now when the engine was idle. Calling it early (before NextStepAt) does
// nothing. The returned slice is reused by the next call.
func (e *Engine) Step(now time.Duration) []Event {
	e.events = e.events[:0]
	start := now
	if e.inFlight {
		if now < e.stepEnd {
			return e.events
		}
		e.complete()
		start = e.stepEnd
	} else if !e.hasWork() || now < e.readyAt {
		return e.events
	}
	e.schedule(start)
	return e.events
}

// complete applies the step in flight: computed tokens, new output tokens,
// finished requests leave and free their blocks.
func (e *Engine) complete() {
	e.inFlight = false
	e.lastEnd = e.stepEnd
	at := e.stepEnd
	kept := e.running[:0]
	for _, s := range e.running {
		if s.scheduled == 0 {
			kept = append(kept, s)
			continue
		}
		s.computed += s.scheduled
		s.scheduled = 0
		if !e.cfg.DisablePrefixCaching {
			e.kv.commit(s)
		}
		if s.computed < s.seqLen() {
			kept = append(kept, s) // a prefill chunk: no token yet
			continue
		}
		s.generated++
		e.stats.GenerationTokens++
		if s.generated == 1 {
			e.stats.PromptTokens += int64(s.prompt)
			e.events = append(e.events, Event{ID: s.id, Kind: FirstToken, At: at, Tokens: 1, CachedTokens: s.cached, Scheduled: s.firstAt})
		} else {
			e.events = append(e.events, Event{ID: s.id, Kind: Token, At: at, Tokens: s.generated})
		}
		if s.generated >= s.maxTokens {
			e.events = append(e.events, Event{ID: s.id, Kind: Finished, At: at, Tokens: s.generated})
			e.stats.Finished++
			e.retire(s)
			continue
		}
		kept = append(kept, s)
	}
	clear(e.running[len(kept):])
	e.running = kept
}

// schedule picks the next batch as vLLM V1's scheduler does: running
// requests first, in order, each getting its remaining tokens within the
// token budget (a decode needs one); when one cannot get blocks the last
// running request is preempted, possibly itself. Then, unless anything was
// preempted, waiting requests are admitted in order while seats, budget and
// blocks last, each starting after its cached prefix.
func (e *Engine) schedule(start time.Duration) {
	budget := e.cfg.MaxNumBatchedTokens
	prefill, decode := 0, 0
	preempted := false
	for i := 0; i < len(e.running) && budget > 0; i++ {
		s := e.running[i]
		need := s.seqLen() - s.computed
		n := min(need, budget)
		for !e.kv.grow(s, s.computed+n) {
			victim := e.running[len(e.running)-1]
			e.running[len(e.running)-1] = nil
			e.running = e.running[:len(e.running)-1]
			e.preempt(victim, start)
			preempted = true
			if victim == s {
				n = 0
				break
			}
		}
		if n == 0 {
			break
		}
		s.scheduled = n
		budget -= n
		if s.generated > 0 && need == 1 {
			decode++
		} else {
			prefill += n
		}
	}
	if !preempted {
		bs := e.cfg.BlockSize
		for e.waiting.len() > 0 && len(e.running) < e.cfg.MaxNumSeqs && budget > 0 {
			s := e.waiting.front()
			hits, hitsFree := 0, 0
			if !e.cfg.DisablePrefixCaching {
				// At least one token is always computed, so a fully cached
				// sequence recomputes its last block.
				hits, hitsFree = e.kv.lookup(s.hashes, (s.seqLen()-1)/bs)
			} else {
				e.kv.scratch = e.kv.scratch[:0]
			}
			cached := hits * bs
			computed := cached
			if s.remoteKV && s.prompt-1 > computed {
				// The transferred prompt is computed but for its last
				// token, which yields the first output token.
				computed = s.prompt - 1
			}
			n := min(s.seqLen()-computed, budget)
			if !e.kv.admit(s, hitsFree, computed+n) {
				break
			}
			e.waiting.popFront()
			s.state = stateRunning
			if s.remoteKV {
				e.stats.TransferredTokens += int64(computed - cached)
				s.remoteKV = false
			}
			s.computed, s.cached, s.committed = computed, cached, hits
			if !s.admitted {
				s.admitted, s.firstAt = true, start
			}
			e.stats.PrefixQueries += int64(s.seqLen())
			e.stats.PrefixHits += int64(cached)
			e.running = append(e.running, s)
			s.scheduled = n
			budget -= n
			prefill += n
		}
	}
	if prefill+decode == 0 {
		// Nothing fits: only possible when nothing is running, which Add's
		// capacity check rules out. Stay idle rather than spin.
		return
	}
	d := e.cfg.stepTime(prefill, decode)
	e.stepEnd = start + d
	e.inFlight = true
	e.stats.Steps++
	e.stats.BusyTime += d
}

func (e *Engine) preempt(s *seq, at time.Duration) {
	e.kv.release(s)
	s.computed, s.scheduled, s.cached = 0, 0, 0
	s.state = stateWaiting
	e.waiting.pushFront(s)
	e.stats.Preemptions++
	e.events = append(e.events, Event{ID: s.id, Kind: Preempted, At: at, Tokens: s.generated})
}

// retire frees a request that left the engine.
func (e *Engine) retire(s *seq) {
	e.kv.release(s)
	delete(e.byID, s.id)
	s.hashes = nil
	s.state = 0
	e.free = append(e.free, s)
}

// Abort removes a live request (a client went away) and frees its blocks;
// tokens it had in the step in flight are still paid for. It reports whether
// the request was live.
func (e *Engine) Abort(id uint64) bool {
	s, ok := e.byID[id]
	if !ok {
		return false
	}
	switch s.state {
	case stateWaiting:
		e.waiting.remove(s)
	case stateRunning:
		for i, r := range e.running {
			if r == s {
				copy(e.running[i:], e.running[i+1:])
				e.running[len(e.running)-1] = nil
				e.running = e.running[:len(e.running)-1]
				break
			}
		}
	}
	e.stats.Aborted++
	e.retire(s)
	return true
}

// Stats returns the engine's current state and counters.
func (e *Engine) Stats() Stats {
	st := e.stats
	st.Running = len(e.running)
	st.Waiting = e.waiting.len()
	st.UsedBlocks = e.kv.usedBlocks()
	st.NumBlocks = e.cfg.NumBlocks
	st.BlockSize = e.cfg.BlockSize
	st.KVUsage = float64(st.UsedBlocks) / float64(st.NumBlocks)
	st.CachedBlocks = len(e.kv.cached)
	return st
}

// deque is a ring buffer of waiting requests: preempted requests return to
// the front.
type deque struct {
	buf  []*seq
	head int
	n    int
}

func (d *deque) len() int { return d.n }

func (d *deque) grow() {
	nb := make([]*seq, max(16, 2*len(d.buf)))
	for i := 0; i < d.n; i++ {
		nb[i] = d.buf[(d.head+i)%len(d.buf)]
	}
	d.buf, d.head = nb, 0
}

func (d *deque) pushBack(s *seq) {
	if d.n == len(d.buf) {
		d.grow()
	}
	d.buf[(d.head+d.n)%len(d.buf)] = s
	d.n++
}

func (d *deque) pushFront(s *seq) {
	if d.n == len(d.buf) {
		d.grow()
	}
	d.head = (d.head - 1 + len(d.buf)) % len(d.buf)
	d.buf[d.head] = s
	d.n++
}

func (d *deque) front() *seq { return d.buf[d.head] }

func (d *deque) popFront() *seq {
	s := d.buf[d.head]
	d.buf[d.head] = nil
	d.head = (d.head + 1) % len(d.buf)
	d.n--
	return s
}

func (d *deque) remove(s *seq) {
	for i := 0; i < d.n; i++ {
		if d.buf[(d.head+i)%len(d.buf)] != s {
			continue
		}
		for j := i; j < d.n-1; j++ {
			d.buf[(d.head+j)%len(d.buf)] = d.buf[(d.head+j+1)%len(d.buf)]
		}
		d.buf[(d.head+d.n-1)%len(d.buf)] = nil
		d.n--
		return
	}
}

// CachedPrefix is how many prompt tokens a request of promptTokens tokens
// with these block hashes would be served from the prefix cache if it were
// admitted now. It changes nothing: the simulator's diagnosis compares it
// with what a policy predicted.
func (e *Engine) CachedPrefix(hashes []uint64, promptTokens int) int {
	if e.cfg.DisablePrefixCaching || promptTokens < 1 {
		return 0
	}
	return e.kv.probe(hashes, (promptTokens-1)/e.cfg.BlockSize) * e.cfg.BlockSize
}

// QueuedPrefill is the prompt tokens the engine has yet to compute for the
// requests it holds: the waiting ones (less what they would find cached
// now) and the running ones still in prefill. It changes nothing.
func (e *Engine) QueuedPrefill() int {
	n := 0
	for i := 0; i < e.waiting.len(); i++ {
		s := e.waiting.buf[(e.waiting.head+i)%len(e.waiting.buf)]
		n += s.seqLen() - e.CachedPrefix(s.hashes, s.seqLen())
	}
	for _, s := range e.running {
		if s.generated == 0 {
			n += max(s.seqLen()-s.computed-s.scheduled, 0)
		}
	}
	return n
}

// FlushPrefixCache forgets every cached prefix, as vLLM's
// /reset_prefix_cache does; requests running keep their blocks, later ones
// find nothing cached.
func (e *Engine) FlushPrefixCache() { e.kv.flush() }
