package servetest

import (
	"context"
	"errors"
	"net"
	"os"
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
	b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	lo, hi := portsOutside(string(b))
	for range 20 {
		addr := FreeAddr(t)
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(port)
		if p < lo || p >= hi {
			t.Fatalf("port %d outside %d-%d", p, lo, hi-1)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("rebinding %s: %v", addr, err)
		}
		ln.Close()
	}
}

func TestPortsOutsideTheEphemeralRange(t *testing.T) {
	for _, c := range []struct {
		in     string
		lo, hi int
	}{
		{"32768\t60999\n", 10000, 32768}, // Linux's default
		{"49152 65535", 10000, 49152},
		{"1024 40000", 40001, 65536}, // starts low: above it
		{"1024 65535", 10000, 65536}, // no room: best effort
		{"", 10000, 32768},           // unreadable: Linux's default
		{"junk", 10000, 32768},
	} {
		if lo, hi := portsOutside(c.in); lo != c.lo || hi != c.hi {
			t.Errorf("portsOutside(%q) = %d-%d, want %d-%d", c.in, lo, hi, c.lo, c.hi)
		}
	}
}
