package servetest

import (
	"context"
	"net"
	"sync"
	"testing"
)

// Server serves ln until ctx ends.
type Server interface {
	Serve(ctx context.Context, ln net.Listener) error
}

// Loopback serves srv on 127.0.0.1:0 and returns the bound address. stop
// ends Serve and returns its error once it has returned (again: the same
// error); the test's cleanup stops it too, ignoring the error, so a test
// that wants Serve's error registers its own cleanup calling stop.
func Loopback(t testing.TB, srv Server) (addr string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	var serveErr error
	stop = func() error {
		once.Do(func() { cancel(); serveErr = <-done })
		return serveErr
	}
	t.Cleanup(func() { _ = stop() })
	return ln.Addr().String(), stop
}
