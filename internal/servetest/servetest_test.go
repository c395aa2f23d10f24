package servetest

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
)

type server struct{ accepted chan struct{} }

func (s *server) Serve(ctx context.Context, ln net.Listener) error {
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
			close(s.accepted)
		}
	}()
	<-ctx.Done()
	ln.Close()
	return errors.New("stopped")
}

func TestLoopback(t *testing.T) {
	s := &server{accepted: make(chan struct{})}
	addr, stop := Loopback(t, s)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	<-s.accepted
	if err := stop(); err == nil || err.Error() != "stopped" {
		t.Fatalf("stop: %v, want Serve's error", err)
	}
	if err := stop(); err == nil || err.Error() != "stopped" {
		t.Fatalf("stop again: %v, want the same error", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("still accepting after stop")
	}
}

func TestFreeAddrIsBindableOutsideEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	for range 20 {
		addr := FreeAddr(t)
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(port)
		if p < 10000 || p >= low {
			t.Fatalf("port %d outside 10000-%d", p, low)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("rebinding %s: %v", addr, err)
		}
		ln.Close()
	}
}
