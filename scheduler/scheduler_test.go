package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	"github.com/llmrouter/llmrouter/scheduler/registry"
)

func TestRegisterReportAndRemoveOnClose(t *testing.T) {
	s, _ := newTestScheduler(t, nil)
	changed, cancel := s.Registry().Watch()
	defer cancel()

	l := mustRegister(t, s, "10.0.0.1:8000")
	select {
	case <-changed:
	default:
		t.Fatal("no watch signal after registration")
	}
	if got := routableIDs(s); !slices.Equal(got, []string{"10.0.0.1:8000"}) {
		t.Fatalf("routable = %v", got)
	}
	mustReport(t, s, l.ID, &llmrouterv1.Report{Healthy: true, Running: 3, Waiting: 1, KvCacheUsage: 0.4})
	inst, _ := s.Registry().Get(l.ID)
	if inst.Running != 3 || inst.Waiting != 1 || inst.KVCacheUsage != 0.4 {
		t.Fatalf("report not applied: %+v", inst)
	}

	// The stream closing removes it at once, and ends the lease.
	if !s.Deregister(l.ID, l.Gen, "stream closed") {
		t.Fatal("deregister refused")
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("lease not ended")
	}
	if got := routableIDs(s); len(got) != 0 {
		t.Fatalf("routable after close = %v", got)
	}
	select {
	case <-changed:
	default:
		t.Fatal("no watch signal after removal")
	}
	if err := s.InstanceReport(l.ID, 0, load(0, 0)); !errors.Is(err, registry.ErrUnknown) {
		t.Fatalf("report after removal: %v, want ErrUnknown", err)
	}

	// Re-registration brings it back.
	mustRegister(t, s, "10.0.0.1:8000")
	if got := routableIDs(s); !slices.Equal(got, []string{"10.0.0.1:8000"}) {
		t.Fatalf("routable after re-registration = %v", got)
	}
}

// TestDuplicateRegistrationRefused: an address held by a live registration
// cannot be taken over by another (an agent reusing an engine's ID); the
// holder itself re-registering (its engine restarted) replaces it, and the
// stale lease can then neither remove the new registration nor report.
func TestDuplicateRegistrationRefused(t *testing.T) {
	s, _ := newTestScheduler(t, nil)
	old := mustRegister(t, s, "10.0.0.1:8000")
	if _, err := s.Register(regMsg("10.0.0.1:8000", "rogue")); !errors.Is(err, registry.ErrTaken) || !strings.Contains(err.Error(), "10.0.0.1:8000") {
		t.Fatalf("takeover: err = %v, want ErrTaken naming the address", err)
	}
	if got := s.Models(); !slices.Equal(got, []string{"m"}) {
		t.Fatalf("models after a refused takeover = %v", got)
	}
	nw, err := s.RegisterAs(regMsg("10.0.0.1:8000", "m", "m2"), old)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-old.Done():
	default:
		t.Fatal("old lease not ended by the new registration")
	}
	if !strings.Contains(old.Reason(), "replaced") {
		t.Fatalf("reason = %q", old.Reason())
	}
	// The old stream closing late must not remove the new registration, nor
	// may its reports land.
	if s.Deregister(old.ID, old.Gen, "old stream closed") {
		t.Fatal("stale lease removed the new registration")
	}
	if err := s.InstanceReport(old.ID, old.Gen, load(9, 9)); err == nil {
		t.Fatal("stale lease's report accepted")
	}
	if err := s.InstanceReport(nw.ID, nw.Gen, load(1, 0)); err != nil {
		t.Fatal(err)
	}
	if got := s.Models(); !slices.Equal(got, []string{"m", "m2"}) {
		t.Fatalf("models = %v", got)
	}
}

func TestUnhealthyOutAtOnce(t *testing.T) {
	s, _ := newTestScheduler(t, nil)
	mustRegister(t, s, "10.0.0.1:8000")
	mustRegister(t, s, "10.0.0.2:8000")
	changed, cancel := s.Registry().Watch()
	defer cancel()
	mustReport(t, s, "10.0.0.1:8000", &llmrouterv1.Report{Healthy: false, UnhealthyReason: "connection refused"})
	select {
	case <-changed:
	default:
		t.Fatal("no watch signal on health change")
	}
	if got := routableIDs(s); !slices.Equal(got, []string{"10.0.0.2:8000"}) {
		t.Fatalf("routable = %v", got)
	}
	for i := range 20 {
		resp, _ := s.TryPick(pickReq(fmt.Sprint(i), "m"), nil)
		if slices.Contains(resp.Endpoints, "10.0.0.1:8000") {
			t.Fatalf("unhealthy instance picked: %v", resp)
		}
	}
	mustReport(t, s, "10.0.0.1:8000", load(0, 0))
	if len(routableIDs(s)) != 2 {
		t.Fatal("healthy report did not bring it back")
	}
}

func TestAddressValidation(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.AllowedCIDRs = []string{"10.0.0.0/8", "fd00::/8"} })
	for _, tc := range []struct {
		addr string
		want error
	}{
		{"engine-1:8000", registry.ErrInvalid},
		{"localhost:8000", registry.ErrInvalid},
		{"10.0.0.1", registry.ErrInvalid},
		{"10.0.0.1:0", registry.ErrInvalid},
		{"0.0.0.0:8000", registry.ErrInvalid},
		{"192.168.1.5:8000", registry.ErrNotAllowed},
		{"[2001:db8::1]:8000", registry.ErrNotAllowed},
		{"10.1.2.3:8000", nil},
		{"[fd00::5]:8000", nil},
	} {
		_, err := s.Register(regMsg(tc.addr))
		if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
			t.Errorf("%s: err = %v, want %v", tc.addr, err, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), tc.addr) {
			t.Errorf("%s: error does not name the address: %v", tc.addr, err)
		}
	}
	if _, err := s.Register(&llmrouterv1.Register{Address: "10.0.0.9:8000"}); !errors.Is(err, registry.ErrInvalid) {
		t.Errorf("registration without models: %v", err)
	}
}

// TestNoInstanceRegisteredIsNot404: a scheduler that knows no instance at
// all (just restarted, agents not yet back) cannot tell that a model does not
// exist: 503, which the gateway passes through to Envoy, never 404.
func TestNoInstanceRegisteredIsNot404(t *testing.T) {
	s, _ := newTestScheduler(t, nil)
	resp, tk := s.TryPick(pickReq("r1", "llama"), nil)
	if tk != nil || resp.Status != llmrouterv1.PickResponse_REJECTED || resp.HttpStatus != 503 || !strings.Contains(resp.Reason, "llama") {
		t.Fatalf("empty fleet: %v", resp)
	}
	mustRegister(t, s, "10.0.0.1:8000", "llama")
	if resp, _ := s.TryPick(pickReq("r2", "gpt-9"), nil); resp.HttpStatus != 404 {
		t.Fatalf("unknown model with a fleet registered: %v", resp)
	}
}

func TestUnknownModelAndNoInstance(t *testing.T) {
	s, _ := newTestScheduler(t, nil)
	mustRegister(t, s, "10.0.0.1:8000", "llama")
	resp, tk := s.TryPick(pickReq("r1", "gpt-9"), nil)
	if tk != nil || resp.Status != llmrouterv1.PickResponse_REJECTED || resp.HttpStatus != 404 ||
		!strings.Contains(resp.Reason, "gpt-9") || !strings.Contains(resp.Reason, "llama") {
		t.Fatalf("unknown model: %v", resp)
	}
	if err := s.Drain("10.0.0.1:8000", "test"); err != nil {
		t.Fatal(err)
	}
	resp, _ = s.TryPick(pickReq("r2", "llama"), nil)
	if resp.Status != llmrouterv1.PickResponse_REJECTED || resp.HttpStatus != 503 {
		t.Fatalf("no routable instance: %v", resp)
	}
	if resp.Policy != "least-request" {
		t.Fatalf("policy = %q", resp.Policy)
	}
}

func TestDefaultPool(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.DefaultPool = "base" })
	mustRegister(t, s, "10.0.0.1:8000", "base")
	mustRegister(t, s, "10.0.0.2:8000", "other")
	for i := range 10 {
		resp, _ := s.TryPick(pickReq(fmt.Sprint(i), "unknown-model"), nil)
		if resp.Status != llmrouterv1.PickResponse_ROUTED || resp.Endpoints[0] != "10.0.0.1:8000" || len(resp.Endpoints) != 1 {
			t.Fatalf("default pool: %v", resp)
		}
		// The gateway labels metrics by model only when pool equals it.
		if resp.Pool != "base" {
			t.Fatalf("default pool answer names pool %q, want base", resp.Pool)
		}
	}
	if resp, _ := s.TryPick(pickReq("own", "other"), nil); resp.Pool != "other" {
		t.Fatalf("a served model's answer names pool %q, want other", resp.Pool)
	}
}

func TestOnlyInstancesServingTheModel(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Gateway.RetryCount = 5; c.Scheduler.MaxWaiting = 0 })
	mustRegister(t, s, "10.0.0.1:8000", "a")
	mustRegister(t, s, "10.0.0.2:8000", "a", "b")
	mustRegister(t, s, "10.0.0.3:8000", "b")
	for i := range 50 {
		resp, _ := s.TryPick(pickReq(fmt.Sprint(i), "a"), nil)
		slices.Sort(resp.Endpoints)
		if !slices.Equal(resp.Endpoints, []string{"10.0.0.1:8000", "10.0.0.2:8000"}) {
			t.Fatalf("model a: %v", resp)
		}
	}
}

func TestFallbacksOrderedNeverDrainingOrUnhealthy(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Gateway.RetryCount = 2; c.Scheduler.MaxWaiting = 0 })
	for i := 1; i <= 6; i++ {
		mustRegister(t, s, fmt.Sprintf("10.0.0.%d:8000", i))
		mustReport(t, s, fmt.Sprintf("10.0.0.%d:8000", i), load(int64(i), 0))
	}
	resp, _ := s.TryPick(pickReq("r", "m"), nil)
	want := []string{"10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"}
	if !slices.Equal(resp.Endpoints, want) {
		t.Fatalf("endpoints = %v, want %v (least loaded first, 1+retry_count)", resp.Endpoints, want)
	}
	if err := s.Drain("10.0.0.2:8000", "test"); err != nil {
		t.Fatal(err)
	}
	mustReport(t, s, "10.0.0.3:8000", &llmrouterv1.Report{Healthy: false})
	resp, _ = s.TryPick(pickReq("r2", "m"), nil)
	// 10.0.0.1 now has one unreported pick: load 2, like .4's 4? no: 1+1=2 < 4.
	want = []string{"10.0.0.1:8000", "10.0.0.4:8000", "10.0.0.5:8000"}
	if !slices.Equal(resp.Endpoints, want) {
		t.Fatalf("endpoints = %v, want %v", resp.Endpoints, want)
	}
	if err := s.Resume("10.0.0.2:8000", "test"); err != nil {
		t.Fatal(err)
	}
	resp, _ = s.TryPick(pickReq("r3", "m"), nil)
	if !slices.Contains(resp.Endpoints, "10.0.0.2:8000") {
		t.Fatalf("resumed instance not picked: %v", resp.Endpoints)
	}
}

func TestInflightCountsAndRelease(t *testing.T) {
	s, clk := newTestScheduler(t, func(c *config.Config) { c.Scheduler.InflightTimeout = time.Minute })
	mustRegister(t, s, "10.0.0.1:8000")
	id := "10.0.0.1:8000"
	view := func() policy.Instance { v, _ := s.InstanceView(id); return v }

	s.TryPick(&llmrouterv1.PickRequest{RequestId: "a", Model: "m", PromptTokens: 100, MaxTokens: 10}, nil)
	s.TryPick(&llmrouterv1.PickRequest{RequestId: "b", Model: "m", PromptTokens: 50}, nil)
	v := view()
	if v.InflightRequests != 2 || v.InflightPromptTokens != 150 || v.InflightDecodeTokens != 10+defaultDecodeTokens {
		t.Fatalf("after two picks: %+v", v)
	}
	if v.Load() != 2 {
		t.Fatalf("load = %d", v.Load())
	}
	// The next report shows the requests in running: no double counting,
	// but their output is still to come.
	mustReport(t, s, id, load(2, 0))
	v = view()
	if v.InflightRequests != 0 || v.InflightPromptTokens != 0 || v.InflightDecodeTokens != 10+defaultDecodeTokens || v.Load() != 2 {
		t.Fatalf("after report: %+v", v)
	}
	// The gateway reports a completes.
	if err := s.Report(context.Background(), &llmrouterv1.OutcomeReport{RequestId: "a", Success: true}); err != nil {
		t.Fatal(err)
	}
	if v = view(); v.InflightDecodeTokens != defaultDecodeTokens || s.Stats().Inflight != 1 {
		t.Fatalf("after completion: %+v %+v", v, s.Stats())
	}
	// Unknown request ids are not errors.
	if err := s.Report(context.Background(), &llmrouterv1.OutcomeReport{RequestId: "nope"}); err != nil {
		t.Fatal(err)
	}
	// b is never reported: released after inflight_timeout, not before.
	s.TryPick(&llmrouterv1.PickRequest{RequestId: "c", Model: "m", PromptTokens: 7}, nil)
	clk.Advance(59 * time.Second)
	mustReport(t, s, id, load(0, 0)) // keep it alive
	s.Tick()
	if s.Stats().Inflight != 2 {
		t.Fatalf("released early: %+v", s.Stats())
	}
	clk.Advance(2 * time.Second)
	mustReport(t, s, id, load(0, 0))
	s.Tick()
	if st := s.Stats(); st.Inflight != 0 {
		t.Fatalf("not released after timeout: %+v", st)
	}
	if v = view(); v.InflightRequests != 0 || v.InflightPromptTokens != 0 || v.InflightDecodeTokens != 0 {
		t.Fatalf("after timeout: %+v", v)
	}
}

// A pick stays counted as unreported until a report's running+waiting
// shows it: a report that counts fewer requests than the live picks (the
// newest have not reached the engine yet) folds only the oldest ones in.
func TestPickUnreportedUntilCountsShowIt(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.InflightTimeout = time.Minute })
	mustRegister(t, s, "10.0.0.1:8000")
	id := "10.0.0.1:8000"
	view := func() policy.Instance { v, _ := s.InstanceView(id); return v }
	s.TryPick(&llmrouterv1.PickRequest{RequestId: "a", Model: "m", PromptTokens: 100}, nil)
	s.TryPick(&llmrouterv1.PickRequest{RequestId: "b", Model: "m", PromptTokens: 40}, nil)
	s.TryPick(&llmrouterv1.PickRequest{RequestId: "c", Model: "m", PromptTokens: 7}, nil)
	mustReport(t, s, id, load(0, 0)) // scraped before any arrived
	if v := view(); v.InflightRequests != 3 || v.InflightPromptTokens != 147 {
		t.Fatalf("a report showing none folded picks in: %+v", v)
	}
	mustReport(t, s, id, load(1, 1)) // a and b arrived, c not yet
	if v := view(); v.InflightRequests != 1 || v.InflightPromptTokens != 7 {
		t.Fatalf("after a report showing two of three: %+v", v)
	}
	mustReport(t, s, id, load(2, 1))
	if v := view(); v.InflightRequests != 0 || v.InflightPromptTokens != 0 || v.Load() != 3 {
		t.Fatalf("after a report showing all three: %+v", v)
	}
	// Requests the scheduler did not pick count too: a report above the
	// picks folds a new pick at once, as before.
	s.TryPick(&llmrouterv1.PickRequest{RequestId: "d", Model: "m", PromptTokens: 9}, nil)
	mustReport(t, s, id, load(4, 2))
	if v := view(); v.InflightRequests != 0 || v.InflightPromptTokens != 0 {
		t.Fatalf("after a report counting more than the picks: %+v", v)
	}
}

// A pick whose outcome is never reported (its gateway was killed) and that
// no report ever shows stops counting as unreported load after
// unseenLimit, not after inflight_timeout: the engine is idle and must not
// stay saturated for minutes.
func TestLostPickStopsCountingAfterUnseenLimit(t *testing.T) {
	s, clk := newTestScheduler(t, func(c *config.Config) { c.Scheduler.InflightTimeout = 10 * time.Minute })
	id := "10.0.0.1:8000"
	mustRegister(t, s, id)
	view := func() policy.Instance { v, _ := s.InstanceView(id); return v }
	for _, r := range []string{"a", "b", "c"} {
		s.TryPick(&llmrouterv1.PickRequest{RequestId: r, Model: "m", PromptTokens: 50}, nil)
	}
	for elapsed := time.Duration(0); elapsed < unseenLimit; elapsed += interval {
		mustReport(t, s, id, load(0, 0)) // idle: the requests came and went, unreported
		if v := view(); v.InflightRequests != 3 {
			t.Fatalf("at %v, before the limit: %d unreported picks, want 3 (the safe side)", elapsed, v.InflightRequests)
		}
		clk.Advance(interval)
	}
	clk.Advance(interval)
	mustReport(t, s, id, load(0, 0))
	if v := view(); v.InflightRequests != 0 || v.InflightPromptTokens != 0 {
		t.Fatalf("past unseenLimit the lost picks still count: %+v", v)
	}
}

func TestInstanceRemovalReleasesInflight(t *testing.T) {
	s, _ := newTestScheduler(t, nil)
	l := mustRegister(t, s, "10.0.0.1:8000")
	s.TryPick(pickReq("a", "m"), nil)
	if s.Stats().Inflight != 1 {
		t.Fatal("pick not recorded")
	}
	s.Deregister(l.ID, l.Gen, "closed")
	if s.Stats().Inflight != 0 {
		t.Fatal("removed instance's picks still in flight")
	}
}

// Without Tick or agent reports for a while, the bookkeeping lists must stay
// proportional to the live picks, not to every pick ever made.
func TestInflightListsStayBounded(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.MaxWaiting = 0 })
	mustRegister(t, s, "10.0.0.1:8000")
	for i := range 20000 {
		id := fmt.Sprint(i)
		s.TryPick(pickReq(id, "m"), nil)
		if err := s.Report(context.Background(), &llmrouterv1.OutcomeReport{RequestId: id}); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	fifo, unseen := len(s.fifo)-s.fifoHead, len(s.insts["10.0.0.1:8000"].unseen)
	s.mu.Unlock()
	if fifo > 2000 || unseen > 100 {
		t.Fatalf("fifo %d, unseen %d after 20000 completed picks", fifo, unseen)
	}
}
