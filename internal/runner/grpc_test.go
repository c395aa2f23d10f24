package runner

import (
	"context"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/internal/servetest"
)

// TestGRPCReturnsAfterItsHandlers: a gRPC runner returns only once every
// handler has, even one that outlives the graceful-stop grace and is cut.
// Serve alone returns as soon as the forced stop has closed the
// connections, before such a handler ends: the group would then stop the
// next stage (and the process flush its logger and exit) under a handler
// still logging and touching state.
func TestGRPCReturnsAfterItsHandlers(t *testing.T) {
	l := servetest.NewLingering()
	s, ln := l.Server(t)
	r := GRPC("api", s, ln, 100*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()

	called := l.Call(t, ln.Addr().String())
	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the runner did not return within 10 s of its context ending")
	}
	if !l.Ended() {
		t.Fatal("the runner returned while a handler cut after the grace still ran")
	}
	if err := <-called; err == nil {
		t.Fatal("the cut call succeeded")
	}
}
