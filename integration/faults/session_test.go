//go:build faults

package faults

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSessionKeys: 1,000 requests, each with a distinct 1 MiB session key
// (the body's "user"), at 40 per second: the scheduler stays under 512 MB
// resident and every request is served.
func TestSessionKeys(t *testing.T) {
	row := scenario(t)
	s := startSystem(t, options{split: true})
	before, err := rssBytes(s.Scheduler.Pid())
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("k", 1<<20)
	var peakMu sync.Mutex
	var peak int64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			if b, err := rssBytes(s.Scheduler.Pid()); err == nil {
				peakMu.Lock()
				peak = max(peak, b)
				peakMu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	const keys, rate = 1000, 40
	l := s.openLoop(rate, keys/rate*time.Second, chatReq{}, func(i int) chatReq {
		// Distinct in their first bytes and 1 MiB long.
		return chatReq{User: fmt.Sprintf("session-%06d-", i) + pad[:1<<20-15], Timeout: 60 * time.Second}
	})
	rs := l.waitOr(15*time.Second, func(n int) {
		t.Logf("%d requests unanswered 15 s after the last was sent:", n)
		s.logStuck(t)
	})
	judge(t, row, rs, l.began, false)
	close(stop)
	<-done
	after, _ := rssBytes(s.Scheduler.Pid())
	peakMu.Lock()
	defer peakMu.Unlock()
	row.note = fmt.Sprintf("(scheduler RSS %d MB before, peak %d MB)", before>>20, peak>>20)
	t.Logf("scheduler RSS: %d MB before, peak %d MB, %d MB after %d distinct 1 MiB session keys", before>>20, peak>>20, after>>20, keys)
	if peak > rssBound {
		t.Errorf("scheduler peak RSS %d MB after %d distinct 1 MiB session keys, want under %d MB", peak>>20, keys, rssBound>>20)
	}
	// Still serving.
	l = s.openLoop(10, 2*time.Second, chatReq{}, nil)
	judge(t, row, l.wait(), l.began, false)
	s.alive(t)
}
