//go:build faults

package faults

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/integration/stack"
)

type (
	chatReq = stack.ChatReq
	reply   = stack.Reply
)

// chat sends one streaming chat completion to the data plane's listener and
// reads the answer to its end.
func (s *system) chat(ctx context.Context, q chatReq) reply {
	return s.chatTo(ctx, s.Listen, q)
}

// chatTo is chat against addr (an engine directly, to learn its reply text):
// 6 tokens and 30 s for the whole exchange unless asked.
func (s *system) chatTo(ctx context.Context, addr string, q chatReq) reply {
	if q.MaxTokens == 0 {
		q.MaxTokens = 6
	}
	if q.Timeout == 0 {
		q.Timeout = 30 * time.Second
	}
	return s.ChatTo(ctx, addr, q)
}

// ---------------------------------------------------------------- open loop

// load is open-loop traffic: requests arrive at a fixed rate for a fixed
// time whatever the system does, each on its own goroutine with its own
// deadline; it ends by itself.
type load struct {
	began time.Time
	last  time.Time // the last arrival
	n     int       // requests sent in all
	wg    sync.WaitGroup
	mu    sync.Mutex
	out   []reply
	done  chan struct{}
}

// openLoop starts rate requests per second for d; q is each request's shape
// (gen, when set, makes request i).
func (s *system) openLoop(rate float64, d time.Duration, q chatReq, gen func(i int) chatReq) *load {
	n := int(rate * d.Seconds())
	gap := time.Duration(float64(time.Second) / rate)
	l := &load{began: time.Now(), done: make(chan struct{}), n: n}
	l.last = l.began.Add(time.Duration(n-1) * gap)
	go func() {
		defer close(l.done)
		for i := range n {
			time.Sleep(time.Until(l.began.Add(time.Duration(i) * gap)))
			qi := q
			if gen != nil {
				qi = gen(i)
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				r := s.chat(context.Background(), qi)
				l.mu.Lock()
				l.out = append(l.out, r)
				l.mu.Unlock()
			}()
		}
		l.wg.Wait()
	}()
	return l
}

// wait returns every reply once the last one has ended, sorted by start.
// When replies are still outstanding stuck after the last arrival, stuck
// is called once (to log where they are).
func (l *load) wait() []reply {
	return l.waitOr(0, nil)
}

func (l *load) waitOr(after time.Duration, stuck func(outstanding int)) []reply {
	if stuck != nil {
		select {
		case <-l.done:
		case <-time.After(time.Until(l.last.Add(after))):
			l.mu.Lock()
			n := l.n - len(l.out)
			l.mu.Unlock()
			stuck(n)
		}
	}
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append([]reply(nil), l.out...)
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// outcome counts replies.
type outcome struct{ sent, ok, shed, failed int }

// judge counts rs into the scenario's row and fails the test for every
// failed reply (shed ones too unless shedOK), listing the first few with
// their start relative to t0.
func judge(t *testing.T, row *row, rs []reply, t0 time.Time, shedOK bool) outcome {
	t.Helper()
	var o outcome
	var bad []string
	for _, r := range rs {
		o.sent++
		switch {
		case r.Failure() == nil:
			o.ok++
		case shedOK && r.Shed():
			o.shed++
		default:
			o.failed++
			if len(bad) < 10 {
				bad = append(bad, fmt.Sprintf("at %+.3fs: %v", r.Start.Sub(t0).Seconds(), r.Failure()))
			}
		}
	}
	row.add(o)
	t.Logf("%d sent, %d succeeded, %d shed, %d failed", o.sent, o.ok, o.shed, o.failed)
	if o.failed > 0 {
		t.Errorf("%d of %d requests failed; the first: %s", o.failed, o.sent, strings.Join(bad, "; "))
	}
	return o
}
