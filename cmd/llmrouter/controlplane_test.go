package main

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/llmrouter/llmrouter/internal/config"
)

// startControlPlane runs the scheduler (and, withGateway, the gateway) in
// process until ctx ends, and returns its bound addresses and a channel that
// yields its exit error.
func startControlPlane(t *testing.T, ctx context.Context, cfg config.Config, withGateway bool) (serverAddrs, <-chan error) {
	t.Helper()
	addrs := make(chan serverAddrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- runControlPlane(ctx, cfg, zap.NewNop(), withGateway, func(a serverAddrs) { addrs <- a })
	}()
	select {
	case a := <-addrs:
		return a, done
	case err := <-done:
		t.Fatalf("control plane exited: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("control plane did not start")
	}
	return serverAddrs{}, nil
}
