package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/sim/workload"
)

func sharedPrefix(t *testing.T, m workload.SharedPrefix) workload.Source {
	t.Helper()
	src, err := workload.NewSharedPrefix(m)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func extra(r Result, key string) string {
	for _, kv := range r.Extra {
		if kv.Key == key {
			return kv.Value
		}
	}
	return ""
}

// With pd-split on one prefill and two decode instances every request is
// prefilled on the prefill instance and decoded from transferred KV, and
// the transfer's cost shows in the time to first token; a fleet of both-role
// instances under prefix-cache never disaggregates.
func TestPDSplitDisaggregatesInTheSimulator(t *testing.T) {
	src := sharedPrefix(t, workload.SharedPrefix{Seed: 1, Groups: 40, PromptsPerGroup: 1, SystemTokens: 2000, QuestionTokens: 100, OutputTokens: 50})
	o := opts(src, 3, workload.Arrivals{Concurrency: 4}, 0)
	o.Roles = []string{RolePrefill, RoleDecode, RoleDecode}
	slow := o
	slow.KVTransferPerBlock = time.Millisecond
	fast, costly := run(t, o, "pd-split"), run(t, slow, "pd-split")
	for _, r := range []Result{fast, costly} {
		if r.Failed != 0 || r.Requests != 40 {
			t.Fatalf("%d requests, %d failed: %v", r.Requests, r.Failed, r.Errors)
		}
		if got := extra(r, "Disaggregated requests"); !strings.HasPrefix(got, "40 (0 fell back") {
			t.Fatalf("disaggregated: %q, want all 40", got)
		}
		if r.PerInstance[0].Requests != 40 {
			t.Fatalf("prefill instance prefilled %d of 40", r.PerInstance[0].Requests)
		}
	}
	// 2,100-token prompts are 132 blocks: a millisecond each adds 132 ms.
	if d := costly.TTFTMeanMs - fast.TTFTMeanMs; d < 100 {
		t.Fatalf("TTFT %.1f ms with 1 ms per block vs %.1f ms free: the transfer is not paid", costly.TTFTMeanMs, fast.TTFTMeanMs)
	}
	both := opts(src, 3, workload.Arrivals{Concurrency: 4}, 0)
	if r := run(t, both, "prefix-cache"); extra(r, "Disaggregated requests") != "" {
		t.Fatal("a both-role fleet disaggregated")
	}
	bad := o
	bad.Roles = []string{RolePrefill, RolePrefill, RolePrefill}
	if _, err := Run(t.Context(), bad, "pd-split"); err == nil || !strings.Contains(err.Error(), "no decode") {
		t.Fatalf("an all-prefill fleet: %v", err)
	}
}
