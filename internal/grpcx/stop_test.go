package grpcx

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
)

// lingering's Report ends 300 ms after its call was cut, as a stream
// handler counting and logging its end does.
type lingering struct {
	llmrouterv1.UnimplementedPickerServiceServer
	started chan struct{}
	ended   atomic.Bool
}

func (l *lingering) Report(ctx context.Context, _ *llmrouterv1.OutcomeReport) (*llmrouterv1.ReportAck, error) {
	close(l.started)
	<-ctx.Done()
	time.Sleep(300 * time.Millisecond)
	l.ended.Store(true)
	return nil, ctx.Err()
}

// TestStopWaitsForCutHandlers: a handler still running when the grace
// expires is cut, and Stop returns only after it has returned (the
// scheduler's API server returns from Serve after Stop, and a process then
// flushes its logger and exits).
func TestStopWaitsForCutHandlers(t *testing.T) {
	l := &lingering{started: make(chan struct{})}
	s := grpc.NewServer()
	llmrouterv1.RegisterPickerServiceServer(s, l)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(ln) }()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	called := make(chan error, 1)
	go func() {
		_, err := llmrouterv1.NewPickerServiceClient(cc).Report(context.Background(), &llmrouterv1.OutcomeReport{})
		called <- err
	}()
	select {
	case <-l.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never started")
	}
	Stop(s, 100*time.Millisecond)
	if !l.ended.Load() {
		t.Fatal("Stop returned while a handler cut after the grace still ran")
	}
	if err := <-called; err == nil {
		t.Fatal("the cut call succeeded")
	}
}
