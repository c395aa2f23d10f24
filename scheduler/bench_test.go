package scheduler

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/prefixcache" // BenchmarkPick compares it
)

// BenchmarkPick measures one whole scheduler decision — candidate
// filtering, the policy, Picked, the in-flight bookkeeping — plus its
// completion report (so in-flight state stays bounded) over fleets of 16,
// 256 and 1,024 instances, for least-request and for prefix-cache with a
// 64-block prompt: 16 blocks of one of 64 system prompts, the turns of an
// 8-turn conversation so far, and new blocks for the rest (21 a request on
// average, more than a chat's next turn brings). prefix-cache's index is
// bounded at 1M pairs and filled to steady state before timing, so the
// numbers are of an index at its bound (evicting as it learns), not of one
// still growing. The clock advances a millisecond a decision.
//
// cpu-ns/op is the process's CPU time (user and system, the garbage
// collector's workers included) per decision: on a machine other work
// shares, wall-clock ns/op swings with the load; CPU time far less.
func BenchmarkPick(b *testing.B) {
	for _, pol := range []string{"least-request", "prefix-cache"} {
		for _, n := range []int{16, 256, 1024} {
			b.Run(fmt.Sprintf("policy=%s/instances=%d", pol, n), func(b *testing.B) {
				s, clk := newTestScheduler(b, func(c *config.Config) {
					c.Scheduler.MaxWaiting = 0
					c.Scheduler.Policy = pol
					c.Scheduler.PrefixIndex.MaxBlocks = 1 << 20
				})
				for i := range n {
					addr := fmt.Sprintf("10.%d.%d.%d:8000", i>>16&255, i>>8&255, i&255)
					mustRegister(b, s, addr)
					// Twice, so that those with requests waiting show a
					// batch limit (admission learns one from a hold
					// that lasts two reports).
					mustReport(b, s, addr, load(int64(i%7), int64(i%3)))
					mustReport(b, s, addr, load(int64(i%7), int64(i%3)))
				}
				req := &llmrouterv1.PickRequest{Model: "m", PromptTokens: 1024, MaxTokens: 100}
				out := &llmrouterv1.OutcomeReport{}
				ctx := context.Background()
				hashes := make([]uint64, 64)
				pick := func(i int) {
					req.RequestId = strconv.Itoa(i)
					conv, turn := uint64(i/8), uint64(i%8)
					for j := range hashes {
						switch {
						case j < 16:
							hashes[j] = (conv%64)<<32 | uint64(j) | 1<<62
						case uint64(j-16) < (turn+1)*6:
							hashes[j] = conv<<32 | uint64(j)
						default:
							hashes[j] = uint64(i)<<32 | uint64(j) | 1<<63
						}
					}
					req.PromptBlockHashes = hashes
					resp, err := s.Pick(ctx, req, nil)
					if err != nil || resp.Status != llmrouterv1.PickResponse_ROUTED {
						b.Fatal(resp, err)
					}
					out.RequestId = req.RequestId
					_ = s.Report(ctx, out)
					clk.Advance(time.Millisecond) // 1,000 decisions a second
				}
				i := 0
				if pol == "prefix-cache" {
					for ; i < 60000; i++ { // ≈ 1.3M new blocks: past the bound
						pick(i)
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				cpu0, cpuOK := processCPU()
				for b.Loop() {
					pick(i)
					i++
				}
				if cpu1, ok := processCPU(); cpuOK && ok {
					b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
				}
			})
		}
	}
}
