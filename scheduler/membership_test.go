package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/promtest"
	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// newMemberScheduler is newTestScheduler with membership collaborators and a
// metrics registry.
func newMemberScheduler(t testing.TB, mutate func(*config.Config), d Deps) (*Scheduler, *fakeClock, *prometheus.Registry) {
	t.Helper()
	cfg := testConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	clk := newFakeClock()
	reg := prometheus.NewRegistry()
	d.Clock, d.Metrics = clk, reg
	s, err := New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	return s, clk, reg
}

// eventually polls cond for at most 5 s (async probe or verification
// results), failing with msg.
func eventually(t testing.TB, msg string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal(msg)
}

// silence advances the clock past missed_reports intervals while only the
// instances in talking report.
func silence(t testing.TB, s *Scheduler, clk *fakeClock, d time.Duration, talking ...string) {
	t.Helper()
	for end := clk.Now().Add(d); clk.Now().Before(end); {
		clk.Advance(interval / 2)
		for _, id := range talking {
			mustReport(t, s, id, load(0, 0))
		}
		s.Tick()
	}
}

// Silence is not death: an instance whose reports stop is no longer picked,
// but stays published (EDS) until silent_grace passes.
func TestSilentNotPickedButPublished(t *testing.T) {
	s, clk, reg := newMemberScheduler(t, func(c *config.Config) { c.Scheduler.SilentGrace = 10 * time.Second }, Deps{})
	mustRegister(t, s, "10.0.0.1:8000")
	mustRegister(t, s, "10.0.0.2:8000")
	mustRegister(t, s, "10.0.0.3:8000")

	silence(t, s, clk, 3*interval+interval/2, "10.0.0.2:8000", "10.0.0.3:8000")
	if got := routableIDs(s); !slices.Equal(got, []string{"10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"}) {
		t.Fatalf("published after silence = %v: a silent instance must stay in EDS", got)
	}
	if ri, _ := s.Registry().Get("10.0.0.1:8000"); ri.State() != registry.StateSilent {
		t.Fatalf("state = %s, want silent", ri.State())
	}
	if n := promtest.Value(t, reg, "llmrouter_scheduler_instances", "state", "silent"); n != 1 {
		t.Fatalf("instances{state=silent} = %v", n)
	}
	for i := range 20 {
		resp, err := s.Pick(context.Background(), pickReq("r"+string(rune('a'+i)), "m"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != llmrouterv1.PickResponse_ROUTED || slices.Contains(resp.Endpoints, "10.0.0.1:8000") {
			t.Fatalf("pick %d = %v: the silent instance must not be picked", i, resp)
		}
		_ = s.Report(context.Background(), &llmrouterv1.OutcomeReport{RequestId: "r" + string(rune('a'+i))})
	}

	// Reporting again makes it pickable again.
	mustReport(t, s, "10.0.0.1:8000", load(0, 0))
	if ri, _ := s.Registry().Get("10.0.0.1:8000"); ri.State() != registry.StateHealthy {
		t.Fatalf("state after a report = %s, want healthy", ri.State())
	}
	v, _ := s.InstanceView("10.0.0.1:8000")
	if v.ID == "" {
		t.Fatal("instance lost")
	}

	// Silent past the grace: removed.
	silence(t, s, clk, 10*time.Second+4*interval, "10.0.0.2:8000", "10.0.0.3:8000")
	if got := routableIDs(s); !slices.Equal(got, []string{"10.0.0.2:8000", "10.0.0.3:8000"}) {
		t.Fatalf("published after silent_grace = %v, want the silent instance gone", got)
	}
	if err := s.InstanceReport("10.0.0.1:8000", 0, load(0, 0)); !errors.Is(err, registry.ErrUnknown) {
		t.Fatalf("report after removal: %v", err)
	}
}

// Before the grace, only a confirmed dead engine leaves: the agent saying so
// (at once), or the scheduler's probe of the silent address failing.
func TestConfirmedDownRemoved(t *testing.T) {
	var mu sync.Mutex
	down := map[string]bool{"10.0.0.1:8000": true}
	probed := map[string]int{}
	probe := func(_ context.Context, addr string) error {
		mu.Lock()
		defer mu.Unlock()
		probed[addr]++
		if down[addr] {
			return errors.New("connection refused")
		}
		return nil
	}
	s, clk, reg := newMemberScheduler(t, nil, Deps{Probe: probe})
	for _, a := range []string{"10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000", "10.0.0.4:8000"} {
		mustRegister(t, s, a)
	}
	// The agent of 4 says its engine is down: out of picks and EDS at once.
	mustReport(t, s, "10.0.0.4:8000", &llmrouterv1.Report{Healthy: false, UnhealthyReason: "connection refused"})
	if got := routableIDs(s); slices.Contains(got, "10.0.0.4:8000") {
		t.Fatalf("published = %v: an engine its agent reports down must leave EDS at once", got)
	}
	// 1 (engine dead) and 2 (engine alive, agent stalled) fall silent; 3
	// and 4 keep reporting: 2 of 4 silent is not over the 50 % threshold.
	mustReport(t, s, "10.0.0.4:8000", load(0, 0))
	silence(t, s, clk, 3*interval+interval/2, "10.0.0.3:8000", "10.0.0.4:8000")
	eventually(t, "the silent instance whose probe fails was not removed", func() bool {
		_, ok := s.Registry().Get("10.0.0.1:8000")
		return !ok
	})
	if got := routableIDs(s); !slices.Equal(got, []string{"10.0.0.2:8000", "10.0.0.3:8000", "10.0.0.4:8000"}) {
		t.Fatalf("published = %v: the silent instance whose probe answers must stay", got)
	}
	eventually(t, "alive probe not counted", func() bool {
		return promtest.Value(t, reg, "llmrouter_scheduler_silent_probes_total", "result", "alive") >= 1
	})
	if promtest.Value(t, reg, "llmrouter_scheduler_silent_probes_total", "result", "down") != 1 {
		t.Fatal("down probe not counted")
	}
	// The alive one is probed again, not more often than ProbeInterval.
	mu.Lock()
	before := probed["10.0.0.2:8000"]
	mu.Unlock()
	silence(t, s, clk, 2*ProbeInterval+interval, "10.0.0.3:8000", "10.0.0.4:8000")
	eventually(t, "silent instance not probed again", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return probed["10.0.0.2:8000"] > before
	})
	mu.Lock()
	if n := probed["10.0.0.2:8000"] - before; n > 3 {
		t.Fatalf("%d probes in %s: want about one per %s", n, 2*ProbeInterval+interval, ProbeInterval)
	}
	mu.Unlock()
}

// A really dead engine: out of picks within 1 s and out of the published
// set within 2 s, on the scheduler's clock, even when its agent died with
// it (silence at missed_reports × 200 ms, then the probe).
func TestDeadEngineBounds(t *testing.T) {
	probe := func(_ context.Context, addr string) error {
		if addr == "10.0.0.1:8000" {
			return errors.New("connection refused")
		}
		return nil
	}
	s, clk, _ := newMemberScheduler(t, nil, Deps{Probe: probe})
	for _, a := range []string{"10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"} {
		mustRegister(t, s, a)
	}
	start := clk.Now()
	var outOfPicks time.Duration
	for clk.Now().Sub(start) < 2*time.Second {
		clk.Advance(TickPeriod)
		if clk.Now().Sub(start) >= interval { // 2 and 3 keep reporting
			mustReport(t, s, "10.0.0.2:8000", load(0, 0))
			mustReport(t, s, "10.0.0.3:8000", load(0, 0))
		}
		s.Tick()
		if ri, ok := s.Registry().Get("10.0.0.1:8000"); outOfPicks == 0 && (!ok || !ri.Routable()) {
			outOfPicks = clk.Now().Sub(start)
		}
		if _, ok := s.Registry().Get("10.0.0.1:8000"); !ok {
			break
		}
		// Let the asynchronous probe land before the clock moves on, as it
		// does in real time (the probe takes a connection refusal).
		time.Sleep(2 * time.Millisecond)
		s.mu.Lock()
		probing := s.insts["10.0.0.1:8000"] != nil && s.insts["10.0.0.1:8000"].probing
		s.mu.Unlock()
		for i := 0; probing && i < 500; i++ {
			time.Sleep(time.Millisecond)
			s.mu.Lock()
			probing = s.insts["10.0.0.1:8000"] != nil && s.insts["10.0.0.1:8000"].probing
			s.mu.Unlock()
		}
	}
	gone := clk.Now().Sub(start)
	if outOfPicks == 0 || outOfPicks > time.Second {
		t.Fatalf("out of picks after %s, want <= 1s", outOfPicks)
	}
	if _, ok := s.Registry().Get("10.0.0.1:8000"); ok || gone > 2*time.Second {
		t.Fatalf("still published after %s, want out within 2s", gone)
	}
	if got := routableIDs(s); !slices.Equal(got, []string{"10.0.0.2:8000", "10.0.0.3:8000"}) {
		t.Fatalf("published = %v", got)
	}
}

// Panic threshold: when more than panic_threshold of the fleet falls silent
// at once, nobody is removed for it — not by the probe, not by the grace —
// the episode is logged, exported and counted, and requests for silent
// pools pass through to Envoy.
func TestPanicThresholdKeepsAll(t *testing.T) {
	probe := func(context.Context, string) error { return errors.New("no answer within 1s") }
	s, clk, reg := newMemberScheduler(t, func(c *config.Config) { c.Scheduler.SilentGrace = 5 * time.Second }, Deps{Probe: probe})
	for _, a := range []string{"10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"} {
		mustRegister(t, s, a)
	}
	// Everyone stalls (SIGSTOP of the agents, CPU starvation) for well over
	// the grace.
	silence(t, s, clk, 8*time.Second)
	time.Sleep(50 * time.Millisecond) // let any (wrong) probe removal land
	s.Tick()
	if got := routableIDs(s); len(got) != 3 {
		t.Fatalf("published during a fleet-wide stall = %v: want all 3 kept", got)
	}
	if promtest.Value(t, reg, "llmrouter_scheduler_membership_panic") != 1 || promtest.Value(t, reg, "llmrouter_scheduler_membership_panic_episodes_total") != 1 {
		t.Fatal("panic not exported or not counted")
	}
	resp, err := s.Pick(context.Background(), pickReq("p", "m"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != llmrouterv1.PickResponse_PASSTHROUGH || len(resp.Endpoints) != 0 {
		t.Fatalf("pick while every candidate is silent = %v, want PASSTHROUGH", resp)
	}
	if promtest.Value(t, reg, "llmrouter_scheduler_decisions_total", "outcome", "passthrough") != 1 {
		t.Fatal("passthrough decision not counted")
	}

	// The agents wake up: the episode ends, picks resume.
	for _, a := range []string{"10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"} {
		mustReport(t, s, a, load(0, 0))
	}
	s.Tick()
	if promtest.Value(t, reg, "llmrouter_scheduler_membership_panic") != 0 {
		t.Fatal("panic gauge still 1 after the fleet reported again")
	}
	resp, err = s.Pick(context.Background(), pickReq("p2", "m"), nil)
	if err != nil || resp.Status != llmrouterv1.PickResponse_ROUTED {
		t.Fatalf("pick after recovery = %v, %v", resp, err)
	}
	// A second stall is a second episode.
	silence(t, s, clk, 2*time.Second)
	if promtest.Value(t, reg, "llmrouter_scheduler_membership_panic_episodes_total") != 2 {
		t.Fatal("second episode not counted")
	}
}

// Below the threshold the grace applies: one silent instance of three is
// removed after silent_grace even with no probe.
func TestGraceBelowThreshold(t *testing.T) {
	s, clk, reg := newMemberScheduler(t, func(c *config.Config) { c.Scheduler.SilentGrace = 2 * time.Second }, Deps{})
	for _, a := range []string{"10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"} {
		mustRegister(t, s, a)
	}
	silence(t, s, clk, 2*time.Second, "10.0.0.2:8000", "10.0.0.3:8000")
	if got := routableIDs(s); len(got) != 3 {
		t.Fatalf("removed before the grace: %v", got)
	}
	silence(t, s, clk, time.Second, "10.0.0.2:8000", "10.0.0.3:8000")
	if got := routableIDs(s); !slices.Equal(got, []string{"10.0.0.2:8000", "10.0.0.3:8000"}) {
		t.Fatalf("after the grace = %v", got)
	}
	if promtest.Value(t, reg, "llmrouter_scheduler_membership_panic_episodes_total") != 0 {
		t.Fatal("a third of the fleet silent counted as panic")
	}
}

// A queued request whose candidates all fall silent passes through rather
// than waiting out its deadline.
func TestQueuedPassesThroughWhenSilent(t *testing.T) {
	s, clk, _ := newMemberScheduler(t, func(c *config.Config) { c.Scheduler.MaxWaiting = 1 }, Deps{})
	mustRegister(t, s, "10.0.0.1:8000")
	mustReport(t, s, "10.0.0.1:8000", load(0, 5))
	var final *llmrouterv1.PickResponse
	resp, tk := s.TryPick(pickReq("q", "m"), func(r *llmrouterv1.PickResponse) { final = r })
	if tk == nil || resp.Status != llmrouterv1.PickResponse_QUEUED {
		t.Fatalf("first = %v", resp)
	}
	for range 8 {
		clk.Advance(interval / 2)
		s.Tick()
	}
	if final == nil || final.Status != llmrouterv1.PickResponse_PASSTHROUGH {
		t.Fatalf("final = %v, want PASSTHROUGH", final)
	}
}

// Verification: a registration waits as "verifying" — neither picked nor
// published, not lost — until its address answers as its engine.
func TestVerifyingInstanceWaits(t *testing.T) {
	var mu sync.Mutex
	ok := false
	calls := 0
	verify := func(_ context.Context, ri registry.Instance) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if !ok {
			return errors.New("GET /v1/models: connection refused")
		}
		return nil
	}
	s, _, reg := newMemberScheduler(t, nil, Deps{Verify: verify})
	l := mustRegister(t, s, "10.0.0.1:8000")
	if ri, _ := s.Registry().Get(l.ID); ri.State() != registry.StateVerifying {
		t.Fatalf("state = %s, want verifying", ri.State())
	}
	if got := routableIDs(s); len(got) != 0 {
		t.Fatalf("published while verifying: %v", got)
	}
	resp, _ := s.TryPick(pickReq("r", "m"), nil)
	if resp.Status == llmrouterv1.PickResponse_ROUTED || resp.Status == llmrouterv1.PickResponse_PASSTHROUGH {
		t.Fatalf("pick while verifying = %v", resp)
	}
	eventually(t, "verification not retried", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return calls >= 2
	})
	mu.Lock()
	ok = true
	mu.Unlock()
	eventually(t, "not admitted once verified", func() bool { return len(routableIDs(s)) == 1 })
	if promtest.Value(t, reg, "llmrouter_scheduler_engine_verifications_total", "result", "verified") != 1 ||
		promtest.Value(t, reg, "llmrouter_scheduler_engine_verifications_total", "result", "failed") < 1 {
		t.Fatal("verifications not counted")
	}
	resp, _ = s.TryPick(pickReq("r2", "m"), nil)
	if resp.Status != llmrouterv1.PickResponse_ROUTED {
		t.Fatalf("pick after verification = %v", resp)
	}
	// The same engine re-registering (restarted) stays verified.
	if _, err := s.RegisterAs(regMsg("10.0.0.1:8000"), l); err != nil {
		t.Fatal(err)
	}
	if len(routableIDs(s)) != 1 {
		t.Fatal("an unchanged re-registration was sent back to verifying")
	}
}

// Loopback addresses only while the agent API itself listens on loopback;
// link-local, multicast and unspecified never.
func TestAdvertisedAddressRules(t *testing.T) {
	for _, tc := range []struct {
		listen, addr string
		want         error
	}{
		{"127.0.0.1:18001", "127.0.0.1:8000", nil},
		{"localhost:18001", "127.0.0.1:8000", nil},
		{"[::1]:18001", "[::1]:8000", nil},
		{":18001", "127.0.0.1:8000", registry.ErrNotAllowed},
		{"10.0.0.9:18001", "127.0.0.1:22", registry.ErrNotAllowed},
		{"10.0.0.9:18001", "10.0.0.1:8000", nil},
		{"127.0.0.1:18001", "169.254.169.254:80", registry.ErrNotAllowed},
		{"127.0.0.1:18001", "[fe80::1]:8000", registry.ErrNotAllowed},
		{"127.0.0.1:18001", "224.0.0.1:8000", registry.ErrNotAllowed},
		{"127.0.0.1:18001", "[ff02::1]:8000", registry.ErrNotAllowed},
		{"127.0.0.1:18001", "255.255.255.255:8000", registry.ErrNotAllowed},
		{"127.0.0.1:18001", "0.0.0.0:8000", registry.ErrInvalid},
		{"127.0.0.1:18001", "[::]:8000", registry.ErrInvalid},
	} {
		s, _, _ := newMemberScheduler(t, func(c *config.Config) { c.Scheduler.Listen = tc.listen }, Deps{})
		_, err := s.Register(regMsg(tc.addr))
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("listen %s, advertise %s: err = %v, want %v", tc.listen, tc.addr, err, tc.want)
		}
	}
}

// A stall of the scheduler itself silences nobody: Run sees its tick come
// late and counts silence afresh from then (the reports sent meanwhile are
// not read yet); an instance that still does not report within
// missed_reports of that falls silent.
func TestOwnStallSilencesNobody(t *testing.T) {
	s, clk, _ := newMemberScheduler(t, nil, Deps{})
	mustRegister(t, s, "10.0.0.1:8000")
	mustRegister(t, s, "10.0.0.2:8000")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	const period = 20 * time.Millisecond // a stall: over stallTicks x 20 ms
	go func() { s.Run(ctx, period); close(done) }()
	defer func() { cancel(); <-done }()
	waitTickAt(t, s, clk)        // Run's first tick
	clk.Advance(2 * time.Second) // the scheduler did not run for 2 s
	waitTickAt(t, s, clk)        // its first tick after the stall
	for _, id := range []string{"10.0.0.1:8000", "10.0.0.2:8000"} {
		if ri, _ := s.Registry().Get(id); ri.Silent {
			t.Fatalf("%s silent after the scheduler's own stall", id)
		}
	}
	// Time goes on in steps Run does not take for stalls (each seen by a
	// tick before the next); 2 reports, 1 does not, and falls silent.
	for step := 0; ; step++ {
		if ri, _ := s.Registry().Get("10.0.0.1:8000"); ri.Silent {
			break
		}
		if step == 500 {
			t.Fatal("an instance that never reported after the resume did not fall silent")
		}
		clk.Advance(interval / 8)
		mustReport(t, s, "10.0.0.2:8000", load(0, 0))
		waitTickAt(t, s, clk)
	}
	if ri, _ := s.Registry().Get("10.0.0.2:8000"); ri.Silent {
		t.Fatal("the reporting instance went silent")
	}
}

// waitTickAt waits until one of Run's ticks has seen the fake clock's now:
// a test that slept instead read the registry before any tick on a loaded
// machine, or let the fake clock run past the stall threshold between two
// ticks.
func waitTickAt(t *testing.T, s *Scheduler, clk *fakeClock) {
	t.Helper()
	now := clk.Now()
	eventually(t, fmt.Sprintf("no tick of Run's saw %s", now), func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return !s.lastTick.Before(now)
	})
}
