package scheduler

import (
	"context"
	"slices"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// Bounds of ListModels' answer: each registration is bounded
// (internal/reglimits, the same numbers), a fleet of them is not, so the
// answer a gateway caches and serves is cut here. Past either bound the
// sorted list stops (truncated).
const (
	// MaxListedModels is the most names one answer lists.
	MaxListedModels = 1024
	// MaxListedModelBytes bounds the bytes of names and parents of one
	// answer.
	MaxListedModelBytes = 256 << 10
)

// ListModels lists the models the fleet serves now, for the gateway's
// answer to GET /v1/models. It reads the registry only (never the
// scheduler's lock, so it never waits behind picks).
func (s *Scheduler) ListModels(context.Context, *llmrouterv1.ListModelsRequest) (*llmrouterv1.ListModelsResponse, error) {
	return ListModels(s.reg), nil
}

// ListModels is the union of the base models and LoRA adapters of the
// routable instances of reg (healthy, verified, reporting, not draining:
// the ones a pick may name). Verifying, unhealthy and draining instances
// take no request; a silent one is not picked either, and a request whose
// model only silent instances serve is passed through to Envoy's round
// robin over every engine, most of which may not serve it: listing it
// would promise what routing cannot keep. The list is sorted by name, each
// name once, cut at MaxListedModels and MaxListedModelBytes.
//
// A name any instance serves as a base model is a base model; an adapter's
// parent is named only when every instance serving it serves exactly one
// base model, the same one (an engine loads adapters onto its base model).
func ListModels(reg registry.View) *llmrouterv1.ListModelsResponse {
	type entry struct {
		base      bool
		parent    string
		parentBad bool // instances disagree, or one serves several bases
		created   int64
		instances int32
	}
	entries := map[string]*entry{}
	add := func(name string, in *registry.Instance) *entry {
		e := entries[name]
		created := in.Registered.Unix()
		if e == nil {
			e = &entry{created: created}
			entries[name] = e
		}
		e.created = min(e.created, created)
		e.instances++
		return e
	}
	for _, in := range reg.List() {
		if !in.Routable() {
			continue
		}
		for _, m := range in.Models {
			add(m, &in).base = true
		}
		for _, a := range in.Adapters {
			if slices.Contains(in.Models, a) {
				continue // counted as its base model above
			}
			e := add(a, &in)
			switch {
			case len(in.Models) != 1:
				e.parentBad = true
			case e.parent == "":
				e.parent = in.Models[0]
			case e.parent != in.Models[0]:
				e.parentBad = true
			}
		}
	}
	names := make([]string, 0, len(entries))
	for name := range entries {
		if name != "" {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	out := &llmrouterv1.ListModelsResponse{}
	size := 0
	for _, name := range names {
		e := entries[name]
		m := &llmrouterv1.ServedModel{Name: name, LoraAdapter: !e.base, CreatedUnix: e.created, Instances: e.instances}
		if m.LoraAdapter && !e.parentBad {
			m.Parent = e.parent
		}
		size += len(m.Name) + len(m.Parent)
		if len(out.Models) == MaxListedModels || size > MaxListedModelBytes {
			out.Truncated = true
			break
		}
		out.Models = append(out.Models, m)
	}
	return out
}
