package scheduler

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// recorder is a test policy that ranks by ID and records its observer calls.
type recorder struct {
	mu    sync.Mutex // only to let the test read the log; the scheduler serialises calls
	calls []string
	busy  bool
	last  policy.Request // the last request Pick saw
}

func (*recorder) Name() string { return "test-recorder" }

func (r *recorder) Pick(req *policy.Request, cands []*policy.Instance) policy.Decision {
	r.enter()
	defer r.leave()
	r.mu.Lock()
	r.last = *req
	r.mu.Unlock()
	return policy.Decision{Ranked: append([]*policy.Instance(nil), cands...)}
}

func (r *recorder) Picked(req *policy.Request, d policy.Decision) {
	r.enter()
	defer r.leave()
	r.log(fmt.Sprintf("picked %s %s", req.ID, d.Ranked[0].ID))
}

func (r *recorder) Completed(reqID, instanceID string, prompt, completion int64) {
	r.enter()
	defer r.leave()
	r.log(fmt.Sprintf("completed %s %s %d %d", reqID, instanceID, prompt, completion))
}

func (r *recorder) Removed(id string) {
	r.enter()
	defer r.leave()
	r.log("removed " + id)
}

func (r *recorder) enter() {
	r.mu.Lock()
	if r.busy {
		panic("policy called concurrently")
	}
	r.busy = true
	r.mu.Unlock()
}

func (r *recorder) leave() { r.mu.Lock(); r.busy = false; r.mu.Unlock() }

func (r *recorder) log(s string) { r.mu.Lock(); r.calls = append(r.calls, s); r.mu.Unlock() }

// rec is the recorder the last scheduler built with "test-recorder" got: a
// fresh one each time, so no test reads another's calls.
var rec *recorder

func init() {
	policy.Register("test-recorder", func(policy.Deps) (policy.Policy, error) { rec = &recorder{}; return rec, nil })
}

func TestObserverHooks(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.Policy = "test-recorder" })
	l := mustRegister(t, s, "10.0.0.1:8000")
	mustRegister(t, s, "10.0.0.2:8000")
	s.TryPick(pickReq("a", "m"), nil)
	// Envoy retried on the fallback: the completion names the server.
	if err := s.Report(context.Background(), &llmrouterv1.OutcomeReport{RequestId: "a", Endpoint: "10.0.0.2:8000", PromptTokens: 100, CompletionTokens: 20}); err != nil {
		t.Fatal(err)
	}
	s.Deregister(l.ID, l.Gen, "closed")
	want := "picked a 10.0.0.1:8000|completed a 10.0.0.2:8000 100 20|removed 10.0.0.1:8000"
	rec.mu.Lock()
	got := strings.Join(rec.calls, "|")
	rec.mu.Unlock()
	if got != want {
		t.Fatalf("observer calls:\n got %s\nwant %s", got, want)
	}
}

func TestPoliciesSerialised(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.Policy = "test-recorder"; c.Scheduler.MaxWaiting = 0 })
	for i := range 4 {
		mustRegister(t, s, fmt.Sprintf("10.0.0.%d:8000", i+1))
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				id := fmt.Sprintf("g%d-%d", g, i)
				s.TryPick(pickReq(id, "m"), nil)
				_ = s.Report(context.Background(), &llmrouterv1.OutcomeReport{RequestId: id})
				_ = s.InstanceReport("10.0.0.1:8000", 0, load(1, 0))
			}
		}()
	}
	wg.Wait() // recorder panics on a concurrent call
	if st := s.Stats(); st.Inflight != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestRoundRobinEvenSpreadThroughScheduler(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) {
		c.Scheduler.Policy = "round-robin"
		c.Scheduler.MaxWaiting, c.Scheduler.MaxPredictedWait = 0, 0 // 100 picks each and no report: no saturation at all
	})
	for i := range 3 {
		mustRegister(t, s, fmt.Sprintf("10.0.0.%d:8000", i+1))
	}
	counts := map[string]int{}
	for i := range 300 {
		r, _ := s.TryPick(pickReq(fmt.Sprint(i), "m"), nil)
		if r.Policy != "round-robin" {
			t.Fatalf("policy = %q", r.Policy)
		}
		counts[r.Endpoints[0]]++
	}
	for id, n := range counts {
		if n != 100 {
			t.Fatalf("%s got %d of 300: %v", id, n, counts)
		}
	}
}

func TestLeastRequestFollowsLoad(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.MaxWaiting = 0 })
	mustRegister(t, s, "10.0.0.1:8000")
	mustRegister(t, s, "10.0.0.2:8000")
	mustReport(t, s, "10.0.0.1:8000", load(10, 0))
	mustReport(t, s, "10.0.0.2:8000", load(4, 0))
	// Six unreported picks bring .2 level with .1; in-flight bookkeeping
	// keeps the burst from piling onto .2.
	counts := map[string]int{}
	for i := range 16 {
		r, _ := s.TryPick(pickReq(fmt.Sprint(i), "m"), nil)
		counts[r.Endpoints[0]]++
	}
	if counts["10.0.0.2:8000"] != 11 || counts["10.0.0.1:8000"] != 5 {
		t.Fatalf("burst spread = %v, want 11 on the idle one, 5 on the busy one", counts)
	}
}

func TestPerInstanceMetricsDeleted(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := New(testConfig(), Deps{Clock: newFakeClock(), Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	l := mustRegister(t, s, "10.0.0.1:8000")
	mustReport(t, s, l.ID, &llmrouterv1.Report{Healthy: true, Running: 2, KvCacheUsage: 0.5, GenerationTokensPerSecond: 30})
	series := func(name string) (n int, val float64) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == name {
				for _, m := range mf.GetMetric() {
					n++
					val = m.GetGauge().GetValue()
				}
			}
		}
		return
	}
	if n, v := series("llmrouter_instance_kv_cache_usage_ratio"); n != 1 || v != 0.5 {
		t.Fatalf("kv usage series %d value %v", n, v)
	}
	// The per-engine label is "engine": "instance" would clash with the
	// label Prometheus gives every scraped series.
	for _, mf := range must(reg.Gather()) {
		if mf.GetName() == "llmrouter_instance_kv_cache_usage_ratio" {
			if l := mf.GetMetric()[0].GetLabel(); len(l) != 1 || l[0].GetName() != "engine" || l[0].GetValue() != "10.0.0.1:8000" {
				t.Fatalf("per-engine labels = %v, want engine=10.0.0.1:8000", l)
			}
		}
	}
	if _, v := series("llmrouter_instance_generation_tokens_per_second"); v != 30 {
		t.Fatalf("gen tps %v", v)
	}
	s.Deregister(l.ID, l.Gen, "closed")
	for _, name := range []string{"llmrouter_instance_kv_cache_usage_ratio", "llmrouter_instance_running_requests",
		"llmrouter_instance_waiting_requests", "llmrouter_instance_prompt_tokens_per_second", "llmrouter_instance_generation_tokens_per_second"} {
		if n, _ := series(name); n != 0 {
			t.Fatalf("%s still has %d series after removal", name, n)
		}
	}
	mfs, _ := reg.Gather()
	states := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "llmrouter_scheduler_instances" {
			for _, m := range mf.GetMetric() {
				states[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
	}
	if len(states) != len(registry.States) || states["healthy"] != 0 {
		t.Fatalf("instance states = %v", states)
	}
}

// Every fallback reason exists at 0 before the first fallback: a dashboard
// panel or an alert over their rate has a series on a healthy system.
func TestFallbacksExportedFromStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(testConfig(), Deps{Clock: newFakeClock(), Metrics: reg}); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range must(reg.Gather()) {
		if n := mf.GetName(); n == "llmrouter_scheduler_fallbacks_total" || n == "llmrouter_scheduler_shed_total" {
			for _, m := range mf.GetMetric() {
				got[n+"/"+m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue() == 0
			}
		}
	}
	for _, r := range []string{"fallbacks_total/default_pool", "fallbacks_total/policy_empty", "fallbacks_total/duplicate_request_id",
		"shed_total/queue_timeout", "shed_total/queue_full"} {
		if !got["llmrouter_scheduler_"+r] {
			t.Errorf("llmrouter_scheduler_%s not exported at 0 from start (got %v)", r, got)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestTailLayout: the scheduler passes a tiered prompt's layout to the
// policy in blocks; a layout that does not add up keeps the head alone.
func TestTailLayout(t *testing.T) {
	s, _ := newTestScheduler(t, func(c *config.Config) { c.Scheduler.Policy = "test-recorder" })
	mustRegister(t, s, "10.0.0.1:8000")
	hs := []uint64{1, 2, 3, 4, 5, 6}
	for _, tc := range []struct {
		name             string
		blockChars, tail int32
		head             int32
		want             int // hashes the policy sees
		wantHead, wantBP int
	}{
		{"tiered", 64, 1024, 4, 6, 4, 16},
		{"block size from the configuration", 0, 1024, 4, 6, 4, 16},
		{"no tail", 64, 0, 0, 6, 0, 0},
		{"tail not a whole number of blocks", 64, 1000, 4, 4, 0, 0},
		{"head past the hashes", 64, 1024, 9, 6, 0, 0},
		{"negative head", 64, 1024, -1, 0, 0, 0},
		{"tail block over 1 MiB", 64, 2 << 20, 4, 4, 0, 0},
	} {
		pr := pickReq("a-"+tc.name, "m")
		pr.PromptBlockHashes, pr.BlockChars, pr.TailBlockChars, pr.HeadBlocks = hs, tc.blockChars, tc.tail, tc.head
		if resp, _ := s.TryPick(pr, nil); resp.GetStatus() != llmrouterv1.PickResponse_ROUTED {
			t.Fatalf("%s: %v", tc.name, resp)
		}
		rec.mu.Lock()
		got := rec.last
		rec.mu.Unlock()
		if len(got.BlockHashes) != tc.want || got.HeadBlocks != tc.wantHead || got.BlocksPerTail != tc.wantBP {
			t.Errorf("%s: %d hashes, head %d, %d blocks a tail hash; want %d, %d, %d", tc.name, len(got.BlockHashes), got.HeadBlocks, got.BlocksPerTail, tc.want, tc.wantHead, tc.wantBP)
		}
	}
	// 1,025 tail hashes of 1 MiB: more blocks than maxLayoutBlocks.
	pr := pickReq("a-huge", "m")
	pr.PromptBlockHashes, pr.BlockChars, pr.TailBlockChars, pr.HeadBlocks = make([]uint64, 4+1025), 64, 1<<20, 4
	s.TryPick(pr, nil)
	rec.mu.Lock()
	got := rec.last
	rec.mu.Unlock()
	if len(got.BlockHashes) != 4 || got.BlocksPerTail != 0 {
		t.Errorf("a layout of %d blocks: %d hashes, %d blocks a tail hash; want the 4 head hashes alone", 4+1025<<14, len(got.BlockHashes), got.BlocksPerTail)
	}
}
