// Package lorascorer is lora-affinity-scorer: 1 for a candidate that
// already holds the request's LoRA adapter, 0 for one that would have to
// load it; 1 for every candidate when the request names no adapter. It is
// the example in docs/policies.md of adding a scorer: this package and one
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

// Score is 1 where the adapter is loaded.
func (scorer) Score(_ *framework.CycleState, req *policy.Request, cands []*policy.Instance, out []float64) {
	for i, c := range cands {
		out[i] = 0
		if req.LoRA == "" || slices.Contains(c.LoRAs, req.LoRA) {
			out[i] = 1
		}
	}
}
