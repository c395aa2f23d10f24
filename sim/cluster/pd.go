package cluster

import (
	"container/heap"
	"fmt"
	"time"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/sim/engine"
	"github.com/llmrouter/llmrouter/sim/workload"
)

// Prefill/decode disaggregation, as the pd proxy runs it with vLLM's
// NixlConnector: a pick that names a prefill instance first runs the prompt
// there with max_tokens 1; when that finishes, the prompt's KV cache moves
// to the decode instance (KVTransferPerBlock per prompt block, without
// holding up either engine's steps, as an RDMA pull does), and the decode
// instance then computes only the last prompt token and decodes. The client's
// first token is the decode instance's. A prefill the prefill engine refuses
// falls back to a local prefill, as the proxy does.

// prefillStage marks the engine request id of a flight's prefill half.
const prefillStage = uint64(1) << 62

// Roles accepted in Options.Roles.
const (
	RoleBoth    = "both"
	RolePrefill = "prefill"
	RoleDecode  = "decode"
)

func (o *Options) checkRoles() error {
	if len(o.Roles) == 0 {
		return nil
	}
	if len(o.Roles) != o.Instances {
		return fmt.Errorf("roles: %d values for %d instances: want one per instance, or none (all both)", len(o.Roles), o.Instances)
	}
	decode := false
	for i, r := range o.Roles {
		switch r {
		case RoleBoth, RoleDecode:
			decode = true
		case RolePrefill:
		default:
			return fmt.Errorf("roles[%d] = %q: accepted: both, prefill, decode", i, r)
		}
	}
	if !decode {
		return fmt.Errorf("roles: no decode or both-role instance: nothing could serve a request's output")
	}
	if o.KVTransferPerBlock < 0 {
		return fmt.Errorf("kv transfer per block %v: want 0 or more", o.KVTransferPerBlock)
	}
	return nil
}

func (o *Options) role(i int) llmrouterv1.Role {
	if len(o.Roles) == 0 {
		return llmrouterv1.Role_ROLE_BOTH
	}
	switch o.Roles[i] {
	case RolePrefill:
		return llmrouterv1.Role_ROLE_PREFILL
	case RoleDecode:
		return llmrouterv1.Role_ROLE_DECODE
	}
	return llmrouterv1.Role_ROLE_BOTH
}

// pdState is the simulator's disaggregation bookkeeping.
type pdState struct {
	handoffs                  handoffHeap // KV transfers in flight, by end time
	disaggregated, fallbacks  int
	prefillTime, transferTime time.Duration
}

type handoff struct {
	at time.Duration
	f  *flight
}

type handoffHeap []handoff

func (h handoffHeap) Len() int { return len(h) }
func (h handoffHeap) Less(i, j int) bool {
	if h[i].at != h[j].at {
		return h[i].at < h[j].at
	}
	return h[i].f.engID < h[j].f.engID
}
func (h handoffHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *handoffHeap) Push(x any)   { *h = append(*h, x.(handoff)) }
func (h *handoffHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// next is when the next KV transfer ends, or never.
func (p *pdState) next() time.Duration {
	if len(p.handoffs) == 0 {
		return never
	}
	return p.handoffs[0].at
}

// prefillRemotely starts f's prefill on the instance at addr, when the pick
// named one other than f's decode instance. It reports whether it did; when
// not, the decode instance prefills (counted as a fallback if a prefill
// instance was named but refused the request).
func (s *sim) prefillRemotely(f *flight, addr string) bool {
	pre := s.byAddr[addr]
	if addr == "" || pre == nil || pre == f.inst {
		return false
	}
	err := pre.eng.Add(s.clock.now, engine.Request{ID: f.engID | prefillStage, PromptTokens: f.prompt, MaxTokens: 1, BlockHashes: f.hashes})
	if err != nil {
		s.pd.fallbacks++
		return false
	}
	f.pre = pre
	pre.requests++
	s.flights[f.engID|prefillStage] = f
	s.fix(pre)
	return true
}

// prefilled handles an event of f's prefill half: when it finished, the KV
// transfer to the decode instance starts.
func (s *sim) prefilled(f *flight, ev engine.Event) {
	if ev.Kind != engine.Finished {
		return
	}
	delete(s.flights, ev.ID)
	blocks := (f.prompt + s.o.Engine.BlockSize - 1) / s.o.Engine.BlockSize
	transfer := time.Duration(blocks) * s.o.KVTransferPerBlock
	s.pd.prefillTime += ev.At - f.req.Arrival
	s.pd.transferTime += transfer
	heap.Push(&s.pd.handoffs, handoff{at: ev.At + transfer, f: f})
}

// handoff is the end of a KV transfer: the decode instance takes the request.
func (s *sim) handoff() {
	h := heap.Pop(&s.pd.handoffs).(handoff)
	f := h.f
	in := f.inst
	err := in.eng.Add(s.clock.now, engine.Request{ID: f.engID, PromptTokens: f.prompt, MaxTokens: f.req.MaxTokens,
		BlockHashes: f.hashes, KVTransferred: true})
	if err != nil {
		s.fail(f, "engine: "+stripID(err.Error()), true)
		return
	}
	s.pd.disaggregated++
	s.fix(in)
}

// pdExtra is what the summary says of disaggregation, when it happened.
func (s *sim) pdExtra() []workload.KV {
	p := s.pd
	if p.disaggregated == 0 && p.fallbacks == 0 {
		return nil
	}
	out := []workload.KV{{Key: "Disaggregated requests", Value: fmt.Sprintf("%d (%d fell back to a local prefill)", p.disaggregated, p.fallbacks)}}
	if p.disaggregated > 0 {
		n := time.Duration(p.disaggregated)
		out = append(out, workload.KV{Key: "Mean remote prefill / KV transfer", Value: fmt.Sprintf("%s / %s",
			(p.prefillTime / n).Round(time.Microsecond), (p.transferTime / n).Round(time.Microsecond))})
	}
	return out
}
