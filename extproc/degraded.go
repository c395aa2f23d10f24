package extproc

import (
	"sync"
	"time"
)

// health decides, before every pick, whether to ask the scheduler at all.
// Two sources: a Scheduler that implements Availability says so itself (the
// gRPC client watches its connection and a health probe); for any Scheduler,
// failed picks open a breaker: an Unavailable error at once, other errors and
// timeouts after breakerThreshold in a row. While open, picks are skipped and
// every probeInterval one request probes; a success closes it. So recovery is
// noticed without operator action, by the client's watcher or by traffic.
type health struct {
	avail         Availability
	probeInterval time.Duration

	mu          sync.Mutex
	consecutive int
	open        bool
	nextProbe   time.Time
}

const breakerThreshold = 3

// allow reports whether this request should ask the scheduler.
func (h *health) allow(now time.Time) bool {
	if h.avail != nil && !h.avail.Available() {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.open {
		return true
	}
	if now.Before(h.nextProbe) {
		return false
	}
	h.nextProbe = now.Add(h.probeInterval)
	return true
}

// failure records a failed pick; hard failures open the breaker at once.
// It reports whether the breaker is open now.
func (h *health) failure(now time.Time, hard bool) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.consecutive++
	if hard || h.consecutive >= breakerThreshold {
		h.open = true
		h.nextProbe = now.Add(h.probeInterval)
	}
	return h.open
}

// success closes the breaker; it reports whether it was open.
func (h *health) success() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	was := h.open
	h.consecutive = 0
	h.open = false
	return was
}

// degraded reports whether requests currently pass through without a pick.
func (h *health) degraded() bool {
	if h.avail != nil && !h.avail.Available() {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.open
}
