//go:build faults

package faults

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/integration/harness"
	"github.com/llmrouter/llmrouter/internal/envoytest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// TestForgedExtProc: the gateway listens on the host's non-loopback address,
// where it demands the shared token. A client speaking ext_proc as Envoy
// does but without the token is refused and gets no pick (the scheduler
// makes no decision for it); with the token it gets one; the data plane,
// given the token by the bootstrap, is served throughout. Without a token
// the gateway refuses to listen there at all.
func TestForgedExtProc(t *testing.T) {
	row := scenario(t)
	ip := hostIP()
	if ip == "" {
		t.Skip("this host has no non-loopback IPv4 address to bind the gateway to; the scenario needs one")
	}
	row.note = "(gateway on " + ip + ")"

	// No token: the gateway will not listen beyond loopback.
	refused := harness.Start(t, harness.Spec{Name: "gateway-tokenless", Args: []string{"gateway",
		"--listen", net.JoinHostPort(ip, "0"), "--scheduler", "127.0.0.1:1", "--http-listen", "127.0.0.1:0"}})
	for deadline := time.Now().Add(startTimeout); ; time.Sleep(50 * time.Millisecond) {
		select {
		case <-refused.Exited():
		default:
			if len(refused.Logs("gateway started", nil)) > 0 {
				t.Errorf("a tokenless gateway started on %s (non-loopback)", ip)
				refused.Kill(t)
			} else if time.Now().After(deadline) {
				t.Errorf("a tokenless gateway asked to listen on %s neither refused nor started within %s", ip, startTimeout)
				refused.Kill(t)
			} else {
				continue
			}
		}
		break
	}
	if err := refused.ExitErr(); err == nil {
		t.Errorf("a tokenless gateway asked to listen on %s exited cleanly instead of refusing", ip)
	}

	s := startSystem(t, options{split: true, token: "faults-token", gwListen: net.JoinHostPort(ip, "0")})
	l := s.openLoop(10, 4*time.Second, chatReq{}, nil)

	client, cc, err := envoytest.Dial(s.ExtProc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	f := &envoytest.Filter{Client: client, MessageTimeout: 2 * time.Second}
	req := envoytest.Request{
		Headers: []envoytest.Header{{Key: ":method", Value: "POST"}, {Key: ":path", Value: "/v1/chat/completions"},
			{Key: ":authority", Value: "llm"}, {Key: ":scheme", Value: "http"}, {Key: "content-type", Value: "application/json"}},
		Body: []byte(`{"model":"` + model + `","messages":[{"role":"user","content":"forged"}],"max_tokens":4}`),
	}
	decisions := func() float64 { return s.Counter(t, s.SchedulerHTTP, "llmrouter_scheduler_decisions_total") }

	const forged = 20
	before := decisions()
	for i := range forged {
		res := f.Do(t.Context(), req)
		if i == 0 {
			// Unauthenticated, or EOF when the send loses the race with
			// the refusal (envoytest reports the send's error).
			t.Logf("a forged client without the token: %v", res.Err)
		}
		if res.Err == nil {
			t.Fatalf("a forged ext_proc client without the token was answered: headers %v", res.Headers)
		}
		if v, ok := envoytest.Get(res.Headers, "x-gateway-destination-endpoint"); ok {
			t.Fatalf("a forged ext_proc client without the token got a pick: %s", v)
		}
	}
	rs := l.wait()
	// The data plane's own requests were picked meanwhile: count them out.
	picked := s.Counter(t, s.GatewayHTTP, "llmrouter_gateway_requests_total", "outcome", "routed")
	if d := decisions() - before; d > float64(len(rs)) {
		t.Errorf("%g scheduler decisions for %d data-plane requests and %d forged ones (gateway routed %g): the forged ones were picked", d, len(rs), forged, picked)
	}
	judge(t, row, rs, l.began, false)

	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer faults-token")
	res := f.Do(ctx, req)
	if res.Err != nil {
		t.Errorf("the gateway refused a client presenting the token: %v", res.Err)
	} else if _, ok := envoytest.Get(res.Headers, "x-gateway-destination-endpoint"); !ok {
		t.Errorf("a client presenting the token got no pick: %v", res.Headers)
	}
	s.alive(t)
}

// hostIP is the first non-loopback IPv4 address of an interface that is up
// ("" when there is none).
func hostIP() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return ""
	}
	for _, in := range ifs {
		if in.Flags&net.FlagUp == 0 || in.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := in.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
				return n.IP.String()
			}
		}
	}
	return ""
}
