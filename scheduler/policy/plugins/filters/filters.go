// Package filters holds the role filters of disaggregated serving (llm-d's
// names): decode-filter keeps the instances that decode (role decode or
// both), prefill-filter those that prefill (role prefill or both), as
// pd-split divides its candidates.
//
// It also holds the scheduler's stage, the two filters every decision runs
// ahead of its profile (framework.RegisterStage): routable-filter and
// saturation-filter, the latter scheduler/admission's judgment with its
// thresholds as parameters. A profile may reference them (the reference
// documents the order and runs nothing twice); an EndpointPickerConfig
// declaring one sets its parameters for the profiles of that file.
package filters

import (
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// Type names.
const (
	Decode  = "decode-filter"
	Prefill = "prefill-filter"
)

func init() {
	framework.Register(Decode, func(_ *framework.Handle, p framework.Params) (any, error) {
		return without(policy.RolePrefill), p.Decode(&struct{}{})
	})
	framework.Register(Prefill, func(_ *framework.Handle, p framework.Params) (any, error) {
		return without(policy.RoleDecode), p.Decode(&struct{}{})
	})
}

// without drops the candidates of one role.
type without policy.Role

func (r without) Filter(_ *framework.CycleState, _ *policy.Request, cands []*policy.Instance) []*policy.Instance {
	var out []*policy.Instance
	for i, c := range cands {
		if c.Role == policy.Role(r) {
			if out == nil {
				out = append(make([]*policy.Instance, 0, len(cands)), cands[:i]...)
			}
			continue
		}
		if out != nil {
			out = append(out, c)
		}
	}
	if out == nil {
		return cands
	}
	return out
}
