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

// TestQueueTimeoutSheds429: a request that waits out wait_schedule_timeout
// while every instance stays saturated is rejected with 429 and a
// Retry-After — never routed to the saturated instance.
func TestQueueTimeoutSheds429(t *testing.T) {
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
		t.Fatalf("answered before wait_schedule_timeout: %v", final)
	}
	clk.Advance(time.Second)
	mustReport(t, s, "10.0.0.1:8000", load(4, 3))
	s.Tick()
	if final == nil || final.Status != llmrouterv1.PickResponse_REJECTED || final.HttpStatus != 429 || len(final.Endpoints) != 0 {
		t.Fatalf("after timeout: %v, want REJECTED 429 with no endpoint", final)
	}
	if final.RetryAfterSeconds < 1 || final.RetryAfterSeconds > 10 {
		t.Fatalf("Retry-After %d s, want 1..10 (wait_schedule_timeout)", final.RetryAfterSeconds)
	}
	if st := s.Stats(); st.Inflight != 0 || st.Queued != 0 {
		t.Fatalf("stats = %+v: the shed request must not count on the instance", st)
	}
	var m dto.Metric
	if err := s.m.shed.WithLabelValues(shedQueueTimeout).Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Fatalf("shed{queue_timeout} = %v (%v)", m.GetCounter().GetValue(), err)
	}
	if err := s.m.queueWait.Write(&m); err != nil || m.GetHistogram().GetSampleCount() != 1 || m.GetHistogram().GetSampleSum() != 10 {
		t.Fatalf("queue wait = %v (%v)", m.GetHistogram(), err)
	}
}

// TestQueueTimeoutTakesAnInstanceThatFreedUp: at its deadline a request
// still goes to an instance that has room, even if no re-evaluation ran
// since it freed up.
func TestQueueTimeoutTakesAnInstanceThatFreedUp(t *testing.T) {
	s, clk := saturatedOne(t, func(c *config.Config) {
		c.Gateway.WaitScheduleTryPeriod = 10 * time.Second
		c.Scheduler.MissedReports = 1000 // no report for 10 s: the instance stays
	})
	var final *llmrouterv1.PickResponse
	if _, tk := s.TryPick(pickReq("q", "m"), func(r *llmrouterv1.PickResponse) { final = r }); tk == nil {
		t.Fatal("not queued")
	}
	// Room appears without a report (the view changes under the scheduler
	// only through reports, so reach in as a report would).
	s.mu.Lock()
	s.insts["10.0.0.1:8000"].view.Waiting, s.insts["10.0.0.1:8000"].view.Running = 0, 2
	s.mu.Unlock()
	clk.Advance(10 * time.Second)
	s.Tick()
	if final == nil || final.Status != llmrouterv1.PickResponse_ROUTED {
		t.Fatalf("at the deadline with room: %v, want ROUTED", final)
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

// TestPredictedWaitHoldsBackLongQueues: one unreported pick of a 150k-token
// prompt is far under max_waiting (16) but seconds of prefill: the next
// request goes elsewhere, and with every instance so loaded it waits —
// while with max_predicted_wait off, max_waiting alone would route it.
func TestPredictedWaitHoldsBackLongQueues(t *testing.T) {
	long := func(id string) *llmrouterv1.PickRequest {
		r := pickReq(id, "m")
		r.PromptTokens = 150000
		return r
	}
	for _, on := range []bool{true, false} {
		s, _ := newTestScheduler(t, func(c *config.Config) {
			if !on {
				c.Scheduler.MaxPredictedWait = 0
			}
		})
		mustRegister(t, s, "10.0.0.1:8000")
		mustReport(t, s, "10.0.0.1:8000", load(4, 0))
		if r, tk := s.TryPick(long("long"), nil); tk != nil || r.Status != llmrouterv1.PickResponse_ROUTED {
			t.Fatalf("first request to an empty queue: %v", r)
		}
		v, _ := s.InstanceView("10.0.0.1:8000")
		if on != v.Saturated {
			t.Fatalf("max_predicted_wait on=%v: saturated=%v with one queued pick of 150k tokens (predicted %s, max_waiting 16)", on, v.Saturated, s.sat.PredictedWait(&v))
		}
		r, tk := s.TryPick(pickReq("short", "m"), nil)
		if on && (tk == nil || r.Status != llmrouterv1.PickResponse_QUEUED) {
			t.Fatalf("behind 150k queued tokens: %v, want QUEUED", r)
		}
		if !on && r.Status != llmrouterv1.PickResponse_ROUTED {
			t.Fatalf("max_predicted_wait off: %v, want ROUTED (max_waiting alone)", r)
		}
		if on {
			// A second instance with room takes it at once.
			mustRegister(t, s, "10.0.0.2:8000")
			mustReport(t, s, "10.0.0.2:8000", load(4, 0))
			if st := s.Stats(); st.Queued != 0 {
				t.Fatalf("queued request not routed when an instance with room joined: %+v", st)
			}
			for i := range 5 {
				id := fmt.Sprint("s", i)
				if to := route(t, s, pickReq(id, "m")); to != "10.0.0.2:8000" {
					t.Fatalf("pick %d went to the instance predicted to wait: %s", i, to)
				}
				done(t, s, id)
			}
		}
	}
}

// TestQueuedRoutedWhenPredictedWaitDrops: a slow engine at its batch limit
// with requests waiting is predicted over the 2 s target (each waits for
// one of 4 running requests, finishing about once a second, to end); a
// request waits, and is routed by the report that brings the prediction
// under it.
func TestQueuedRoutedWhenPredictedWaitDrops(t *testing.T) {
	s, clk := newTestScheduler(t, nil)
	mustRegister(t, s, "10.0.0.1:8000")
	for range 100 { // outputs of 64 tokens
		s.sat.Completed(64)
	}
	step := 0.0643 // an L4's step with 4 running
	slow := func(waiting int64) *llmrouterv1.Report {
		return &llmrouterv1.Report{Healthy: true, Running: 4, Waiting: waiting, GenerationTokensPerSecond: 4 / step, PrefixCacheHitRatio: 0.9}
	}
	mustReport(t, s, "10.0.0.1:8000", slow(2))
	mustReport(t, s, "10.0.0.1:8000", slow(2)) // held on two reports: at its limit
	var final *llmrouterv1.PickResponse
	if r, tk := s.TryPick(pickReq("q", "m"), func(r *llmrouterv1.PickResponse) { final = r }); tk == nil {
		t.Fatalf("two requests ahead on a 4-sequence L4: %v, want QUEUED", r)
	}
	clk.Advance(150 * time.Millisecond)
	s.Tick()
	mustReport(t, s, "10.0.0.1:8000", slow(2))
	if final != nil {
		t.Fatalf("routed while still predicted over the target: %v", final)
	}
	mustReport(t, s, "10.0.0.1:8000", slow(1))
	if final != nil {
		t.Fatalf("one ahead (about 2 s): routed: %v", final)
	}
	mustReport(t, s, "10.0.0.1:8000", slow(0))
	if final == nil || final.Status != llmrouterv1.PickResponse_ROUTED {
		t.Fatalf("none ahead (about 1 s): %v, want ROUTED", final)
	}
}

// TestOneReportOfWaitingQueuesNothing: an engine whose report catches a
// request that arrived between two of its steps (1 running, 1 waiting) has
// not shown a batch limit: a request is routed to it, not queued as if it
// ran no more than 1, nor after the next report shows 2 running. A hold
// begun before the engine re-registered (restarted) is not finished by
// the registration's first report.
func TestOneReportOfWaitingQueuesNothing(t *testing.T) {
	s, _ := newTestScheduler(t, nil)
	const id = "10.0.0.1:8000"
	lease := mustRegister(t, s, id)
	mustReport(t, s, id, load(1, 1))
	if r, tk := s.TryPick(pickReq("a", "m"), nil); tk != nil || r.Status != llmrouterv1.PickResponse_ROUTED {
		t.Fatalf("1 running, 1 waiting, on one report: %v, want ROUTED", r)
	}
	mustReport(t, s, id, load(2, 0))
	if r, tk := s.TryPick(pickReq("b", "m"), nil); tk != nil || r.Status != llmrouterv1.PickResponse_ROUTED {
		t.Fatalf("then 2 running: %v, want ROUTED", r)
	}
	if got := s.insts[id].view.BatchLimit; got != 0 {
		t.Fatalf("batch limit %d after one report of a request waiting, want none", got)
	}
	mustReport(t, s, id, load(4, 2))
	again := regMsg(id)
	again.Initial = load(4, 2) // its engine restarted, and reports requests waiting at once
	if _, err := s.RegisterAs(again, lease); err != nil {
		t.Fatal(err)
	}
	if got := s.insts[id].view.BatchLimit; got != 0 {
		t.Fatalf("batch limit %d from a hold across a restart, want none", got)
	}
	mustReport(t, s, id, load(4, 2))
	if got := s.insts[id].view.BatchLimit; got != 4 {
		t.Fatalf("batch limit %d after two reports of 4 running, 2 waiting, want 4", got)
	}
}

// TestQueuedRequestGoesOnlyWhereItStartsInTime: a request that has waited
// 9.6 of its 10 s is not sent where it is predicted to wait another second
// (it would start after its deadline): it is shed at the deadline, while a
// new request takes that place.
func TestQueuedRequestGoesOnlyWhereItStartsInTime(t *testing.T) {
	s, clk := newTestScheduler(t, nil)
	mustRegister(t, s, "10.0.0.1:8000")
	for range 100 {
		s.sat.Completed(64)
	}
	slow := func(waiting int64) *llmrouterv1.Report {
		return &llmrouterv1.Report{Healthy: true, Running: 4, Waiting: waiting, GenerationTokensPerSecond: 4 / 0.0643, PrefixCacheHitRatio: 0.9}
	}
	mustReport(t, s, "10.0.0.1:8000", slow(2))
	mustReport(t, s, "10.0.0.1:8000", slow(2)) // held on two reports: at its limit
	var old *llmrouterv1.PickResponse
	if _, tk := s.TryPick(pickReq("old", "m"), func(r *llmrouterv1.PickResponse) { old = r }); tk == nil {
		t.Fatal("not queued")
	}
	for range 48 { // 9.6 s
		clk.Advance(200 * time.Millisecond)
		mustReport(t, s, "10.0.0.1:8000", slow(2))
		s.Tick()
	}
	mustReport(t, s, "10.0.0.1:8000", slow(0)) // about 1 s to a place
	if old != nil {
		t.Fatalf("sent with 0.4 s left where it would wait about 1 s: %v", old)
	}
	if r, tk := s.TryPick(pickReq("new", "m"), nil); tk != nil || r.Status != llmrouterv1.PickResponse_ROUTED {
		t.Fatalf("a new request, 1 s predicted against 2 s: %v, want ROUTED", r)
	}
	clk.Advance(400 * time.Millisecond)
	mustReport(t, s, "10.0.0.1:8000", slow(1))
	s.Tick()
	if old == nil || old.HttpStatus != 429 {
		t.Fatalf("at its deadline: %v, want 429", old)
	}
}
