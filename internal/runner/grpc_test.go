package runner

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

// lingering answers Report only after its call was cut and it has done
// 300 ms of closing work, as a stream handler counting and logging its
// end does: ended is set when it returns.
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

// TestGRPCReturnsAfterItsHandlers: a gRPC runner returns only once every
// handler has, even one that outlives the graceful-stop grace and is cut.
// Serve alone returns as soon as the forced stop has closed the
// connections, before such a handler ends: the group would then stop the
// next stage (and the process flush its logger and exit) under a handler
// still logging and touching state.
func TestGRPCReturnsAfterItsHandlers(t *testing.T) {
	l := &lingering{started: make(chan struct{})}
	s := grpc.NewServer()
	llmrouterv1.RegisterPickerServiceServer(s, l)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := GRPC("api", s, ln, 100*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- r.Run(ctx) }()

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
	cancel()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the runner did not return within 10 s of its context ending")
	}
	if !l.ended.Load() {
		t.Fatal("the runner returned while a handler cut after the grace still ran")
	}
	if err := <-called; err == nil {
		t.Fatal("the cut call succeeded")
	}
}
