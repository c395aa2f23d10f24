// Package lorascorer is lora-affinity-scorer: it grades how ready each
// candidate is to serve the request's LoRA adapter, with the Gateway API
// Inference Extension's grades: 1 where the adapter is loaded, 0.8 where the
// engine has a free adapter slot (fewer adapters running and waiting than
// it runs at once), 0.6 where requests for it already wait for it to be
// loaded, else 0. A request naming no adapter, or naming the base model the
// candidate serves (the gateway names the request's model as its adapter
// unless a header names one), needs no adapter: 1.
// An engine that does not say its waiting adapters and slots (anything but
// vLLM with LoRA on) scores 1 or 0, as it would without them. It is the
// example in docs/policies.md of adding a scorer: this package and one
// import line in plugins/all.
package lorascorer

import (
	"slices"

	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// Type is the plugin's type name.
const Type = "lora-affinity-scorer"

func init() {
	framework.Register(Type, func(_ *framework.Handle, p framework.Params) (any, error) {
		// No parameters: Decode refuses any by name.
		return scorer{}, p.Decode(&struct{}{})
	})
}

type scorer struct{}

// Score grades as upstream does, in its order: a candidate with a free slot
// scores 0.8 whether or not the adapter waits there too; 0.6 is for one
// whose slots are all taken but where the adapter is already queued to
// load. Slots taken are counted as upstream counts them, running plus
// waiting adapters; MaxLoRA 0 (unknown) never has room.
func (scorer) Score(_ *framework.CycleState, req *policy.Request, cands []*policy.Instance, out []float64) {
	for i, c := range cands {
		switch {
		case req.LoRA == "" || slices.Contains(c.LoRAs, req.LoRA) || slices.Contains(c.Models, req.LoRA):
			out[i] = 1
		case int64(len(c.LoRAs)+len(c.WaitingLoRAs)) < c.MaxLoRA:
			out[i] = 0.8
		case slices.Contains(c.WaitingLoRAs, req.LoRA):
			out[i] = 0.6
		default:
			out[i] = 0
		}
	}
}
