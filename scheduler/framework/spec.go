package framework

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// APIVersion is the apiVersion llm-d's endpoint picker (llm-d-router,
// formerly llm-d-inference-scheduler) writes its EndpointPickerConfig files
// under now; Kind is their kind, required whatever the apiVersion.
const (
	APIVersion = "llm-d.ai/v1"
	Kind       = "EndpointPickerConfig"
)

// apiVersions are the apiVersions upstream loads an EndpointPickerConfig
// under, current first. llm-d's loader (pkg/epp/config/loader/configloader.go)
// reads llm-d.ai/v1 and, logging each as deprecated, llm-d.ai/v1alpha1 and
// inference.networking.x-k8s.io/v1alpha1; the latter is the only one the
// Gateway API Inference Extension's own loader reads. The three differ in
// no field this loader reads, so a file loads the same under each.
var apiVersions = []struct {
	name       string
	deprecated bool
}{
	{APIVersion, false},
	{"llm-d.ai/v1alpha1", true},
	{"inference.networking.x-k8s.io/v1alpha1", true},
}

// APIVersions lists the apiVersions accepted, current first, deprecated
// ones marked so.
func APIVersions() []string {
	out := make([]string, len(apiVersions))
	for i, v := range apiVersions {
		out[i] = v.name
		if v.deprecated {
			out[i] += " (deprecated)"
		}
	}
	return out
}

// Deprecation says, when s's apiVersion is one upstream deprecates, that it
// is and what replaces it; it is empty otherwise. Parsing logs nothing: the
// scheduler, which has the logger, says it once at startup.
func (s Spec) Deprecation() string {
	if _, deprecated := lookupAPIVersion(s.APIVersion); deprecated {
		return fmt.Sprintf("EndpointPickerConfig apiVersion %s is deprecated upstream (llm-d): use %s; the file loads the same under it", s.APIVersion, APIVersion)
	}
	return ""
}

// lookupAPIVersion says whether v is an accepted apiVersion and whether
// upstream deprecates it.
func lookupAPIVersion(v string) (known, deprecated bool) {
	for _, a := range apiVersions {
		if a.name == v {
			return true, a.deprecated
		}
	}
	return false, false
}

// Spec is an EndpointPickerConfig: plugins, then the scheduling profiles
// that reference them. A file without schedulingProfiles has one, named
// DefaultProfile, made of every filter, scorer and picker it declares.
type Spec struct {
	APIVersion string        `json:"apiVersion,omitempty"`
	Kind       string        `json:"kind,omitempty"`
	Plugins    []PluginSpec  `json:"plugins"`
	Profiles   []ProfileSpec `json:"schedulingProfiles"`
}

// PluginSpec declares one plugin: its type, an optional name (default: the
// type) and its parameters.
type PluginSpec struct {
	Type       string          `json:"type"`
	Name       string          `json:"name,omitempty"`
	Parameters json.RawMessage `json:"parameters,omitempty"`
}

func (p PluginSpec) name() string {
	if p.Name != "" {
		return p.Name
	}
	return p.Type
}

// ProfileSpec is one scheduling profile: the plugins it runs, by name.
type ProfileSpec struct {
	Name    string      `json:"name"`
	Plugins []PluginRef `json:"plugins"`

	// every marks the profile a file without schedulingProfiles gets: it
	// runs every filter, scorer and picker the file declares, which only
	// building them tells apart (Build).
	every bool `json:"-"`
}

// DefaultProfile names the scheduling profile of a file that declares
// none, as in the Gateway API Inference Extension and llm-d.
const DefaultProfile = "default"

// PluginRef references a plugin from a profile; Weight applies to scorers
// (default 1).
type PluginRef struct {
	PluginRef string   `json:"pluginRef"`
	Weight    *float64 `json:"weight,omitempty"`
}

func (s Spec) profile(name string) (ProfileSpec, bool) {
	for _, p := range s.Profiles {
		if p.Name == name {
			return p, true
		}
	}
	return ProfileSpec{}, false
}

func (s Spec) has(name string) bool { _, ok := s.profile(name); return ok }

func (s Spec) profileNames() []string {
	out := make([]string, len(s.Profiles))
	for i, p := range s.Profiles {
		out[i] = p.Name
	}
	return out
}

func (s Spec) pluginNames() []string {
	out := make([]string, len(s.Plugins))
	for i, p := range s.Plugins {
		out[i] = p.name()
	}
	return out
}

// ProfileNames lists the spec's scheduling profiles, in file order.
func (s Spec) ProfileNames() []string { return s.profileNames() }

// LoadEndpointPickerConfig reads an EndpointPickerConfig file.
func LoadEndpointPickerConfig(path string) (Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Spec{}, err
	}
	s, err := ParseEndpointPickerConfig(b)
	if err != nil {
		return Spec{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// ParseEndpointPickerConfig parses and checks the shape of an
// EndpointPickerConfig (YAML or JSON). Unknown fields are errors naming
// them. It does not build the plugins: Check does, with the dependencies
// the scheduler will give them.
func ParseEndpointPickerConfig(b []byte) (Spec, error) {
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return Spec{}, err
	}
	doc = jsonable(doc)
	if err := upstreamOnly(doc); err != nil {
		return Spec{}, err
	}
	j, err := json.Marshal(doc)
	if err != nil {
		return Spec{}, err
	}
	var s Spec
	if err := strictDecode(j, &s); err != nil {
		return Spec{}, err
	}
	if known, _ := lookupAPIVersion(s.APIVersion); !known {
		return Spec{}, fmt.Errorf("apiVersion %q: accepted: %s", s.APIVersion, strings.Join(APIVersions(), ", "))
	}
	if s.Kind != Kind {
		return Spec{}, fmt.Errorf("kind %q: accepted: %s", s.Kind, Kind)
	}
	if len(s.Plugins) == 0 {
		return Spec{}, errors.New("plugins: none declared")
	}
	var names []string
	for i, p := range s.Plugins {
		if p.Type == "" {
			return Spec{}, fmt.Errorf("plugins[%d]: no type", i)
		}
		if slices.Contains(names, p.name()) {
			return Spec{}, fmt.Errorf("plugins[%d]: name %q declared twice (give one a name:)", i, p.name())
		}
		names = append(names, p.name())
	}
	if len(s.Profiles) == 0 {
		// As upstream's loader (ensureSchedulingLayer in
		// pkg/epp/config/loader/defaults.go of the Gateway API
		// Inference Extension and llm-d-inference-scheduler): one
		// profile, "default", of every filter, scorer and picker
		// declared, scorers weighing 1; a picker when none is declared
		// is max-score-picker, as for any profile (Build).
		s.Profiles = []ProfileSpec{{Name: DefaultProfile, every: true}}
	}
	var profiles []string
	for i, p := range s.Profiles {
		if p.Name == "" {
			return Spec{}, fmt.Errorf("schedulingProfiles[%d]: no name", i)
		}
		if slices.Contains(profiles, p.Name) {
			return Spec{}, fmt.Errorf("schedulingProfiles[%d]: name %q declared twice", i, p.Name)
		}
		profiles = append(profiles, p.Name)
		if len(p.Plugins) == 0 && !p.every {
			return Spec{}, fmt.Errorf("scheduling profile %q: no plugins", p.Name)
		}
	}
	if err := profileHandlers(s); err != nil {
		return Spec{}, err
	}
	return s, nil
}

// profileHandlers holds the file's profile handlers to upstream's rules
// (buildSchedulerConfig in pkg/epp/config/loader/configloader.go of the
// Gateway API Inference Extension and llm-d-inference-scheduler): one
// handler at most, and single-profile-handler only with a single
// profile. Here the handler decides nothing (llm_scheduler.policy chooses
// the profile), but a file upstream refuses is refused here too, not
// read with a meaning upstream never gives it.
func profileHandlers(s Spec) error {
	first := -1
	for i, p := range s.Plugins {
		if p.Type != SingleProfileHandler {
			continue
		}
		if first >= 0 {
			return fmt.Errorf("plugins[%d]: %q is a second profile handler (%q is the first); accepted: one", i, p.name(), s.Plugins[first].name())
		}
		first = i
		if len(s.Profiles) > 1 {
			return fmt.Errorf("plugins[%d]: %q (type %s) serves a single scheduling profile and the file declares %d (%s); accepted: one profile with %s, or several without it (llm_scheduler.policy, prefill_policy and decode_policy choose among them)",
				i, p.name(), SingleProfileHandler, len(s.Profiles), strings.Join(s.profileNames(), ", "), SingleProfileHandler)
		}
	}
	return nil
}

// upstreamFields are the EndpointPickerConfig fields of the Gateway API
// Inference Extension and llm-d that configure what has no counterpart
// here (or has one elsewhere): each is refused saying so, not as a typo.
// The data layer's field was data in earlier releases and is dataLayer in
// the current schema (DataLayer, json "dataLayer").
var upstreamFields = map[string]string{
	"saturationDetector": "the saturation detector is the saturation-filter plugin here: declare it with parameters maxWaiting (for queueDepthThreshold) and maxKVCacheUsage (for kvCacheUtilThreshold); an instance that missed llm_scheduler.missed_reports reports is no longer picked (metricsStalenessThreshold)",
	"data":               "the data layer's sources are the agents' reports here; nothing to configure in this file",
	"dataLayer":          "the data layer's sources are the agents' reports here; nothing to configure in this file",
	"flowControl":        "flow control is the scheduler's admission queue here (llm_gateway.max_queue_size, wait_schedule_timeout)",
	"parser":             "the gateway reads OpenAI requests itself; no parser to choose",
	"requestControl":     "request control hooks have no counterpart here",
}

// upstreamOnly refuses the upstream fields this loader does not honour,
// by name and with what to use instead. featureGates is honoured when
// empty (no experimental feature asked for).
func upstreamOnly(doc any) error {
	m, ok := doc.(map[string]any)
	if !ok {
		return nil
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if why, ok := upstreamFields[k]; ok {
			return fmt.Errorf("field %q is not supported: %s", k, why)
		}
	}
	if g, ok := m["featureGates"]; ok {
		if l, isList := g.([]any); !isList || len(l) > 0 {
			return fmt.Errorf("featureGates %v: none of llm-d's experimental features is implemented here; accepted: an empty list", g)
		}
		delete(m, "featureGates")
	}
	return nil
}

// jsonable turns YAML's decoded maps into ones encoding/json accepts.
func jsonable(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = jsonable(e)
		}
		return x
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case []any:
		for i, e := range x {
			x[i] = jsonable(e)
		}
		return x
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			// JSON has no such number: as text it is refused where it
			// stands, naming the field, instead of failing the whole file.
			return fmt.Sprint(x)
		}
	}
	return v
}

// strictDecode decodes JSON refusing unknown fields, naming them and the
// accepted ones. Names are case-sensitive, as in the Kubernetes strict
// decoding llm-d loads these files with: encoding/json alone would take
// "hashblocksize" or "Weight" for the field they resemble.
func strictDecode(b []byte, into any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err := dec.Decode(into)
	if err == nil {
		return exactNames(b, reflect.TypeOf(into), "")
	}
	msg := err.Error()
	if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return fmt.Errorf("unknown field %s; accepted: %s", f, strings.Join(fieldNames(into), ", "))
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("%s: got a JSON %s, want %s", te.Field, te.Value, typeName(te.Type))
	}
	return err
}

var unmarshaler = reflect.TypeFor[json.Unmarshaler]()

// exactNames walks b (which decoded into a t) and refuses an object key
// that matched a field of t only case-insensitively, naming the field.
func exactNames(b []byte, t reflect.Type, at string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[json.RawMessage]() || reflect.PointerTo(t).Implements(unmarshaler) {
		return nil // decoded by its own rules (parameters: by their plugin)
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array:
		var elems []json.RawMessage
		if json.Unmarshal(b, &elems) != nil {
			return nil
		}
		for i, e := range elems {
			if err := exactNames(e, t.Elem(), fmt.Sprintf("%s[%d]", at, i)); err != nil {
				return err
			}
		}
	case reflect.Struct:
		var obj map[string]json.RawMessage
		if json.Unmarshal(b, &obj) != nil {
			return nil
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys) // the first bad key, the same one every time
		for _, k := range keys {
			f, ok := fieldByTag(t, k)
			if !ok {
				for i := range t.NumField() {
					if tag := jsonName(t.Field(i)); strings.EqualFold(tag, k) {
						return fmt.Errorf("%sunknown field %q (names are case-sensitive: %q); accepted: %s", prefix(at), k, tag, strings.Join(fieldNames(reflect.New(t).Interface()), ", "))
					}
				}
				continue // encoding/json refused or ignored it already
			}
			path := k
			if at != "" {
				path = at + "." + k
			}
			if err := exactNames(obj[k], f.Type, path); err != nil {
				return err
			}
		}
	}
	return nil
}

func prefix(at string) string {
	if at == "" {
		return ""
	}
	return at + ": "
}

func jsonName(f reflect.StructField) string {
	return strings.Split(f.Tag.Get("json"), ",")[0]
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		if f := t.Field(i); jsonName(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func typeName(t reflect.Type) string {
	switch t {
	case reflect.TypeOf(Duration(0)):
		return "a duration such as 5ms"
	}
	switch t.Kind() {
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Int, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	}
	return t.String()
}

// fieldNames lists the JSON names of the struct into points to, anywhere the
// unknown field may have been.
func fieldNames(into any) []string {
	t := reflect.TypeOf(into)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for i := range t.NumField() {
		tag := strings.Split(t.Field(i).Tag.Get("json"), ",")[0]
		if tag != "" && tag != "-" {
			out = append(out, tag)
		}
	}
	if len(out) == 0 {
		return []string{"(none)"}
	}
	return out
}

// Check builds every scheduling profile of s with d, so that every error a
// plugin's factory finds (a bad parameter, a missing plugin) surfaces at
// load time, and returns the first.
func Check(s Spec, d policy.Deps) error {
	// Through a resolver, as the scheduler builds them: a composing
	// plugin (pd-split) builds its sub-profiles with d.Build.
	r := Resolver{File: &s}
	for _, p := range s.Profiles {
		if _, err := r.New(p.Name, d); err != nil {
			return err
		}
	}
	return nil
}
