package grpcx

import (
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/servetest"
)

// TestStopWaitsForCutHandlers: a handler still running when the grace
// expires is cut, and Stop returns only after it has returned (the
// scheduler's API server returns from Serve after Stop, and a process then
// flushes its logger and exits).
func TestStopWaitsForCutHandlers(t *testing.T) {
	l := servetest.NewLingering()
	s := grpc.NewServer()
	llmrouterv1.RegisterPickerServiceServer(s, l)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
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
