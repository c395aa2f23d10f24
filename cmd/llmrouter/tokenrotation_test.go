package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/llmrouter/llmrouter/internal/config"
)

// A gateway whose token the scheduler refuses keeps serving (every request
// passes through) and stays ready, saying "unauthenticated" in /readyz; a
// scheduler in a rotation (token new, token_previous old) accepts a gateway
// and an agent still on the old token.
func TestGatewayTokenRefusedThenRotation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sched := config.Default()
	sched.Scheduler.Policy = "least-request"
	sched.Scheduler.VerifyEngines = false // the agent here is a fake with no engine behind its address
	sched.Scheduler.Listen, sched.Scheduler.XDSListen, sched.Scheduler.HTTPListen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	sched.Token, sched.TokenPrevious = "new-token", "old-token"
	a, _ := startControlPlane(t, ctx, sched, false)

	agent := sched
	agent.Token, agent.TokenPrevious = "old-token", "" // not rolled yet
	registerAgent(t, ctx, agent, a.API, "127.0.0.1:8003")

	gateway := func(token string) gatewayAddrs {
		cfg := config.Default()
		cfg.Token = token
		cfg.Gateway.Listen, cfg.Gateway.HTTPListen, cfg.Gateway.SchedulerAddress = "127.0.0.1:0", "127.0.0.1:0", a.API
		addrs := make(chan gatewayAddrs, 1)
		done := make(chan error, 1)
		go func() { done <- runGateway(ctx, cfg, zap.NewNop(), func(g gatewayAddrs) { addrs <- g }) }()
		select {
		case g := <-addrs:
			return g
		case err := <-done:
			t.Fatalf("gateway exited: %v", err)
		case <-time.After(20 * time.Second):
			t.Fatal("gateway did not start")
		}
		return gatewayAddrs{}
	}

	wrong := gateway("leaked-token")
	f := extProcFilter(t, wrong.ExtProc)
	waitFor(t, "the refused gateway to say unauthenticated", func() bool {
		r := f.Do(ctx, chatReq)
		if r.Err != nil || !r.Continued || dest(r) != "" {
			t.Fatalf("refused token: err=%v continued=%v destination=%q", r.Err, r.Continued, dest(r))
		}
		code, body := readyz(t, wrong.HTTP)
		if code != 200 {
			t.Fatalf("/readyz %d %q: a refused token must not take the gateway out of service", code, body)
		}
		return strings.Contains(body, "unauthenticated")
	})

	old := gateway("old-token")
	g := extProcFilter(t, old.ExtProc)
	waitFor(t, "a gateway on the previous token to get picks", func() bool { return dest(g.Do(ctx, chatReq)) == "127.0.0.1:8003" })
	if _, body := readyz(t, old.HTTP); strings.Contains(body, "unauthenticated") || strings.Contains(body, "degraded") {
		t.Fatalf("/readyz of the accepted gateway: %q", body)
	}
}
