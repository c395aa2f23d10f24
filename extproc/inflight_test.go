package extproc

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/envoytest"
	"github.com/llmrouter/llmrouter/internal/promtest"
	"github.com/llmrouter/llmrouter/internal/sessionkey"
)

// ledger is a scheduler that counts in-flight picks the way the real one
// does: committed under the pick's request_id, released by a Report of that
// id (an unknown id is ignored). A pick under an id already in flight is a
// collision: the older pick would be hidden.
type ledger struct {
	mu         sync.Mutex
	live       map[string]bool
	collisions int
	picks      []string
	// hold, when set, is called after the commit and decides the answer.
	hold        func(ctx context.Context) (*llmrouterv1.PickResponse, error)
	failReports atomic.Int32 // reports to refuse (scheduler unreachable)
}

func newLedger() *ledger { return &ledger{live: map[string]bool{}} }

func (l *ledger) Pick(ctx context.Context, req *llmrouterv1.PickRequest, _ func(*llmrouterv1.PickResponse)) (*llmrouterv1.PickResponse, error) {
	l.mu.Lock()
	if l.live[req.RequestId] {
		l.collisions++
	}
	l.live[req.RequestId] = true
	l.picks = append(l.picks, req.RequestId)
	hold := l.hold
	l.mu.Unlock()
	if hold != nil {
		return hold(ctx)
	}
	return &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_ROUTED, Endpoints: []string{"10.0.0.1:8000"}}, nil
}

func (l *ledger) Report(_ context.Context, r *llmrouterv1.OutcomeReport) error {
	if l.failReports.Load() > 0 {
		l.failReports.Add(-1)
		return status.Error(codes.Unavailable, "scheduler unreachable")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.live, r.RequestId)
	return nil
}

func (l *ledger) inflight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.live)
}

func sseExchange(md *envoytest.Result, id string) envoytest.Exchange {
	return envoytest.Exchange{
		RequestHeaders:  chatHeaders(envoytest.Header{Key: HeaderRequestID, Value: id}),
		ResponseHeaders: []envoytest.Header{{Key: ":status", Value: "200"}, {Key: "content-type", Value: "text/event-stream"}},
		Chunks: []envoytest.Chunk{
			{Data: []byte("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n")},
			{Data: []byte("data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n")},
			{Data: []byte("data: [DONE]\n\n")},
		},
		Forwarded: md.Metadata,
	}
}

// TestEveryEndReleasesThePick: whichever way a request ends — normally, reset
// mid-response, cancelled before any response, its pick timing out or
// cancelled while the scheduler answers, its answer lost on the way to
// Envoy, the scheduler unreachable when the outcome is reported — the pick
// it took at the scheduler is released, and the gateway's own in-flight
// gauge returns to 0.
func TestEveryEndReleasesThePick(t *testing.T) {
	for _, tc := range []struct {
		name string
		// hold answers the pick after it was committed (nil: at once).
		hold func(ctx context.Context) (*llmrouterv1.PickResponse, error)
		// cancelInPick cancels filter #1's stream once the scheduler has
		// committed the pick (from inside hold): a timer could fire before
		// a slow, loaded run has even sent the body, and then nothing was
		// picked to release.
		cancelInPick bool
		observe      func(ex *envoytest.Exchange)
		// failReports refuses this many reports first.
		failReports int32
		released    string // picks_released reason expected, "" for none
	}{
		{name: "normal end", observe: func(*envoytest.Exchange) {}},
		{name: "reset mid-response", observe: func(ex *envoytest.Exchange) { ex.Truncate = 1 }},
		{name: "cancelled before any response", observe: func(ex *envoytest.Exchange) { ex.NoResponse = true }, released: releaseNoResponse},
		{name: "pick timeout", hold: func(ctx context.Context) (*llmrouterv1.PickResponse, error) {
			<-ctx.Done() // the committed answer never arrives in time
			return nil, ctx.Err()
		}, released: releasePickFailed},
		{name: "client cancel during the pick", cancelInPick: true, hold: func(ctx context.Context) (*llmrouterv1.PickResponse, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}, released: releasePickFailed},
		{name: "answer lost on the way to Envoy", cancelInPick: true, hold: func(ctx context.Context) (*llmrouterv1.PickResponse, error) {
			<-ctx.Done()
			time.Sleep(20 * time.Millisecond) // the stream is gone when the answer is sent
			return &llmrouterv1.PickResponse{Status: llmrouterv1.PickResponse_ROUTED, Endpoints: []string{"10.0.0.1:8000"}}, nil
		}, released: releaseAnswerLost},
		{name: "scheduler unreachable at the end", observe: func(*envoytest.Exchange) {}, failReports: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			l := newLedger()
			l.hold = tc.hold
			if tc.cancelInPick {
				l.hold = func(pctx context.Context) (*llmrouterv1.PickResponse, error) {
					cancel()
					return tc.hold(pctx)
				}
			}
			l.failReports.Store(tc.failReports)
			h := newHarness(t, l, testOptions())
			h.srv.rep.backoff = 10 * time.Millisecond
			res := h.f.Do(ctx, envoytest.Request{Headers: chatHeaders(envoytest.Header{Key: HeaderRequestID, Value: "r"}), Body: []byte(chatBody)})
			if tc.observe != nil {
				if res.Err != nil || len(headerValues(res.Headers, HeaderDestination)) != 1 {
					t.Fatalf("filter #1: err=%v headers=%v", res.Err, res.Headers)
				}
				if l.inflight() != 1 {
					t.Fatalf("in flight after the pick = %d, want 1", l.inflight())
				}
				ex := sseExchange(res, "r")
				tc.observe(&ex)
				if _, err := h.obs.Observe(context.Background(), ex); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, 5*time.Second, "the pick released at the scheduler", func() bool { return l.inflight() == 0 })
			eventually(t, 5*time.Second, "the gateway's in-flight gauge back to 0", func() bool {
				// A request that went on without a pick stays tracked (for
				// its TTFT) until its response is observed.
				return promtest.Value(t, h.reg, "llmrouter_gateway_inflight_requests") == 0 && (tc.observe == nil || h.srv.track.len() == 0)
			})
			if tc.released != "" && promtest.Value(t, h.reg, "llmrouter_gateway_picks_released_total", "reason", tc.released) != 1 {
				t.Fatalf("picks_released{reason=%q} not counted", tc.released)
			}
			if len(l.picks) != 1 {
				t.Fatalf("%d picks, want 1", len(l.picks))
			}
		})
	}
}

// TestReusedRequestIDCountsEveryStream: concurrent requests reusing one
// x-request-id each hold their own pick (keyed by the gateway's per-stream
// id), and each one's end releases its own.
func TestReusedRequestIDCountsEveryStream(t *testing.T) {
	l := newLedger()
	h := newHarness(t, l, testOptions())
	const n = 3
	results := make([]*envoytest.Result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(envoytest.Header{Key: HeaderRequestID, Value: "same"}), Body: []byte(chatBody)})
		}()
	}
	wg.Wait()
	if got := l.inflight(); got != n || l.collisions != 0 {
		t.Fatalf("in flight = %d (collisions %d), want %d: a reused x-request-id hid a concurrent request", got, l.collisions, n)
	}
	if promtest.Value(t, h.reg, "llmrouter_gateway_inflight_requests") != n {
		t.Fatalf("gateway in-flight gauge = %v, want %d", promtest.Value(t, h.reg, "llmrouter_gateway_inflight_requests"), n)
	}
	for i, res := range results[:n-1] {
		if _, err := h.obs.Observe(context.Background(), sseExchange(res, "same")); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "one release per ended stream", func() bool { return l.inflight() == n-1-i })
	}
	// The last one ends without a response.
	ex := sseExchange(results[n-1], "same")
	ex.NoResponse = true
	if _, err := h.obs.Observe(context.Background(), ex); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "every pick released", func() bool { return l.inflight() == 0 && h.srv.track.len() == 0 })
}

// TestHugeRequestIDStillCorrelates: a 100 KiB x-request-id is indexed by its
// digest, and filter #2 without forwarded metadata still finds the request
// by it and releases the pick.
func TestHugeRequestIDStillCorrelates(t *testing.T) {
	l := newLedger()
	h := newHarness(t, l, testOptions())
	id := strings.Repeat("r", 100<<10)
	res := h.f.Do(context.Background(), envoytest.Request{Headers: chatHeaders(envoytest.Header{Key: HeaderRequestID, Value: id}), Body: []byte(chatBody)})
	if res.Err != nil || l.inflight() != 1 {
		t.Fatalf("err=%v inflight=%d", res.Err, l.inflight())
	}
	h.srv.track.mu.Lock()
	for k := range h.srv.track.byRequest {
		if len(k) > sessionkey.MaxLen {
			t.Errorf("the tracker keys a request by %d bytes of its x-request-id", len(k))
		}
	}
	h.srv.track.mu.Unlock()
	ex := sseExchange(res, id)
	ex.Forwarded = nil // correlate by x-request-id alone
	if _, err := h.obs.Observe(context.Background(), ex); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the pick released", func() bool { return l.inflight() == 0 && h.srv.track.len() == 0 })
}
