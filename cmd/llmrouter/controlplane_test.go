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

// inProcessConfig is the default configuration with every scheduler and
// gateway listener on 127.0.0.1:0 and engine verification off: the agents
// of these tests are fakes with no engine behind their address.
func inProcessConfig() config.Config {
	cfg := config.Default()
	cfg.Scheduler.VerifyEngines = false
	cfg.Scheduler.Listen, cfg.Scheduler.XDSListen, cfg.Scheduler.HTTPListen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Gateway.Listen = "127.0.0.1:0"
	return cfg
}

// stopped waits, after its context ended, for what (a control plane) to
// exit cleanly within the time given.
func stopped(t *testing.T, what string, done <-chan error, within time.Duration) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s shutdown: %v", what, err)
		}
	case <-time.After(within):
		t.Fatalf("%s did not shut down", what)
	}
}
