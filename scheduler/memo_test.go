package scheduler

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// TestSaturationMemoFollowsEveryChange: the saturation verdict each
// instance remembers (admission.Remember, read by every decision) is, after
// any sequence of reports, picks, completions, expiries, drains and
// re-registrations, the verdict a fresh judgment gives — so every change
// of an instance's view resets its memo. Driven through the public API
// with loads from idle to far over max_predicted_wait.
func TestSaturationMemoFollowsEveryChange(t *testing.T) {
	s, clk := newTestScheduler(t, func(c *config.Config) {
		c.Scheduler.MaxWaiting = 12
		c.Gateway.MaxQueueSize = 8
	})
	r := rand.New(rand.NewPCG(7, 13))
	const n = 6
	addrs := make([]string, n)
	leases := map[string]*registry.Lease{}
	for i := range addrs {
		addrs[i] = fmt.Sprintf("10.0.0.%d:8000", i+1)
		leases[addrs[i]] = mustRegister(t, s, addrs[i])
	}
	var ids []string
	remembered := 0
	for step := range 10000 {
		a := addrs[r.IntN(n)]
		switch op := r.IntN(12); {
		case op < 3:
			_ = s.InstanceReport(a, 0, &llmrouterv1.Report{
				Healthy: true, Running: r.Int64N(24), Waiting: r.Int64N(6) * r.Int64N(2),
				KvCacheUsage: r.Float64() * 0.95, PrefixCacheHitRatio: r.Float64(),
				GenerationTokensPerSecond: r.Float64() * 2000, PromptTokensPerSecond: r.Float64() * 8000,
			})
		case op < 7:
			id := strconv.Itoa(step)
			resp, ticket := s.TryPick(&llmrouterv1.PickRequest{RequestId: id, Model: "m", PromptTokens: r.Int64N(30000) + 1, MaxTokens: 100}, nil)
			if resp.Status == llmrouterv1.PickResponse_ROUTED {
				ids = append(ids, id)
			} else if ticket != nil && r.IntN(2) == 0 {
				s.Cancel(ticket)
			}
		case op < 9 && len(ids) > 0:
			k := r.IntN(len(ids))
			if r.IntN(2) == 0 {
				k = len(ids) - 1 // most likely unseen by a report yet
			}
			_ = s.Report(t.Context(), &llmrouterv1.OutcomeReport{RequestId: ids[k], CompletionTokens: r.Int64N(3000) + 1})
			ids = append(ids[:k], ids[k+1:]...)
		case op == 9:
			clk.Advance(time.Duration(r.Int64N(int64(3 * time.Second))))
			s.Tick()
		case op == 10:
			_ = s.Drain(a, "test")
			_ = s.Resume(a, "test")
		default: // the engine restarted: its agent registers again
			l, err := s.RegisterAs(regMsg(a), leases[a])
			if err != nil {
				t.Fatal(err)
			}
			leases[a] = l
		}
		s.mu.Lock()
		for id, in := range s.insts {
			memo := in.view // read, not fill: the memo the decisions left
			fresh := in.view
			fresh.SaturationMemo = 0
			got, want := s.sat.Saturated(&memo), s.sat.Saturated(&fresh)
			if got != want {
				s.unlock()
				t.Fatalf("step %d: %s remembers saturated=%v, judged afresh %v (%+v)", step, id, got, want, in.view)
			}
			if memo.SaturationMemo == in.view.SaturationMemo && in.view.SaturationMemo > 1 {
				remembered++
			}
		}
		s.unlock()
	}
	if remembered < 10000*n/8 {
		t.Errorf("only %d of %d verdicts came from a memo the decisions left", remembered, 10000*n)
	}
}
