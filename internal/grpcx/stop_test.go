package grpcx

import (
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/internal/servetest"
)

// TestStopWaitsForCutHandlers: a handler still running when the grace
// expires is cut, and Stop returns only after it has returned (the
// scheduler's API server returns from Serve after Stop, and a process then
// flushes its logger and exits).
func TestStopWaitsForCutHandlers(t *testing.T) {
	l := servetest.NewLingering()
	s, ln := l.Server(t)
	go func() { _ = s.Serve(ln) }()
	called := l.Call(t, ln.Addr().String())
	Stop(s, 100*time.Millisecond)
	if !l.Ended() {
		t.Fatal("Stop returned while a handler cut after the grace still ran")
	}
	if err := <-called; err == nil {
		t.Fatal("the cut call succeeded")
	}
}
