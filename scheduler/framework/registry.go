package framework

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// Factory builds one plugin of a type from its parameters. It owns them:
// defaults, decoding (Params.Decode refuses unknown ones by name) and
// validation. It may look up plugins built before it through h.
type Factory func(h *Handle, params Params) (any, error)

var (
	mu        sync.RWMutex
	factories = map[string]Factory{}
	builtins  = map[string]Spec{}
	stage     []string // RegisterStage's types, in order
)

// Register makes a plugin type available by name. It panics on a duplicate
// (a programming error any test catches). A type is registered once, in
// its package's init; scheduler/policy/plugins/all imports every package.
func Register(typ string, f Factory) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := factories[typ]; dup {
		panic("framework: duplicate plugin type " + typ)
	}
	factories[typ] = f
}

// RegisterStage registers a filter type the scheduler runs ahead of every
// profile (routable-filter, saturation-filter), in registration order. A
// profile referencing a plugin of such a type does not run it itself: the
// reference is accepted and the scheduler's stage runs the plugin once,
// with the parameters the file gave it (StagePlugin).
func RegisterStage(typ string, f Factory) {
	Register(typ, f)
	mu.Lock()
	stage = append(stage, typ)
	mu.Unlock()
}

// StageTypes lists the stage filter types, in the order the scheduler runs
// them.
func StageTypes() []string {
	mu.RLock()
	defer mu.RUnlock()
	return slices.Clone(stage)
}

func isStage(typ string) bool {
	mu.RLock()
	defer mu.RUnlock()
	return slices.Contains(stage, typ)
}

// StagePlugin returns the scheduler's stage plugin of type typ for pol:
// the one pol's profile was built with (declared in its
// EndpointPickerConfig, so with that file's parameters), else one built by
// the type's factory with its default parameters.
func StagePlugin(pol policy.Policy, typ string, d policy.Deps) (any, error) {
	if !isStage(typ) {
		return nil, fmt.Errorf("%q is not a stage filter type; registered: %s", typ, strings.Join(StageTypes(), ", "))
	}
	if p, ok := pol.(*Profile); ok {
		for i, t := range p.types {
			if t == typ {
				return p.plugins[i], nil
			}
		}
	}
	f, _ := factory(typ)
	x, err := f(&Handle{Deps: d, Name: typ, Type: typ}, paramsFor(typ, typ, nil, d.Config))
	if err != nil {
		return nil, fmt.Errorf("plugin %q: %w", typ, err)
	}
	return x, nil
}

// RegisterProfile adds a built-in profile: spec's profile named name is
// then accepted wherever a policy name is.
func RegisterProfile(name string, spec Spec) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := builtins[name]; dup {
		panic("framework: duplicate built-in profile " + name)
	}
	builtins[name] = spec
}

// Types lists the registered plugin types, ranking pickers (every
// registered policy) included, sorted.
func Types() []string {
	mu.RLock()
	out := make([]string, 0, len(factories))
	for t := range factories {
		out = append(out, t)
	}
	mu.RUnlock()
	for _, n := range policy.Names() {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

func factory(typ string) (Factory, bool) {
	mu.RLock()
	f, ok := factories[typ]
	mu.RUnlock()
	if ok {
		return f, true
	}
	if slices.Contains(policy.Names(), typ) {
		return rankingFactory(typ), true
	}
	return nil, false
}

// BuiltinProfiles lists the built-in profile names — every registered
// policy and every profile added by RegisterProfile — sorted.
func BuiltinProfiles() []string {
	out := policy.Names()
	mu.RLock()
	for n := range builtins {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	mu.RUnlock()
	sort.Strings(out)
	return out
}

// Builtin returns the spec of the built-in profile name: a registered
// profile, or for a registered policy the profile whose one plugin is that
// policy as a ranking picker.
func Builtin(name string) (Spec, bool) {
	mu.RLock()
	s, ok := builtins[name]
	mu.RUnlock()
	if ok {
		return s, true
	}
	if slices.Contains(policy.Names(), name) {
		return Spec{
			Plugins:  []PluginSpec{{Type: name, Name: name}},
			Profiles: []ProfileSpec{{Name: name, Plugins: []PluginRef{{PluginRef: name}}}},
		}, true
	}
	return Spec{}, false
}

// Resolver builds policies by name: the profiles of a configured
// EndpointPickerConfig first (when File is set), then the built-in ones.
type Resolver struct {
	File *Spec
}

// Names lists every name the resolver accepts, the file's profiles first.
func (r Resolver) Names() []string {
	var out []string
	if r.File != nil {
		for _, p := range r.File.Profiles {
			out = append(out, p.Name)
		}
	}
	for _, n := range BuiltinProfiles() {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// New builds the policy name. d.Build, when unset, resolves through r, so a
// composing policy (pd-split) may name any profile.
func (r Resolver) New(name string, d policy.Deps) (policy.Policy, error) {
	if d.Build == nil {
		d.Build = func(n string) (policy.Policy, error) {
			d2 := d
			d2.Build = nil
			return r.New(n, d2)
		}
	}
	if r.File != nil && r.File.has(name) {
		return Build(*r.File, name, d)
	}
	if s, ok := Builtin(name); ok {
		return Build(s, name, d)
	}
	return nil, fmt.Errorf("unknown policy %q; accepted: %s", name, strings.Join(r.Names(), ", "))
}

// Handle is what a factory sees while a spec is being built: the
// dependencies, its own name and the plugins built before it.
type Handle struct {
	Deps policy.Deps
	// Name and Type are the plugin's being built.
	Name, Type string
	built      []builtPlugin
}

type builtPlugin struct {
	name, typ string
	p         any
}

// Plugin returns the plugin named name, declared (so built) earlier in the
// same spec.
func (h *Handle) Plugin(name string) (any, bool) {
	for _, b := range h.built {
		if b.name == name {
			return b.p, true
		}
	}
	return nil, false
}

func (h *Handle) typeOf(name string) string {
	for _, b := range h.built {
		if b.name == name {
			return b.typ
		}
	}
	return ""
}

// PluginOfType returns the first plugin of type typ declared earlier in the
// same spec.
func (h *Handle) PluginOfType(typ string) (any, bool) {
	for _, b := range h.built {
		if b.typ == typ {
			return b.p, true
		}
	}
	return nil, false
}

// Keep is how many ranks the scheduler uses: the pick and its fallbacks
// (1 + llm_gateway.retry_count).
func (h *Handle) Keep() int { return 1 + max(h.Deps.Config.Gateway.RetryCount, 0) }

// DefaultPicker is the picker a profile without one gets, as in llm-d.
const DefaultPicker = "max-score-picker"

// Build builds the plugins of spec and returns its profile named profile as
// a policy. Every error names the plugin (and the parameter) at fault.
func Build(spec Spec, profile string, d policy.Deps) (policy.Policy, error) {
	ps, ok := spec.profile(profile)
	if !ok {
		return nil, fmt.Errorf("no scheduling profile %q; the file has %s", profile, strings.Join(spec.profileNames(), ", "))
	}
	h := &Handle{Deps: d}
	for _, pl := range spec.Plugins {
		name := pl.name()
		f, ok := factory(pl.Type)
		if !ok {
			return nil, fmt.Errorf("plugin %q: unknown type %q%s; accepted: %s", name, pl.Type, upstreamHint(pl.Type), strings.Join(Types(), ", "))
		}
		h.Name, h.Type = name, pl.Type
		p, err := f(h, paramsFor(name, pl.Type, pl.Parameters, d.Config))
		if err != nil {
			return nil, fmt.Errorf("plugin %q (type %s): %w", name, pl.Type, err)
		}
		h.built = append(h.built, builtPlugin{name, pl.Type, p})
	}
	where := fmt.Sprintf("scheduling profile %q", profile)
	if ps.every {
		where += " (the file declares no schedulingProfiles: this one has every filter, scorer and picker it declares)"
		ps.Plugins = nil
		for _, b := range h.built {
			switch b.p.(type) {
			case Filter, Scorer, Picker:
				ps.Plugins = append(ps.Plugins, PluginRef{PluginRef: b.name})
			}
		}
	}
	prof := &Profile{name: profile}
	for _, ref := range ps.Plugins {
		p, ok := h.Plugin(ref.PluginRef)
		if !ok {
			return nil, fmt.Errorf("%s: pluginRef %q names no plugin; declared: %s", where, ref.PluginRef, strings.Join(spec.pluginNames(), ", "))
		}
		w := 1.0
		if ref.Weight != nil {
			w = *ref.Weight
		}
		if isStage(h.typeOf(ref.PluginRef)) {
			if ref.Weight != nil {
				return nil, fmt.Errorf("%s: pluginRef %q: weight: only a scorer takes one", where, ref.PluginRef)
			}
			continue // the scheduler runs it ahead of every profile
		}
		switch x := p.(type) {
		case Scorer:
			if w < 0 {
				return nil, fmt.Errorf("%s: pluginRef %q: weight %g: accepted: 0 or more", where, ref.PluginRef, w)
			}
			prof.scorers = append(prof.scorers, weighted{x, w})
		case Filter:
			prof.filters = append(prof.filters, x)
		case Picker:
			if prof.picker != nil {
				return nil, fmt.Errorf("%s: pluginRef %q: a second picker; a profile has one", where, ref.PluginRef)
			}
			prof.picker = x
		case ProfileHandler:
			return nil, fmt.Errorf("%s: pluginRef %q: a profile handler is declared under plugins, not referenced from a profile", where, ref.PluginRef)
		default:
			return nil, fmt.Errorf("%s: pluginRef %q is neither a filter, a scorer nor a picker", where, ref.PluginRef)
		}
		if ref.Weight != nil {
			if _, ok := p.(Scorer); !ok {
				return nil, fmt.Errorf("%s: pluginRef %q: weight: only a scorer takes one", where, ref.PluginRef)
			}
		}
	}
	if prof.picker == nil {
		f, _ := factory(DefaultPicker)
		if f == nil {
			return nil, errors.New("no picker and no " + DefaultPicker + " registered")
		}
		h.Name, h.Type = DefaultPicker, DefaultPicker
		p, err := f(h, paramsFor(DefaultPicker, DefaultPicker, nil, d.Config))
		if err != nil {
			return nil, err
		}
		prof.picker = p.(Picker)
		h.built = append(h.built, builtPlugin{DefaultPicker, DefaultPicker, p})
	}
	stageDeclared := slices.ContainsFunc(h.built, func(b builtPlugin) bool { return isStage(b.typ) })
	if r, ok := prof.picker.(Ranking); ok && len(prof.filters) == 0 && len(prof.scorers) == 0 && !stageDeclared {
		pol := r.Policy()
		if pol.Name() == profile {
			return pol, nil // the policy itself: same decisions, same cost
		}
	}
	for _, b := range h.built {
		prof.plugins = append(prof.plugins, b.p)
		prof.types = append(prof.types, b.typ)
		if o, ok := b.p.(policy.Observer); ok {
			prof.observers = append(prof.observers, o)
		}
	}
	return prof, nil
}
