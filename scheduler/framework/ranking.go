package framework

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// ranking is a whole policy used as a profile's picker.
type ranking struct{ pol policy.Policy }

func (r ranking) Policy() policy.Policy { return r.pol }

func (r ranking) Pick(_ *CycleState, req *policy.Request, cands []*policy.Instance, _ []float64) policy.Decision {
	return r.pol.Pick(req, cands)
}

// Picked etc. forward to the policy when it observes; a ranking built into
// a larger profile is its observer.
func (r ranking) Picked(req *policy.Request, d policy.Decision) {
	if o, ok := r.pol.(policy.Observer); ok {
		o.Picked(req, d)
	}
}

func (r ranking) Completed(reqID, instanceID string, promptTokens, completionTokens int64) {
	if o, ok := r.pol.(policy.Observer); ok {
		o.Completed(reqID, instanceID, promptTokens, completionTokens)
	}
}

func (r ranking) Removed(id string) {
	if o, ok := r.pol.(policy.Observer); ok {
		o.Removed(id)
	}
}

// rankingFactory builds the registered policy typ as a ranking picker. Its
// parameters are the llm_scheduler.policies and llm_scheduler.cost_model
// knobs it declared (policy.RegisterKnobs), named in camelCase (step_time:
// stepTime), whose defaults are those keys' values.
func rankingFactory(typ string) Factory {
	return func(h *Handle, params Params) (any, error) {
		d := h.Deps
		if err := knobParams(typ, &d.Config.Scheduler, params); err != nil {
			return nil, err
		}
		pol, err := policy.New(typ, d)
		if err != nil {
			return nil, err
		}
		return ranking{pol}, nil
	}
}

// camel turns a configuration key into a parameter name: step_time → stepTime.
func camel(key string) string {
	parts := strings.Split(key, "_")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}

var durationType = reflect.TypeOf(time.Duration(0))

// knobSections are the llm_scheduler sections whose keys a policy may
// declare as knobs, by their key prefix.
// A section's key is a knob named knob + key (the name it had under
// llm_scheduler.policies, which policy.RegisterKnobs declares).
type knobSection struct {
	prefix, knob string
	v            reflect.Value
}

func knobSections(sc *config.Scheduler) []knobSection {
	return []knobSection{
		{"llm_scheduler.policies.", "", reflect.ValueOf(&sc.Policies).Elem()},
		{"llm_scheduler.cost_model.", "", reflect.ValueOf(&sc.CostModel).Elem()},
		{"llm_scheduler.prefix_index.", "prefix_index_", reflect.ValueOf(&sc.PrefixIndex).Elem()},
	}
}

// knobParams decodes params over the knobs typ declared, in sc, and checks
// the result by the keys' rules. Without parameters sc is left as it is.
func knobParams(typ string, sc *config.Scheduler, params Params) error {
	if len(params.raw) == 0 || string(params.raw) == "null" {
		return nil
	}
	keys := policy.Knobs(typ)
	var (
		fields []reflect.StructField
		dst    []reflect.Value
		where  []string // each field's key, as an error names it
	)
	for _, sec := range knobSections(sc) {
		t := sec.v.Type()
		for i := range t.NumField() {
			tag := t.Field(i).Tag.Get("mapstructure")
			key := sec.knob + tag
			if !slices.Contains(keys, key) {
				continue
			}
			where = append(where, sec.prefix+tag)
			ft := t.Field(i).Type
			if ft == durationType {
				ft = reflect.TypeOf(Duration(0))
			}
			fields = append(fields, reflect.StructField{Name: t.Field(i).Name, Type: ft, Tag: reflect.StructTag(`json:"` + camel(key) + `"`)})
			dst = append(dst, sec.v.Field(i))
		}
	}
	pv := reflect.New(reflect.StructOf(fields))
	for j, f := range dst {
		pv.Elem().Field(j).Set(f.Convert(fields[j].Type))
	}
	if err := params.Decode(pv.Interface()); err != nil {
		return err
	}
	for j, f := range dst {
		f.Set(pv.Elem().Field(j).Convert(f.Type()))
	}
	errs := append(config.ValidatePolicies(sc.Policies), config.ValidateCostModel(sc.CostModel)...)
	errs = append(errs, config.ValidatePrefixIndex(sc.PrefixIndex)...)
	for _, err := range errs {
		for j, w := range where {
			if prefix := "config: " + w + " "; strings.HasPrefix(err.Error(), prefix) {
				return fmt.Errorf("parameter %s %s", fields[j].Tag.Get("json"), strings.TrimPrefix(err.Error(), prefix))
			}
		}
	}
	return nil
}

// Deprecations names, for each llm_scheduler.policies key set to other
// than its default that a plugin now takes as a parameter, the new place.
// The key keeps working (it sets the parameter's default); the scheduler
// logs each message at startup. (The cost model's keys moved to
// llm_scheduler.cost_model, which config.Load reports.)
func Deprecations(pc config.PolicyConfig) []string {
	def := config.DefaultPolicies()
	owners := map[string][]string{}
	for _, n := range policy.Names() {
		for _, k := range policy.Knobs(n) {
			owners[k] = append(owners[k], n)
		}
	}
	v, dv := reflect.ValueOf(pc), reflect.ValueOf(def)
	var out []string
	for i := range v.NumField() {
		key := v.Type().Field(i).Tag.Get("mapstructure")
		types := owners[key]
		if len(types) == 0 || reflect.DeepEqual(v.Field(i).Interface(), dv.Field(i).Interface()) {
			continue
		}
		sort.Strings(types)
		out = append(out, fmt.Sprintf("llm_scheduler.policies.%s is deprecated: it is parameter %s of plugin type %s in an llm_scheduler.endpoint_picker_config profile (docs/policies.md); until then it still sets that parameter's default",
			key, camel(key), strings.Join(types, ", ")))
	}
	return out
}
