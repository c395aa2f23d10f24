package workload

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"time"
)

// Arrivals chooses how requests are paced. Exactly one is set.
type Arrivals struct {
	// Concurrency is a closed loop: this many requests in flight; when one
	// completes, its conversation's next turn (or a new conversation) is
	// sent at once.
	Concurrency int
	// Rate is Poisson arrivals of this many requests per second on average:
	// conversations start as a Poisson process at Rate / MeanTurns, and each
	// next turn follows its previous turn's completion plus think time.
	Rate float64
	// Trace replays the workload file's arrival_ms.
	Trace bool
}

func (a Arrivals) String() string {
	switch {
	case a.Trace:
		return "trace (arrival_ms)"
	case a.Rate > 0:
		return fmt.Sprintf("Poisson %g req/s", a.Rate)
	}
	return fmt.Sprintf("closed loop, concurrency %d", a.Concurrency)
}

// Validate checks that exactly one pacing is chosen.
func (a Arrivals) Validate() error {
	n := 0
	if a.Concurrency != 0 {
		n++
		if a.Concurrency < 1 {
			return fmt.Errorf("concurrency %d: want 1 or more", a.Concurrency)
		}
	}
	if a.Rate != 0 {
		n++
		if !(a.Rate > 0) || a.Rate > 1e6 {
			return fmt.Errorf("rate %g: want requests per second in (0, 1e6]", a.Rate)
		}
	}
	if a.Trace {
		n++
	}
	if n != 1 {
		return errors.New("choose one arrival process: --concurrency N (closed loop), --rate R (Poisson) or a workload file with arrival_ms")
	}
	return nil
}

// Plan is a run's workload and pacing.
type Plan struct {
	Source   Source
	Arrivals Arrivals
	// Duration stops new arrivals at this time since the start; requests
	// already sent complete. 0: until the workload is exhausted.
	Duration time.Duration
	// MaxRequests stops after this many requests; 0: no bound.
	MaxRequests int
	// Seed drives the Poisson process.
	Seed uint64
	// DefaultModel is the model of requests whose workload names none.
	DefaultModel string
	// RampUp spreads the start of a closed loop's clients evenly over this
	// long, instead of all at time 0: a burst of every client at once tests
	// the admission queue, not the steady state.
	RampUp time.Duration
	// FailureBackoff is how long a closed-loop client waits after a failed
	// request before it starts a new conversation, as a client honouring
	// Retry-After would (default 1 s). Without it a saturated target that
	// rejects at once would be hammered in a loop that never advances time.
	FailureBackoff time.Duration
}

// Request is one request the driver sends.
type Request struct {
	// Seq numbers requests in the order they are sent, from 0.
	Seq          int
	Conversation *Conversation
	Turn         int
	Model        string
	Messages     []Message
	MaxTokens    int
	// Arrival is when the request is sent, since the start of the run.
	Arrival time.Duration
	conv    *convState
}

// SimulatedReply is the reply a simulated engine gives: MaxTokens tokens of
// the conversation's deterministic text.
func (r *Request) SimulatedReply() string { return r.Conversation.Reply(r.Turn, r.MaxTokens) }

type convState struct {
	conv    *Conversation
	history []Message
}

type arrival struct {
	at   time.Duration
	seq  uint64 // insertion order: equal times keep it, for determinism
	conv *convState
	turn int
}

type arrivalHeap []arrival

func (h arrivalHeap) Len() int { return len(h) }
func (h arrivalHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].seq < h[j].seq
}
func (h arrivalHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *arrivalHeap) Push(x any)   { *h = append(*h, x.(arrival)) }
func (h *arrivalHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Driver runs a Plan on any clock: the caller asks when the next request is
// due (Next), takes it at that time (Pop) and reports each completion
// (Done), which may schedule the conversation's next turn. The virtual-time
// simulator and the live load generator both drive it; it is not safe for
// concurrent use.
type Driver struct {
	p           Plan
	pending     arrivalHeap
	pushSeq     uint64
	nextConv    int
	exhausted   bool
	rng         *rand.Rand
	convRate    float64 // conversations per second (Poisson)
	nextStart   time.Duration
	hasStart    bool
	trace       []arrival
	traceAt     int
	issued      int
	outstanding int
}

// NewDriver validates the plan and schedules its first arrivals at time 0.
func NewDriver(p Plan) (*Driver, error) {
	if p.Source == nil {
		return nil, errors.New("no workload")
	}
	if err := p.Arrivals.Validate(); err != nil {
		return nil, err
	}
	if p.Duration < 0 || p.MaxRequests < 0 || p.RampUp < 0 {
		return nil, fmt.Errorf("duration %s, max requests %d, ramp-up %s: want 0 or more", p.Duration, p.MaxRequests, p.RampUp)
	}
	if p.Arrivals.Trace && !HasArrivals(p.Source) {
		return nil, errors.New("trace arrivals need a workload file whose lines carry arrival_ms; use --rate or --concurrency")
	}
	if p.FailureBackoff <= 0 {
		p.FailureBackoff = time.Second
	}
	d := &Driver{p: p, rng: rand.New(rand.NewPCG(p.Seed, 0x617272))}
	switch {
	case p.Arrivals.Trace:
		for i := 0; ; i++ {
			c, ok := p.Source.Conversation(i)
			if !ok {
				break
			}
			cs := &convState{conv: c}
			for t, turn := range c.Turns {
				if d.inTime(turn.Arrival) {
					d.trace = append(d.trace, arrival{at: turn.Arrival, seq: uint64(len(d.trace)), conv: cs, turn: t})
				}
			}
		}
		sort.SliceStable(d.trace, func(i, j int) bool { return d.trace[i].at < d.trace[j].at })
	case p.Arrivals.Rate > 0:
		mt := p.Source.MeanTurns()
		if !(mt >= 1) {
			mt = 1
		}
		d.convRate = p.Arrivals.Rate / mt
		d.scheduleStart(0)
	default:
		n := p.Arrivals.Concurrency
		for i := 0; i < n; i++ {
			d.startConversation(p.RampUp * time.Duration(i) / time.Duration(n))
		}
	}
	return d, nil
}

func (d *Driver) inTime(at time.Duration) bool { return d.p.Duration == 0 || at < d.p.Duration }

func (d *Driver) newConversation() *convState {
	if d.exhausted {
		return nil
	}
	c, ok := d.p.Source.Conversation(d.nextConv)
	if !ok || len(c.Turns) == 0 {
		d.exhausted = true
		return nil
	}
	d.nextConv++
	return &convState{conv: c}
}

// startConversation queues a new conversation's first turn at at (closed loop).
func (d *Driver) startConversation(at time.Duration) {
	if !d.inTime(at) {
		return
	}
	if cs := d.newConversation(); cs != nil {
		d.push(at, cs, 0)
	}
}

func (d *Driver) scheduleStart(after time.Duration) {
	at := after + time.Duration(d.rng.ExpFloat64()/d.convRate*float64(time.Second))
	d.hasStart = d.inTime(at) && !d.exhausted
	d.nextStart = at
}

func (d *Driver) push(at time.Duration, cs *convState, turn int) {
	d.pushSeq++
	heap.Push(&d.pending, arrival{at: at, seq: d.pushSeq, conv: cs, turn: turn})
}

func (d *Driver) limitReached() bool { return d.p.MaxRequests > 0 && d.issued >= d.p.MaxRequests }

// Next is when the next request is due; false when none is scheduled now
// (more may follow completions: see Finished).
func (d *Driver) Next() (time.Duration, bool) {
	if d.limitReached() {
		return 0, false
	}
	if d.p.Arrivals.Trace {
		if d.traceAt < len(d.trace) {
			return d.trace[d.traceAt].at, true
		}
		return 0, false
	}
	at, ok := time.Duration(0), false
	if len(d.pending) > 0 {
		at, ok = d.pending[0].at, true
	}
	if d.hasStart && (!ok || d.nextStart < at) {
		at, ok = d.nextStart, true
	}
	return at, ok
}

// Pop takes the request Next announced. It returns nil when none is due.
func (d *Driver) Pop() *Request {
	if d.limitReached() {
		return nil
	}
	var a arrival
	switch {
	case d.p.Arrivals.Trace:
		if d.traceAt >= len(d.trace) {
			return nil
		}
		a = d.trace[d.traceAt]
		d.trace[d.traceAt] = arrival{}
		d.traceAt++
	case d.hasStart && (len(d.pending) == 0 || d.nextStart < d.pending[0].at):
		cs := d.newConversation()
		start := d.nextStart
		d.scheduleStart(start)
		if cs == nil {
			d.hasStart = false
			return d.Pop()
		}
		a = arrival{at: start, conv: cs}
	case len(d.pending) > 0:
		a = heap.Pop(&d.pending).(arrival)
	default:
		return nil
	}
	return d.issue(a)
}

func (d *Driver) issue(a arrival) *Request {
	c := a.conv.conv
	t := &c.Turns[a.turn]
	r := &Request{
		Seq: d.issued, Conversation: c, Turn: a.turn, Model: c.Model, MaxTokens: t.MaxTokens,
		Arrival: a.at, conv: a.conv,
	}
	if t.Model != "" {
		r.Model = t.Model
	}
	if r.Model == "" {
		r.Model = d.p.DefaultModel
	}
	if t.Messages != nil {
		r.Messages = t.Messages
	} else {
		h := a.conv.history
		if len(h) == 0 && c.System != "" {
			h = []Message{{Role: "system", Content: c.System}}
		}
		r.Messages = make([]Message, len(h)+1, len(h)+2)
		copy(r.Messages, h)
		r.Messages[len(h)] = Message{Role: "user", Content: t.User}
	}
	d.issued++
	d.outstanding++
	if d.limitReached() {
		d.pending, d.hasStart = nil, false
	}
	return r
}

// Done reports that r completed at now (ok false: it failed), with the
// reply's text; the conversation's next turn, or under a closed loop a new
// conversation, is scheduled.
func (d *Driver) Done(now time.Duration, r *Request, reply string, ok bool) {
	d.outstanding--
	if d.p.Arrivals.Trace {
		return
	}
	cs := r.conv
	next := r.Turn + 1
	if ok && next < len(cs.conv.Turns) {
		if r.Conversation.Turns[r.Turn].Messages == nil {
			cs.history = append(r.Messages, Message{Role: "assistant", Content: reply})
		}
		at := now
		if d.p.Arrivals.Rate > 0 {
			at += cs.conv.Turns[next].Think
		}
		if d.inTime(at) && !d.limitReached() {
			d.push(at, cs, next)
			return
		}
	} else {
		cs.history = nil
	}
	if d.p.Arrivals.Concurrency > 0 && !d.limitReached() {
		if !ok {
			now += d.p.FailureBackoff
		}
		d.startConversation(now)
	}
}

// Issued is the number of requests sent so far.
func (d *Driver) Issued() int { return d.issued }

// Outstanding is the number of requests sent and not yet Done.
func (d *Driver) Outstanding() int { return d.outstanding }

// Finished reports that every request has been sent and completed, and no
// completion can bring another.
func (d *Driver) Finished() bool {
	_, more := d.Next()
	return !more && d.outstanding == 0
}
