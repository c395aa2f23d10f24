package scheduler

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/internal/config"
)

// BenchmarkPick measures one least-request decision plus its completion
// report (so in-flight state stays bounded) over fleets of 16, 256 and 1,024
// instances.
func BenchmarkPick(b *testing.B) {
	for _, n := range []int{16, 256, 1024} {
		b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) {
			s, _ := newTestScheduler(b, func(c *config.Config) { c.Scheduler.MaxWaiting = 0 })
			for i := range n {
				addr := fmt.Sprintf("10.%d.%d.%d:8000", i>>16&255, i>>8&255, i&255)
				mustRegister(b, s, addr)
				mustReport(b, s, addr, load(int64(i%7), int64(i%3)))
			}
			req := &llmrouterv1.PickRequest{Model: "m", PromptTokens: 500, MaxTokens: 100}
			out := &llmrouterv1.OutcomeReport{}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				req.RequestId = strconv.Itoa(i)
				resp, err := s.Pick(ctx, req, nil)
				if err != nil || resp.Status != llmrouterv1.PickResponse_ROUTED {
					b.Fatal(resp, err)
				}
				out.RequestId = req.RequestId
				_ = s.Report(ctx, out)
			}
		})
	}
}
