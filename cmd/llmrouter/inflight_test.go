package main

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/llmrouter/llmrouter/extproc"
	"github.com/llmrouter/llmrouter/internal/envoytest"
)

// gauge reads an unlabelled series from a /metrics page.
func gauge(t *testing.T, httpAddr, name string) float64 {
	t.Helper()
	res, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("%s not on /metrics", name)
	return 0
}

// TestInflightPerStreamWithTheRealScheduler: over the real scheduler and
// gateway, concurrent requests reusing one x-request-id are each in flight,
// and each one's end — a completed response, a reset, no response at all —
// releases exactly its own pick.
func TestInflightPerStreamWithTheRealScheduler(t *testing.T) {
	cfg := inProcessConfig()
	cfg.Scheduler.Policy = "least-request"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, done := startControlPlane(t, ctx, cfg, true)
	registerAgent(t, ctx, cfg, a.API, "127.0.0.1:8001")
	inflight := func() float64 { return gauge(t, a.HTTP, "llmrouter_scheduler_inflight_requests") }

	f := extProcFilter(t, a.ExtProc)
	f.ReceivingNamespaces = append(f.ReceivingNamespaces, extproc.GatewayNamespace)
	const n = 3
	results := make([]*envoytest.Result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); results[i] = f.Do(ctx, chatReq) }() // all with x-request-id r1
	}
	wg.Wait()
	for _, r := range results {
		if r.Err != nil || dest(r) != "127.0.0.1:8001" {
			t.Fatalf("err=%v destination=%q", r.Err, dest(r))
		}
	}
	if got := inflight(); got != n {
		t.Fatalf("scheduler in flight = %v after %d concurrent requests sharing x-request-id r1, want %d", got, n, n)
	}

	client, cc, err := envoytest.Dial(a.ExtProc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	obs := &envoytest.Observer{Client: client, CloseWait: 2 * time.Second}
	ex := func(r *envoytest.Result) envoytest.Exchange {
		return envoytest.Exchange{
			RequestHeaders:  chatReq.Headers,
			ResponseHeaders: []envoytest.Header{{Key: ":status", Value: "200"}, {Key: "content-type", Value: "text/event-stream"}},
			Chunks: []envoytest.Chunk{{Data: []byte("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n")},
				{Data: []byte("data: [DONE]\n\n")}},
			Forwarded: r.Metadata,
		}
	}
	for i, end := range []func(*envoytest.Exchange){
		func(*envoytest.Exchange) {},                        // completed
		func(e *envoytest.Exchange) { e.Truncate = 1 },      // reset mid-response
		func(e *envoytest.Exchange) { e.NoResponse = true }, // ended before any response
	} {
		e := ex(results[i])
		end(&e)
		if _, err := obs.Observe(ctx, e); err != nil {
			t.Fatal(err)
		}
		want := float64(n - 1 - i)
		waitFor(t, "one pick released per ended request", func() bool { return inflight() == want })
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("all-in-one did not shut down")
	}
}
