package scheduler

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
)

// saturatedOne returns a scheduler with one instance at max_waiting.
func saturatedOne(t *testing.T, mutate func(*config.Config)) (*Scheduler, *fakeClock) {
	t.Helper()
	s, clk := newTestScheduler(t, func(c *config.Config) {
		c.Scheduler.MaxWaiting = 1
		if mutate != nil {
			mutate(c)
		}
	})
	mustRegister(t, s, "10.0.0.1:8000")
	mustReport(t, s, "10.0.0.1:8000", load(4, 1))
	return s, clk
}

func TestQueueBlockingPickQueuedThenRouted(t *testing.T) {
	s, _ := saturatedOne(t, nil)
	queued := make(chan *llmrouterv1.PickResponse, 2)
	type result struct {
		r   *llmrouterv1.PickResponse
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := s.Pick(context.Background(), pickReq("q", "m"), func(r *llmrouterv1.PickResponse) { queued <- r })
		done <- result{r, err}
	}()
	var q *llmrouterv1.PickResponse
	select {
	case q = <-queued:
	case <-time.After(10 * time.Second):
		t.Fatal("no QUEUED callback")
	}
	if q.Status != llmrouterv1.PickResponse_QUEUED || q.MaxWait.AsDuration() != 10*time.Second {
		t.Fatalf("queued response = %v", q)
	}
	select {
	case r := <-done:
		t.Fatalf("Pick returned while saturated: %v %v", r.r, r.err)
	default:
	}
	// Capacity appears in a report: the request is routed.
	mustReport(t, s, "10.0.0.1:8000", load(4, 0))
	select {
	case r := <-done:
		if r.err != nil || r.r.Status != llmrouterv1.PickResponse_ROUTED || r.r.Endpoints[0] != "10.0.0.1:8000" {
			t.Fatalf("final = %v, %v", r.r, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("queued request not routed when capacity appeared")
	}
	if len(queued) != 0 {
		t.Fatal("QUEUED callback called more than once")
	}
	if s.Stats().Queued != 0 || s.Stats().Inflight != 1 {
		t.Fatalf("stats = %+v", s.Stats())
	}
}

func TestQueueRoutedOnCompletion(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.MaxWaiting = 1 })
	mustRegister(t, s, "10.0.0.1:8000")
	first, _ := s.TryPick(pickReq("first", "m"), nil) // unreported pick fills the one slot
	if first.Status != llmrouterv1.PickResponse_ROUTED {
		t.Fatalf("first = %v", first)
	}
	var final *llmrouterv1.PickResponse
	resp, tk := s.TryPick(pickReq("second", "m"), func(r *llmrouterv1.PickResponse) { final = r })
	if tk == nil || resp.Status != llmrouterv1.PickResponse_QUEUED {
		t.Fatalf("second = %v", resp)
	}
	if err := s.Report(context.Background(), &llmrouterv1.OutcomeReport{RequestId: "first", Success: true}); err != nil {
		t.Fatal(err)
	}
	if final == nil || final.Status != llmrouterv1.PickResponse_ROUTED {
		t.Fatalf("not routed on completion: %v", final)
	}
}

func TestQueueFullRejects429(t *testing.T) {
	s, _ := saturatedOne(t, func(c *config.Config) { c.Gateway.MaxQueueSize = 2 })
	for i := range 2 {
		if r, tk := s.TryPick(pickReq(fmt.Sprint(i), "m"), nil); tk == nil {
			t.Fatalf("request %d not queued: %v", i, r)
		}
	}
	r, tk := s.TryPick(pickReq("over", "m"), nil)
	if tk != nil || r.Status != llmrouterv1.PickResponse_REJECTED || r.HttpStatus != 429 || r.RetryAfterSeconds < 1 {
		t.Fatalf("past max_queue_size: %v", r)
	}
	if s.Stats().Queued != 2 {
		t.Fatalf("stats = %+v", s.Stats())
	}
}

func TestQueueTimeoutRoutesAnyway(t *testing.T) {
	reg := prometheus.NewRegistry()
	clk := newFakeClock()
	cfg := testConfig()
	cfg.Scheduler.MaxWaiting = 1
	s, err := New(cfg, Deps{Clock: clk, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, s, "10.0.0.1:8000")
	mustReport(t, s, "10.0.0.1:8000", load(4, 3))
	var final *llmrouterv1.PickResponse
	if _, tk := s.TryPick(pickReq("q", "m"), func(r *llmrouterv1.PickResponse) { final = r }); tk == nil {
		t.Fatal("not queued")
	}
	for range 9 { // 9 s of re-evaluation: still saturated, still waiting
		clk.Advance(time.Second)
		mustReport(t, s, "10.0.0.1:8000", load(4, 3))
		s.Tick()
	}
	if final != nil {
		t.Fatalf("routed before wait_schedule_timeout: %v", final)
	}
	clk.Advance(time.Second)
	mustReport(t, s, "10.0.0.1:8000", load(4, 3))
	s.Tick()
	if final == nil || final.Status != llmrouterv1.PickResponse_ROUTED || final.Endpoints[0] != "10.0.0.1:8000" {
		t.Fatalf("after timeout: %v", final)
	}
	var m dto.Metric
	if err := s.m.fallbacks.WithLabelValues(fallbackQueueTimeout).Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Fatalf("queue_timeout fallbacks = %v (%v)", m.GetCounter().GetValue(), err)
	}
	if err := s.m.queueWait.Write(&m); err != nil || m.GetHistogram().GetSampleCount() != 1 || m.GetHistogram().GetSampleSum() != 10 {
		t.Fatalf("queue wait = %v (%v)", m.GetHistogram(), err)
	}
}

func TestQueueTimeoutWithNoInstanceRejects503(t *testing.T) {
	s, clk := saturatedOne(t, nil)
	var final *llmrouterv1.PickResponse
	s.TryPick(pickReq("q", "m"), func(r *llmrouterv1.PickResponse) { final = r })
	if err := s.Drain("10.0.0.1:8000", "test"); err != nil {
		t.Fatal(err)
	}
	clk.Advance(5 * time.Second)
	s.Tick()
	if final != nil {
		t.Fatalf("answered before the deadline: %v", final)
	}
	clk.Advance(5 * time.Second)
	s.Tick()
	if final == nil || final.HttpStatus != 503 {
		t.Fatalf("after timeout with no instance: %v", final)
	}
}

func TestQueuePriorityThenArrival(t *testing.T) {
	s, _ := saturatedOne(t, nil)
	var order []string
	for _, q := range []struct {
		id   string
		prio int32
	}{{"low1", 0}, {"low2", 0}, {"high", 5}, {"mid", 1}} {
		req := pickReq(q.id, "m")
		req.Priority = q.prio
		id := q.id
		if _, tk := s.TryPick(req, func(*llmrouterv1.PickResponse) { order = append(order, id) }); tk == nil {
			t.Fatalf("%s not queued", id)
		}
	}
	// Each report frees exactly one place (max_waiting 1): the next pick
	// fills it until the following report.
	for range 4 {
		mustReport(t, s, "10.0.0.1:8000", load(4, 0))
	}
	want := []string{"high", "mid", "low1", "low2"}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("order = %v, want %v", order, want)
	}
}

func TestQueueContextCancel(t *testing.T) {
	s, _ := saturatedOne(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	queued := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		_, err := s.Pick(ctx, pickReq("q", "m"), func(*llmrouterv1.PickResponse) { queued <- struct{}{} })
		done <- err
	}()
	select {
	case <-queued:
	case <-time.After(10 * time.Second):
		t.Fatal("not queued")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Pick did not return on cancel")
	}
	if st := s.Stats(); st.Queued != 0 || st.Inflight != 0 {
		t.Fatalf("stats after cancel = %+v", st)
	}
	// Capacity later must not route the cancelled request.
	mustReport(t, s, "10.0.0.1:8000", load(0, 0))
	if st := s.Stats(); st.Inflight != 0 {
		t.Fatalf("cancelled request routed: %+v", st)
	}
}

func TestQueueTicketCancel(t *testing.T) {
	s, _ := saturatedOne(t, nil)
	called := false
	_, tk := s.TryPick(pickReq("q", "m"), func(*llmrouterv1.PickResponse) { called = true })
	s.Cancel(tk)
	mustReport(t, s, "10.0.0.1:8000", load(0, 0))
	if called || s.Stats().Queued != 0 || s.Stats().Inflight != 0 {
		t.Fatalf("cancelled ticket: called=%v stats=%+v", called, s.Stats())
	}
}

func TestQueueZeroSizeRejects(t *testing.T) {
	s, _ := saturatedOne(t, func(c *config.Config) { c.Gateway.MaxQueueSize = 0 })
	r, tk := s.TryPick(pickReq("q", "m"), nil)
	if tk != nil || r.HttpStatus != 429 {
		t.Fatalf("no queue: %v", r)
	}
}

func TestSaturatedByKVUsage(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.MaxKVCacheUsage = 0.9; c.Scheduler.MaxWaiting = 0 })
	mustRegister(t, s, "10.0.0.1:8000")
	mustRegister(t, s, "10.0.0.2:8000")
	mustReport(t, s, "10.0.0.1:8000", &llmrouterv1.Report{Healthy: true, KvCacheUsage: 0.95})
	for i := range 10 {
		r, _ := s.TryPick(pickReq(fmt.Sprint(i), "m"), nil)
		if r.Endpoints[0] != "10.0.0.2:8000" {
			t.Fatalf("KV-saturated instance picked first: %v", r)
		}
		if len(r.Endpoints) != 2 {
			t.Fatalf("saturated instance should still be a fallback: %v", r)
		}
	}
}
