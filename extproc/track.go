package extproc

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
)

// tracked is what filter #1 leaves for filter #2 about one request.
type tracked struct {
	arrival      time.Time
	model        string
	api          llmrouterv1.ApiKind
	endpoint     string // the pick's primary; "" when no pick was made
	promptTokens int64  // the gateway's estimate
	expires      time.Time
}

// tracker hands requests from filter #1 to filter #2 by request id. It is
// bounded twice: entries expire after ttl (requests whose response the
// observability filter never sees), and past max entries new ones are not
// kept (counted).
type tracker struct {
	ttl        time.Duration
	max        int
	m          *metrics
	mu         sync.Mutex
	entries    map[string]*tracked
	lastSweep  time.Time
	sweepEvery time.Duration
}

func newTracker(ttl time.Duration, max int, m *metrics) *tracker {
	return &tracker{ttl: ttl, max: max, m: m, entries: make(map[string]*tracked), sweepEvery: min(ttl/4, 10*time.Second)}
}

func (t *tracker) put(id string, e *tracked, now time.Time) {
	if id == "" {
		return
	}
	e.expires = now.Add(t.ttl)
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.lastSweep) >= t.sweepEvery {
		t.sweepLocked(now)
	}
	if old, ok := t.entries[id]; ok {
		t.leaveLocked(old)
	} else if len(t.entries) >= t.max {
		t.m.trackerEvicted.WithLabelValues("full").Inc()
		return
	}
	t.entries[id] = e
	if e.endpoint != "" {
		t.m.inflight.Inc()
	}
}

// take removes and returns the entry for id.
func (t *tracker) take(id string) *tracked {
	if id == "" {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[id]
	if !ok {
		return nil
	}
	delete(t.entries, id)
	t.leaveLocked(e)
	return e
}

func (t *tracker) leaveLocked(e *tracked) {
	if e.endpoint != "" {
		t.m.inflight.Dec()
	}
}

func (t *tracker) sweepLocked(now time.Time) {
	t.lastSweep = now
	for id, e := range t.entries {
		if now.After(e.expires) {
			delete(t.entries, id)
			t.leaveLocked(e)
			t.m.trackerEvicted.WithLabelValues("expired").Inc()
		}
	}
}

func (t *tracker) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.entries)
}

// reporter sends outcome reports off the request path: a bounded queue and
// a few workers, so a slow scheduler never holds up an Envoy stream. When the
// queue is full the report is dropped (the scheduler's inflight timeout
// releases the pick) and counted.
type reporter struct {
	sched   Scheduler
	m       *metrics
	log     *zap.Logger
	q       chan *llmrouterv1.OutcomeReport
	timeout time.Duration
	wg      sync.WaitGroup
	cancel  context.CancelFunc
}

func newReporter(sched Scheduler, m *metrics, log *zap.Logger, size, workers int, timeout time.Duration) *reporter {
	ctx, cancel := context.WithCancel(context.Background())
	r := &reporter{sched: sched, m: m, log: log, q: make(chan *llmrouterv1.OutcomeReport, size), timeout: timeout, cancel: cancel}
	for range workers {
		r.wg.Add(1)
		go r.work(ctx)
	}
	return r
}

func (r *reporter) send(rep *llmrouterv1.OutcomeReport) {
	select {
	case r.q <- rep:
	default:
		r.m.reportsDropped.Inc()
	}
}

func (r *reporter) work(ctx context.Context) {
	defer r.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case rep := <-r.q:
			cctx, cancel := context.WithTimeout(ctx, r.timeout)
			err := r.sched.Report(cctx, rep)
			cancel()
			if err != nil {
				r.m.reportErrors.Inc()
				r.log.Debug("outcome report failed", zap.String("request_id", rep.RequestId), zap.Error(err))
			}
		}
	}
}

// close stops the workers; queued reports are dropped.
func (r *reporter) close() {
	r.cancel()
	r.wg.Wait()
}
