package verify

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/servetest"
	"github.com/llmrouter/llmrouter/scheduler/registry"
	"github.com/llmrouter/llmrouter/sim/engine"
	"github.com/llmrouter/llmrouter/sim/enginesim"
)

// startEngine serves an enginesim (a simulated vLLM) on 127.0.0.1:0 until
// the test ends.
func startEngine(t *testing.T, model string) string {
	t.Helper()
	srv, err := enginesim.New(enginesim.Options{Model: model, Engine: engine.DefaultConfig(), ShutdownGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := servetest.Loopback(t, srv)
	return addr
}

func check(t *testing.T, c Claim) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return New(Options{Timeout: 2 * time.Second}).Verify(ctx, c)
}

func TestVerifyAcceptsEngine(t *testing.T) {
	addr := startEngine(t, "llama")
	if err := check(t, Claim{Address: addr, Engine: "vllm", Models: []string{"llama"}}); err != nil {
		t.Fatalf("a real (simulated) vLLM refused: %v", err)
	}
}

func TestVerifyRejectsMismatch(t *testing.T) {
	addr := startEngine(t, "llama")
	for _, tc := range []struct {
		claim Claim
		want  string
	}{
		{Claim{Address: addr, Engine: "vllm", Models: []string{"gpt-4"}}, `does not list ["gpt-4"]`},
		{Claim{Address: addr, Engine: "sglang", Models: []string{"llama"}}, "answers as engine vllm; the agent reported sglang"},
		{Claim{Address: addr, Engine: "nonsense", Models: []string{"llama"}}, "unknown engine"},
	} {
		err := check(t, tc.claim)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), addr) {
			t.Errorf("%+v: err = %v, want it to name the address and say %q", tc.claim, err, tc.want)
		}
	}
}

// A plain HTTP server that is not an engine — even one that lists the
// right model — is refused.
func TestVerifyRejectsNonEngineHTTP(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/models", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"object":"list","data":[{"id":"llama","owned_by":"me"}]}`))
	})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("# TYPE http_requests_total counter\nhttp_requests_total 3\n"))
	})
	fake := httptest.NewServer(mux)
	t.Cleanup(fake.Close)
	plain := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plain.Close)
	redirect := httptest.NewServer(http.RedirectHandler("http://169.254.169.254/latest", http.StatusFound))
	t.Cleanup(redirect.Close)
	for _, tc := range []struct{ addr, want string }{
		{strings.TrimPrefix(fake.URL, "http://"), "answers as no known engine"},
		{strings.TrimPrefix(plain.URL, "http://"), "status 404"},
		{strings.TrimPrefix(redirect.URL, "http://"), "redirects are not followed"},
	} {
		err := check(t, Claim{Address: tc.addr, Engine: "vllm", Models: []string{"llama"}})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.addr, err, tc.want)
		}
	}
}

// A TCP listener that does not speak HTTP (an SSH port, say) is refused
// within the timeout, whether it talks or stays silent.
func TestVerifyRejectsNonHTTP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_, _ = c.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
				time.Sleep(3 * time.Second)
				c.Close()
			}()
		}
	}()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = New(Options{Timeout: 500 * time.Millisecond}).Verify(ctx, Claim{Address: ln.Addr().String(), Engine: "vllm", Models: []string{"llama"}})
	if err == nil {
		t.Fatal("a non-HTTP listener was verified")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("verification took %s: not bounded by its timeout", time.Since(start))
	}
}

func TestVerifyBoundsAnswerSize(t *testing.T) {
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"data":[{"id":"` + strings.Repeat("x", MaxModelsBytes) + `"}]}`))
	}))
	t.Cleanup(big.Close)
	err := check(t, Claim{Address: strings.TrimPrefix(big.URL, "http://"), Engine: "vllm", Models: []string{"llama"}})
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v, want the size bound", err)
	}
}

func TestProbe(t *testing.T) {
	addr := startEngine(t, "llama")
	k := New(Options{ProbeTimeout: time.Second})
	if err := k.Probe(context.Background(), addr); err != nil {
		t.Fatalf("probe of a live engine: %v", err)
	}
	dead := servetest.FreeAddr(t)
	if err := k.Probe(context.Background(), dead); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("probe of a closed port: %v, want connection refused", err)
	}
	if err := k.ProbeConnect(context.Background(), addr); err != nil {
		t.Fatalf("connect probe of a live engine: %v", err)
	}
	if err := k.ProbeConnect(context.Background(), dead); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("connect probe of a closed port: %v, want connection refused", err)
	}
}

// The wiring: verification on by default (a non-engine is refused), off
// with verify_engines false, where the probe only connects.
func TestForScheduler(t *testing.T) {
	cfg := config.Default()
	v, p := ForScheduler(cfg)
	if v == nil || p == nil {
		t.Fatal("verification or probe missing by default")
	}
	plain := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plain.Close)
	addr := strings.TrimPrefix(plain.URL, "http://")
	if err := v(context.Background(), registry.Instance{Address: addr, Engine: "vllm", Models: []string{"m"}}); err == nil {
		t.Fatal("a plain listener verified")
	}
	if err := p(context.Background(), addr); err == nil {
		t.Fatal("the default probe accepted a listener that does not serve /v1/models")
	}
	cfg.Scheduler.VerifyEngines = false
	v, p = ForScheduler(cfg)
	if v != nil {
		t.Fatal("verification on with verify_engines false")
	}
	if err := p(context.Background(), addr); err != nil {
		t.Fatalf("connect probe: %v", err)
	}
}
