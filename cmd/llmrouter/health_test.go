package main

import (
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/llmrouter/llmrouter/internal/grpcx"
)

func TestHealthCommand(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	h := grpcx.RegisterHealth(g)
	go func() { _ = g.Serve(ln) }()
	defer g.Stop()
	if r := run(t, nil, "health", ln.Addr().String()); r.code != 0 || strings.TrimSpace(r.stdout) != "SERVING" {
		t.Fatalf("health of a serving server: %+v", r)
	}
	h.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if r := run(t, nil, "health", "--plaintext", ln.Addr().String()); r.code != 1 || !strings.Contains(r.stdout, "NOT_SERVING") {
		t.Fatalf("health of a not serving server: %+v", r)
	}
	g.Stop()
	if r := run(t, nil, "health", "--timeout", "300ms", ln.Addr().String()); r.code != 2 {
		t.Fatalf("health of a stopped server: %+v", r)
	}
}
