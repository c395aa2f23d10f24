package framework

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// Validator is what a plugin type's parameter struct implements when it
// has rules: Validate names the parameter at fault, the value and what is
// accepted ("parameter maxLoadRatio 0.5: accepted: ..."). Params.Decode
// calls it.
type Validator interface {
	Validate() error
}

// Params are one plugin's parameters as given, and the values its type's
// parameters were given under deprecated keys (config.PolicyKeys).
type Params struct {
	plugin, typ string
	raw         json.RawMessage
	deprecated  []config.ParamDefault
}

// paramsFor are the parameters raw of the plugin named plugin of type typ,
// with cfg's deprecated keys for typ.
func paramsFor(plugin, typ string, raw json.RawMessage, cfg config.Config) Params {
	p := Params{plugin: plugin, typ: typ, raw: raw}
	for _, d := range cfg.Scheduler.ParamDefaults {
		if d.Type == typ {
			p.deprecated = append(p.deprecated, d)
		}
	}
	return p
}

// Decode decodes the parameters over into, a pointer to the type's
// parameter struct holding its defaults: first the values of deprecated
// keys (llm_scheduler.policies.*), which set defaults, then the
// parameters given. An unknown parameter is refused naming it and the
// accepted ones, a value of the wrong kind naming the parameter and the
// kind wanted. When into has rules (Validator), they are checked after
// each step, so a bad deprecated key is named as such.
func (p Params) Decode(into any) error {
	v, _ := into.(Validator)
	if len(p.deprecated) > 0 {
		obj := map[string]json.RawMessage{}
		var keys []string
		for _, d := range p.deprecated {
			obj[d.Param] = jsonValue(d.Value)
			keys = append(keys, fmt.Sprintf("%s = %v", d.Key, d.Value))
		}
		b, err := json.Marshal(obj)
		if err == nil {
			err = decodeFields(b, into)
		}
		if err == nil && v != nil {
			err = v.Validate()
		}
		if err != nil {
			return fmt.Errorf("%s (deprecated; a default of plugin type %s): %w", strings.Join(keys, ", "), p.typ, err)
		}
	}
	if len(p.raw) == 0 || string(p.raw) == "null" {
		if v != nil {
			return v.Validate()
		}
		return nil
	}
	if err := decodeFields(p.raw, into); err != nil {
		return err
	}
	if v != nil {
		return v.Validate()
	}
	return nil
}

// jsonValue is a deprecated key's value as JSON. The environment gives
// every value as a string: one that reads as a JSON number or boolean is
// taken as that ("0.7", "true"); any other stays a string ("5ms").
func jsonValue(v any) json.RawMessage {
	if s, ok := v.(string); ok {
		t := strings.TrimSpace(s)
		var x any
		if json.Unmarshal([]byte(t), &x) == nil {
			switch x.(type) {
			case float64, bool:
				return json.RawMessage(t)
			}
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(fmt.Sprint(v))
	}
	return b
}

// decodeFields decodes the JSON object b over the struct into points to,
// one parameter at a time, so that every error names its parameter.
func decodeFields(b []byte, into any) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return fmt.Errorf("parameters: want a mapping of parameter names to values, got %s", bytes.TrimSpace(b))
	}
	accepted := fieldNames(into)
	names := make([]string, 0, len(obj))
	for k := range obj {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if slices.Contains(accepted, k) {
			continue
		}
		// Names are case-sensitive, as in llm-d's strict decoding
		// (strictDecode): encoding/json alone would take "hashblocksize"
		// for hashBlockSize.
		for _, a := range accepted {
			if strings.EqualFold(a, k) {
				return fmt.Errorf("parameters: unknown parameter %q (names are case-sensitive: %q); accepted: %s", k, a, strings.Join(accepted, ", "))
			}
		}
		return fmt.Errorf("parameters: unknown parameter %q; accepted: %s", k, strings.Join(accepted, ", "))
	}
	for _, k := range names {
		one, _ := json.Marshal(map[string]json.RawMessage{k: obj[k]})
		dec := json.NewDecoder(bytes.NewReader(one))
		dec.DisallowUnknownFields()
		if err := dec.Decode(into); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return fmt.Errorf("parameter %s: got a JSON %s, want %s", k, te.Value, typeName(te.Type))
			}
			return fmt.Errorf("parameter %s: %w", k, err)
		}
		if err := exactNames(one, reflect.TypeOf(into), ""); err != nil {
			return fmt.Errorf("parameter %s: %w", k, err)
		}
	}
	return nil
}

// Duration is a parameter given as "5ms", "1.5s" and the like.
type Duration time.Duration

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("got %s, want a duration string such as \"5ms\"", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: want one such as \"5ms\" or \"1.5s\"", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as Go writes it ("5.75ms").
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// String is the duration as Go writes it.
func (d Duration) String() string { return time.Duration(d).String() }

// declared are the plugin types registered with their parameter struct
// (RegisterPlugin, RegisterPolicy): what they take with a configuration
// and no parameters given.
var declared = map[string]func(config.Config, Params) (any, error){}

// rankers are the policies RegisterPolicy registered, built from their
// parameters.
var rankers = map[string]func(policy.Deps, Params) (policy.Policy, error){}

// decoder returns the parameters of a plugin of a type whose parameters
// are P: defaults, then what params holds, checked.
func decoder[P any](defaults func(config.Config) P) func(config.Config, Params) (P, error) {
	return func(cfg config.Config, params Params) (P, error) {
		p := defaults(cfg)
		err := params.Decode(&p)
		return p, err
	}
}

// RegisterPlugin registers plugin type typ, whose parameters are P (a
// struct of JSON-tagged fields; with rules when it is a Validator):
// defaults gives them from the configuration (a default taken from a key
// is named in the field's `default` tag), Params.Decode applies the
// deprecated keys and a file's parameters over them and checks them, and
// build builds the plugin from the result. Parameters and the docs'
// parameter tables read them from here.
func RegisterPlugin[P any](typ string, defaults func(config.Config) P, build func(*Handle, P) (any, error)) {
	decode := decoder(defaults)
	Register(typ, func(h *Handle, params Params) (any, error) {
		p, err := decode(h.Deps.Config, params)
		if err != nil {
			return nil, err
		}
		return build(h, p)
	})
	mu.Lock()
	defer mu.Unlock()
	declared[typ] = func(cfg config.Config, params Params) (any, error) { return decode(cfg, params) }
}

// RegisterStagePlugin is RegisterStage for a filter type whose parameters
// are P, as RegisterPlugin's.
func RegisterStagePlugin[P any](typ string, defaults func(config.Config) P, build func(*Handle, P) (any, error)) {
	RegisterPlugin(typ, defaults, build)
	mu.Lock()
	stage = append(stage, typ)
	mu.Unlock()
}

// RegisterPolicy registers the policy name, whose parameters are P: it is
// a plugin type (a ranking picker) and a built-in profile of that name,
// which runs with the defaults. The parameters are as RegisterPlugin's;
// build builds the policy from them.
func RegisterPolicy[P any](name string, defaults func(config.Config) P, build func(policy.Deps, P) (policy.Policy, error)) {
	decode := decoder(defaults)
	r := func(d policy.Deps, params Params) (policy.Policy, error) {
		p, err := decode(d.Config, params)
		if err != nil {
			return nil, err
		}
		return build(d, p)
	}
	policy.Register(name, func(d policy.Deps) (policy.Policy, error) {
		return r(d, paramsFor(name, name, nil, d.Config))
	})
	mu.Lock()
	defer mu.Unlock()
	rankers[name] = r
	declared[name] = func(cfg config.Config, params Params) (any, error) { return decode(cfg, params) }
}

// Parameters returns the parameters a plugin of type typ takes with cfg
// when a file gives it none: its defaults with the values of cfg's
// deprecated keys for typ, checked. A built-in profile runs with them.
// False for a type that did not declare its parameters (RegisterPlugin,
// RegisterPolicy).
func Parameters(typ string, cfg config.Config) (any, bool, error) {
	mu.RLock()
	f, ok := declared[typ]
	mu.RUnlock()
	if !ok {
		return nil, false, nil
	}
	p, err := f(cfg, paramsFor(typ, typ, nil, cfg))
	return p, true, err
}

// CheckDeprecated checks the values cfg was given under deprecated keys
// (llm_scheduler.policies.*, config.PolicyKeys) by their plugin types'
// rules, whether or not a plugin of that type is configured: a bad one
// is an error naming the key, the parameter and what is accepted.
func CheckDeprecated(cfg config.Config) error {
	var types []string
	for _, d := range cfg.Scheduler.ParamDefaults {
		if !slices.Contains(types, d.Type) {
			types = append(types, d.Type)
		}
	}
	for _, typ := range types {
		_, ok, err := Parameters(typ, cfg)
		if !ok {
			return fmt.Errorf("deprecated keys of plugin type %s: no such type declares parameters; registered: %s", typ, strings.Join(Types(), ", "))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// ParameterNames lists the JSON names of a parameter struct's fields.
func ParameterNames(params any) []string { return fieldNames(params) }
