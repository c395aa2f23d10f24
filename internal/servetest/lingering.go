package servetest

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

// Lingering is a PickerService whose Report ends 300 ms after its call was
// cut, as a stream handler counting and logging its end does: tests of a
// shutdown check that it waits for such a handler (Ended).
type Lingering struct {
	llmrouterv1.UnimplementedPickerServiceServer
	started chan struct{}
	ended   atomic.Bool
}

// NewLingering returns a Lingering whose Report has not been called.
func NewLingering() *Lingering { return &Lingering{started: make(chan struct{})} }

// Report waits for its call to be cut, then lingers; call it once.
func (l *Lingering) Report(ctx context.Context, _ *llmrouterv1.OutcomeReport) (*llmrouterv1.ReportAck, error) {
	close(l.started)
	<-ctx.Done()
	time.Sleep(300 * time.Millisecond)
	l.ended.Store(true)
	return nil, ctx.Err()
}

// Server is a gRPC server serving l's PickerService and a loopback
// listener on a port the OS picks, for the test to serve and stop.
func (l *Lingering) Server(t testing.TB) (*grpc.Server, net.Listener) {
	t.Helper()
	s := grpc.NewServer()
	llmrouterv1.RegisterPickerServiceServer(s, l)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return s, ln
}

// Ended reports whether Report has returned.
func (l *Lingering) Ended() bool { return l.ended.Load() }

// Call sends a Report to the server at addr and returns once its handler
// runs; the channel gets the call's error when the call ends.
func (l *Lingering) Call(t testing.TB, addr string) <-chan error {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
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
	return called
}
