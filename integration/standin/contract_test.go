package standin

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/xds"
)

// The shipped bootstrap against the project's own ADS server (package xds),
// state-of-the-world and delta: the stand-in accepts what the scheduler
// publishes (no NACK), follows endpoint changes, and routes the pick.
func TestShippedBootstrapWithOurXDSServer(t *testing.T) {
	for _, delta := range []bool{false, true} {
		name := "sotw"
		if delta {
			name = "delta"
		}
		t.Run(name, func(t *testing.T) { contractRun(t, delta) })
	}
}

func contractRun(t *testing.T, delta bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := config.Default()
	xs := xds.New(cfg, zaptest.NewLogger(t), nil)
	defer xs.Close()
	xl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- xs.Serve(ctx, xl) }()
	defer func() { cancel(); <-served }()

	var eps []xds.Endpoint
	for i := 0; i < 2; i++ {
		name := []string{"a", "b"}[i]
		u := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, name)
		}))
		defer u.Close()
		eps = append(eps, xds.Endpoint{ID: name, Address: u.Listener.Addr().String()})
	}
	xs.SetEndpoints(eps)

	proc := &fakeProc{pick: func(string) string { return eps[1].Address }}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pg := grpc.NewServer()
	extprocsvc.RegisterExternalProcessorServer(pg, proc)
	go func() { _ = pg.Serve(pl) }()
	defer pg.Stop()

	raw, err := os.ReadFile(filepath.Join("..", "..", "bootstrap", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	y := string(raw)
	if delta {
		y = strings.Replace(y, "api_type: GRPC", "api_type: DELTA_GRPC", 1)
	}
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	bc, err := LoadBootstrap(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(bc, Options{ListenOverride: "127.0.0.1:0", AdminOverride: "127.0.0.1:0",
		ClusterOverrides: map[string]string{"xds_cluster": xl.Addr().String(), "extproc": pl.Addr().String()},
		Logger:           zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	select {
	case <-s.Ready():
	case <-time.After(15 * time.Second):
		t.Fatal("not initialized")
	}
	waitFor(t, func() bool { return len(s.Endpoints(cfg.Scheduler.ClusterName)) == 2 })
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	for i := 0; i < 3; i++ {
		resp, err := client.Post("http://"+s.Addr()+"/v1/chat/completions", "application/json", strings.NewReader(chatBody))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "b" {
			t.Fatalf("status %d body %q, want the pick b", resp.StatusCode, b)
		}
	}
	// An instance leaving the fleet leaves the EDS set.
	xs.SetEndpoints(eps[:1])
	waitFor(t, func() bool { return len(s.Endpoints(cfg.Scheduler.ClusterName)) == 1 })
	resp, err := client.Post("http://"+s.Addr()+"/v1/chat/completions", "application/json", strings.NewReader(chatBody))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "a" {
		t.Fatalf("status %d body %q: a stale pick must fall back to round robin", resp.StatusCode, b)
	}
	if _, nacks := s.XDSCounts(); nacks != 0 {
		t.Fatalf("%d NACKs of our own xDS resources", nacks)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 15s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
