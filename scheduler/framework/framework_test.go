package framework_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	"github.com/llmrouter/llmrouter/scheduler/policy/pdsplit"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/all"
	"github.com/llmrouter/llmrouter/scheduler/policy/plugins/prefixscorer"
	"github.com/llmrouter/llmrouter/scheduler/policy/prefixcache"
	"github.com/llmrouter/llmrouter/scheduler/prefixindex"
)

func deps() policy.Deps {
	return policy.Deps{Config: config.Default(), Rand: rand.New(rand.NewPCG(1, 2))}
}

const header = "apiVersion: inference.networking.x-k8s.io/v1alpha1\nkind: EndpointPickerConfig\n"

// llmdDefault is llm-d's default profile as its users write it.
const llmdDefault = header + `plugins:
- type: single-profile-handler
- type: prefix-cache-scorer
  parameters:
    hashBlockSize: 64
    maxPrefixBlocksToMatch: 256
    lruCapacityPerServer: 31250
- type: queue-scorer
- type: kv-cache-scorer
- type: max-score-picker
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: prefix-cache-scorer
    weight: 3
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-scorer
    weight: 2
  - pluginRef: max-score-picker
`

func load(t *testing.T, src string) (framework.Spec, error) {
	t.Helper()
	s, err := framework.ParseEndpointPickerConfig([]byte(src))
	if err != nil {
		return s, err
	}
	return s, framework.Check(s, deps())
}

// newerDefault is the default profile of newer Gateway API Inference
// Extension releases, written as a file: their kv-cache-utilization-scorer,
// no picker and no profile handler (both defaulted).
const newerDefault = header + `plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-utilization-scorer
    weight: 2
  - pluginRef: prefix-cache-scorer
    weight: 3
`

func TestLLMDDefaultLoads(t *testing.T) {
	if _, err := load(t, newerDefault); err != nil {
		t.Fatalf("newer releases' default: %v", err)
	}
	if _, err := load(t, strings.Replace(llmdDefault, "plugins:", "featureGates: []\nplugins:", 1)); err != nil {
		t.Fatalf("an empty featureGates list (no experimental feature): %v", err)
	}
	s, err := load(t, llmdDefault)
	if err != nil {
		t.Fatal(err)
	}
	p, err := framework.Resolver{File: &s}.New("default", deps())
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "default" {
		t.Fatalf("policy named %q, want the profile's name", p.Name())
	}
	// The profile prefers the instance holding the prompt, all else equal.
	c := []*policy.Instance{{ID: "a"}, {ID: "b"}, {ID: "c"}}
	req := &policy.Request{BlockHashes: []uint64{11, 12, 13}}
	p.(policy.Observer).Picked(req, policy.Decision{Ranked: []*policy.Instance{c[2]}})
	for range 20 {
		if d := p.Pick(req, c); d.Ranked[0] != c[2] {
			t.Fatalf("picked %s, want c (holds the prompt)", d.Ranked[0].ID)
		}
	}
	// The queue outweighs a partial match: weights are applied.
	c[2].Waiting = 10
	if d := p.Pick(&policy.Request{BlockHashes: []uint64{11, 99, 98, 97}}, c); d.Ranked[0] == c[2] {
		t.Fatal("a quarter match (3 × 0.25) beat the longest queue (2 × 1)")
	}
}

// TestErrorsNameTheFault: every rejected file says which plugin, which
// parameter and what is accepted.
func TestErrorsNameTheFault(t *testing.T) {
	prof := "schedulingProfiles:\n- name: p\n  plugins:\n  - pluginRef: x\n"
	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"api version", "apiVersion: v9\nkind: EndpointPickerConfig\nplugins: [{type: queue-scorer}]\n" + prof, []string{`"v9"`, framework.APIVersion}},
		{"unknown top-level field", header + "plugins: [{type: queue-scorer}]\nfeatureGatez: []\n" + prof, []string{`"featureGatez"`, "schedulingProfiles"}},
		{"unknown type", header + "plugins: [{type: fastest-scorer, name: x}]\n" + prof, []string{`plugin "x"`, `"fastest-scorer"`, "queue-scorer", "prefix-cache-scorer"}},
		{"unknown parameter", header + "plugins: [{type: prefix-cache-scorer, name: x, parameters: {blockSize: 16}}]\n" + prof, []string{`plugin "x"`, `"blockSize"`, "hashBlockSize", "lruCapacityPerServer"}},
		{"bad value", header + "plugins: [{type: prefix-cache-scorer, name: x, parameters: {hashBlockSize: 16}}]\n" + prof, []string{`plugin "x"`, "hashBlockSize 16", "accepted: 64", "llm_gateway.block_chars"}},
		{"wrong kind of value", header + "plugins: [{type: cache-aware-picker, name: x, parameters: {cacheThreshold: high}}]\n" + prof, []string{`plugin "x"`, "cacheThreshold", "a number"}},
		{"parameter of a plugin without", header + "plugins: [{type: queue-scorer, name: x, parameters: {threshold: 3}}]\n" + prof, []string{`plugin "x"`, `"threshold"`, "(none)"}},
		{"dangling ref", header + "plugins: [{type: queue-scorer}]\n" + prof, []string{`pluginRef "x"`, "queue-scorer"}},
		{"negative weight", header + "plugins: [{type: queue-scorer, name: x}]\nschedulingProfiles:\n- name: p\n  plugins:\n  - {pluginRef: x, weight: -1}\n", []string{`pluginRef "x"`, "weight -1", "0 or more"}},
		{"infinite weight", header + "plugins: [{type: queue-scorer, name: x}]\nschedulingProfiles:\n- name: p\n  plugins:\n  - {pluginRef: x, weight: .inf}\n", []string{"weight", "want a number"}},
		{"two pickers", header + "plugins: [{type: max-score-picker, name: x}, {type: random-picker, name: y}]\nschedulingProfiles:\n- name: p\n  plugins: [{pluginRef: x}, {pluginRef: y}]\n", []string{`pluginRef "y"`, "second picker"}},
		{"picker without its scorer", header + "plugins: [{type: cache-aware-picker, name: x}]\n" + prof, []string{`plugin "x"`, "prefix-cache-scorer declared before it"}},
		{"newer upstream parameter", header + "plugins: [{type: prefix-cache-scorer, name: x, parameters: {blockSizeTokens: 16, autoTune: true}}]\n" + prof, []string{`plugin "x"`, `"autoTune"`, "hashBlockSize", "lruCapacityPerServer"}},
		{"upstream type without a counterpart", header + "plugins: [{type: pd-profile-handler, name: x, parameters: {threshold: 10}}]\n" + prof, []string{`plugin "x"`, `"pd-profile-handler"`, "dynamic-pd-split", "prefill_policy", "pdMinPrefillTokens"}},
		{"misspelt parameter", header + "plugins: [{type: prefix-cache-scorer, name: x, parameters: {hashBlockSise: 64}}]\n" + prof, []string{`plugin "x"`, `"hashBlockSise"`, "hashBlockSize", "maxPrefixBlocksToMatch"}},
		{"parameter in the wrong case", header + "plugins: [{type: prefix-cache-scorer, name: x, parameters: {hashblocksize: 64}}]\n" + prof, []string{`plugin "x"`, `"hashblocksize"`, `case-sensitive: "hashBlockSize"`, "lruCapacityPerServer"}},
		{"parameter of the wrong type", header + "plugins: [{type: prefix-cache-scorer, name: x, parameters: {maxPrefixBlocksToMatch: many}}]\n" + prof, []string{`plugin "x"`, "maxPrefixBlocksToMatch", "an integer"}},
		{"field in the wrong case", header + "plugins: [{type: queue-scorer, name: x}]\nSchedulingProfiles:\n- name: p\n  plugins:\n  - pluginRef: x\n", []string{`"SchedulingProfiles"`, `case-sensitive: "schedulingProfiles"`}},
		{"reference in the wrong case", header + "plugins: [{type: queue-scorer, name: x}]\nschedulingProfiles:\n- name: p\n  plugins:\n  - {pluginref: x, Weight: 2}\n", []string{"schedulingProfiles[0].plugins[0]", `"Weight"`, `case-sensitive: "weight"`}},
		{"upstream field without a counterpart", header + "plugins: [{type: queue-scorer, name: x}]\nsaturationDetector: {queueDepthThreshold: 5}\n" + prof, []string{`"saturationDetector"`, "saturation-filter", "maxWaiting"}},
		{"the data layer under its current name", header + "plugins: [{type: queue-scorer, name: x}]\ndataLayer: {sources: []}\n" + prof, []string{`"dataLayer"`, "agents' reports"}},
		{"feature gate", header + "featureGates: [dataLayer]\nplugins: [{type: queue-scorer, name: x}]\n" + prof, []string{"featureGates", "dataLayer", "an empty list"}},
		{"duplicate name", header + "plugins: [{type: queue-scorer}, {type: queue-scorer}]\n" + prof, []string{`"queue-scorer" declared twice`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.src)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
		})
	}
}

// TestBuiltinProfilesAreThePolicies: a built-in profile of one ranking
// picker is the policy itself, so it decides exactly as before.
func TestBuiltinProfilesAreThePolicies(t *testing.T) {
	p, err := framework.Resolver{}.New(prefixcache.Name, deps())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.(*prefixcache.Policy); !ok {
		t.Fatalf("built-in prefix-cache is a %T", p)
	}
	for _, n := range policy.Names() {
		if _, ok := framework.Builtin(n); !ok {
			t.Errorf("policy %s is not a built-in profile", n)
		}
	}
	_, err = framework.Resolver{}.New("fastest", deps())
	if err == nil || !strings.Contains(err.Error(), "prefix-cache") || !strings.Contains(err.Error(), `"fastest"`) {
		t.Fatalf("unknown name: %v, want the accepted names", err)
	}
}

// TestExampleFilesLoad: every file in docs/examples/endpoint-picker loads,
// checks and builds each of its profiles.
func TestExampleFilesLoad(t *testing.T) {
	files, _ := filepath.Glob("../../docs/examples/endpoint-picker/*.yaml")
	if len(files) < 3 {
		t.Fatalf("found %v", files)
	}
	for _, f := range files {
		s, err := framework.LoadEndpointPickerConfig(f)
		if err == nil {
			err = framework.Check(s, deps())
		}
		if err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if _, err := framework.LoadEndpointPickerConfig(filepath.Join(t.TempDir(), "none.yaml")); !os.IsNotExist(err) {
		t.Fatalf("missing file: %v", err)
	}
}

// TestScorersStayInRange: every registered scorer scores every candidate
// of random fleets within [0, 1], as the weights assume.
func TestScorersStayInRange(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	n := 0
	for _, typ := range framework.Types() {
		spec := framework.Spec{Plugins: []framework.PluginSpec{{Type: typ}, {Type: "max-score-picker", Name: "picker"}},
			Profiles: []framework.ProfileSpec{{Name: "p", Plugins: []framework.PluginRef{{PluginRef: typ}, {PluginRef: "picker"}}}}}
		if typ == "max-score-picker" {
			continue
		}
		pol, err := framework.Build(spec, "p", deps())
		if err != nil {
			continue // not a scorer (a picker, a filter) or not usable alone
		}
		prof, ok := pol.(*framework.Profile)
		if !ok || !prof.HasScorers() {
			continue
		}
		n++
		for trial := range 200 {
			cands := make([]*policy.Instance, 1+r.IntN(12))
			for i := range cands {
				cands[i] = &policy.Instance{ID: string(rune('a' + i)), Running: r.Int64N(50), Waiting: r.Int64N(50),
					InflightRequests: r.Int64N(5), KVCacheUsage: r.Float64()}
			}
			req := &policy.Request{BlockHashes: []uint64{uint64(trial % 5), 9}}
			for i, s := range prof.Scores(req, cands) {
				if s < 0 || s > 1 {
					t.Fatalf("%s scored %s %g", typ, cands[i].ID, s)
				}
			}
			prof.Picked(req, prof.Pick(req, cands))
		}
	}
	if n < 5 {
		t.Fatalf("only %d scorers checked", n)
	}
}

// TestPolicyKnobsAreParameters: a policy's llm_scheduler.policies knobs
// are its plugin parameters (camelCase), checked by the keys' rules, and
// they change its decisions.
func TestPolicyKnobsAreParameters(t *testing.T) {
	src := header + `plugins:
- type: llm-metric-based
  parameters: {kvCacheWeight: 5}
- type: llm-metric-based
  name: plain
schedulingProfiles:
- name: kv-heavy
  plugins: [{pluginRef: llm-metric-based}]
- name: plain
  plugins: [{pluginRef: plain}]
`
	s, err := load(t, src)
	if err != nil {
		t.Fatal(err)
	}
	a := &policy.Instance{ID: "a", KVCacheUsage: 0.9}
	b := &policy.Instance{ID: "b", Waiting: 4}
	for name, want := range map[string]*policy.Instance{"plain": a, "kv-heavy": b} {
		p, err := framework.Resolver{File: &s}.New(name, deps())
		if err != nil {
			t.Fatal(err)
		}
		if p.Name() != name {
			t.Errorf("profile %s runs as %q", name, p.Name())
		}
		if d := p.Pick(&policy.Request{}, []*policy.Instance{a, b}); d.Ranked[0] != want {
			t.Errorf("%s picked %s, want %s", name, d.Ranked[0].ID, want.ID)
		}
	}
	for _, tc := range []struct {
		params string
		want   []string
	}{
		{"{stepTme: 6ms}", []string{`"stepTme"`, "stepTime", "maxLoadRatio", "speedCalibration"}},
		{"{maxLoadRatio: 0.5}", []string{"parameter maxLoadRatio", "0.5", "1 or more"}},
		{"{stepTime: 6}", []string{`plugin "x"`, "parameter stepTime", "duration"}},
		{"{waitingWeight: 1}", []string{`"waitingWeight"`, "stepTime"}},
	} {
		_, err := load(t, header+"plugins:\n- type: prefix-cache\n  name: x\n  parameters: "+tc.params+"\nschedulingProfiles:\n- name: p\n  plugins: [{pluginRef: x}]\n")
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v, want it to name %q", tc.params, err, w)
			}
		}
	}
	if _, err := load(t, header+"plugins:\n- type: prefix-cache\n  parameters: {stepTime: 6ms, maxLoadRatio: 3, speedCalibration: false}\nschedulingProfiles:\n- name: prefix-cache\n  plugins: [{pluginRef: prefix-cache}]\n"); err != nil {
		t.Fatal(err)
	}
}

// TestPDSplitComposesProfiles: pd-split is a profile pair plus its
// decider: llm_scheduler.decode_policy may name a profile of the file.
func TestPDSplitComposesProfiles(t *testing.T) {
	s, err := load(t, llmdDefault)
	if err != nil {
		t.Fatal(err)
	}
	d := deps()
	d.Config.Scheduler.PrefillPolicy, d.Config.Scheduler.DecodePolicy = "least-request", "default"
	p, err := framework.Resolver{File: &s}.New("pd-split", d)
	if err != nil {
		t.Fatal(err)
	}
	pre := &policy.Instance{ID: "p", Role: policy.RolePrefill}
	dec := []*policy.Instance{{ID: "d1", Role: policy.RoleDecode}, {ID: "d2", Role: policy.RoleDecode}}
	req := &policy.Request{BlockHashes: []uint64{5, 6, 7}}
	p.(policy.Observer).Picked(req, policy.Decision{Ranked: []*policy.Instance{dec[1]}, Prefill: pre})
	got := p.Pick(req, []*policy.Instance{pre, dec[0], dec[1]})
	if got.Ranked[0] != dec[1] || got.Prefill != pre {
		t.Fatalf("decode %s prefill %v, want d2 (the llm-d profile's prefix match) and p", got.Ranked[0].ID, got.Prefill)
	}
	d.Config.Scheduler.DecodePolicy = "nonesuch"
	if _, err := (framework.Resolver{File: &s}).New("pd-split", d); err == nil || !strings.Contains(err.Error(), `"nonesuch"`) || !strings.Contains(err.Error(), "default") {
		t.Fatalf("unknown decode profile: %v", err)
	}
}

// TestFind: a composing policy reaches what a sub-profile shares through
// the framework — a built-in profile is its policy, a file's profile finds
// its plugins.
func TestFind(t *testing.T) {
	type indexer interface{ Index() *prefixindex.Index }
	s, err := load(t, llmdDefault)
	if err != nil {
		t.Fatal(err)
	}
	p, err := framework.Resolver{File: &s}.New("default", deps())
	if err != nil {
		t.Fatal(err)
	}
	x, ok := framework.Find[indexer](p)
	sc, ok2 := framework.Find[*prefixscorer.Scorer](p)
	if !ok || !ok2 || x.Index() == nil || x.Index() != sc.Index() {
		t.Fatalf("the llm-d profile's prefix index: found %v %v", ok, ok2)
	}
	pc, _ := framework.Resolver{}.New(prefixcache.Name, deps())
	if x, ok := framework.Find[indexer](pc); !ok || x.Index() != pc.(*prefixcache.Policy).Index() {
		t.Fatal("built-in prefix-cache: its own index not found")
	}
	lr, _ := framework.Resolver{}.New("least-request", deps())
	if _, ok := framework.Find[indexer](lr); ok {
		t.Fatal("least-request keeps no prefix index")
	}
}

// TestEveryPolicyKeyIsAParameter: each deprecated llm_scheduler.policies
// key (config.PolicyKeys) given in a file takes effect: the parameter it
// names, of the plugin type it names, takes its value, and nothing else
// changes (the built-in profile of that type runs with these parameters);
// a file's plugin of that type builds with it, with or without a value of
// its own for the parameter.
func TestEveryPolicyKeyIsAParameter(t *testing.T) {
	if len(config.PolicyKeys) == 0 {
		t.Fatal("no deprecated policy keys: nothing to check")
	}
	for key, pp := range config.PolicyKeys {
		def, ok, err := framework.Parameters(pp.Type, config.Default())
		if !ok || err != nil {
			t.Fatalf("%s names plugin type %s: registered %v, %v", key, pp.Type, ok, err)
		}
		if !slices.Contains(framework.ParameterNames(def), pp.Param) {
			t.Fatalf("%s names parameter %s of %s, which takes %v", key, pp.Param, pp.Type, framework.ParameterNames(def))
		}
		// A value other than the default, of the parameter's kind.
		var val string
		switch f := reflect.ValueOf(def).FieldByIndex(fieldIndex(t, def, pp.Param)); f.Kind() {
		case reflect.Bool:
			val = fmt.Sprint(!f.Bool())
		case reflect.Int:
			val = fmt.Sprint(f.Int() + 7)
		case reflect.Float64:
			val = fmt.Sprint(f.Float() + 1.5)
		default:
			t.Fatalf("%s: kind %s not covered", key, f.Kind())
		}
		f := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(f, []byte("llm_scheduler:\n  policies:\n    "+key+": "+val+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(f, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := framework.Parameters(pp.Type, cfg)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		want := reflect.New(reflect.TypeOf(def)).Elem()
		want.Set(reflect.ValueOf(def))
		b, _ := json.Marshal(map[string]json.RawMessage{pp.Param: json.RawMessage(val)})
		if err := json.Unmarshal(b, want.Addr().Interface()); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want.Interface()) {
			t.Errorf("%s: %s: %+v, want %+v", key, val, got, want.Interface())
		}
		if err := framework.CheckDeprecated(cfg); err != nil {
			t.Errorf("%s: %s refused: %v", key, val, err)
		}

		d := deps()
		d.Config = cfg
		for _, params := range []string{"", "\n  parameters: {" + pp.Param + ": " + fmt.Sprint(reflect.ValueOf(def).FieldByIndex(fieldIndex(t, def, pp.Param))) + "}"} {
			src := header + "plugins:\n- type: " + pp.Type + params + "\nschedulingProfiles:\n- name: p\n  plugins: [{pluginRef: " + pp.Type + "}]\n"
			spec, err := framework.ParseEndpointPickerConfig([]byte(src))
			if err == nil {
				_, err = framework.Resolver{File: &spec}.New("p", d)
			}
			if err != nil {
				t.Errorf("%s with a file's %s%s: %v", key, pp.Type, params, err)
			}
		}
	}
}

func fieldIndex(t *testing.T, params any, name string) []int {
	t.Helper()
	ty := reflect.TypeOf(params)
	for i := range ty.NumField() {
		if strings.Split(ty.Field(i).Tag.Get("json"), ",")[0] == name {
			return []int{i}
		}
	}
	t.Fatalf("%T has no parameter %s", params, name)
	return nil
}

// TestDeprecatedKeyRules: a value given under a deprecated key is checked
// by its plugin type's rules, whether or not the type runs, and refused
// naming the key, the parameter and what is accepted.
func TestDeprecatedKeyRules(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want []string
	}{
		{"max_load_ratio: 0.5", []string{"llm_scheduler.policies.max_load_ratio = 0.5", "plugin type prefix-cache", "parameter maxLoadRatio 0.5", "0 (no cap) or 1 or more"}},
		{"kv_cache_weight: -1", []string{"llm_scheduler.policies.kv_cache_weight = -1", "parameter kvCacheWeight -1", "0 or more"}},
		{"waiting_weight: 0\n    kv_cache_weight: 0\n    running_weight: 0\n    throughput_weight: 0", []string{"llm_scheduler.policies.kv_cache_weight = 0", "at least one is positive"}},
		{"pd_min_prefill_tokens: -1", []string{"llm_scheduler.policies.pd_min_prefill_tokens = -1", "parameter pdMinPrefillTokens -1", "0 or more"}},
		{"decode_weight: heavy", []string{"llm_scheduler.policies.decode_weight = heavy", "parameter decodeWeight", "a number"}},
		{"speed_calibration: 3", []string{"llm_scheduler.policies.speed_calibration = 3", "parameter speedCalibration", "true or false"}},
	} {
		f := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(f, []byte("llm_scheduler:\n  policy: least-request\n  policies:\n    "+tc.yaml+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(f, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.yaml, err)
		}
		err = framework.CheckDeprecated(cfg)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v, want it to name %q", tc.yaml, err, w)
			}
		}
	}
}

// TestDeprecatedKeyFromEnvironment: the environment gives every value as
// a string; a deprecated key's is read as its parameter's kind.
func TestDeprecatedKeyFromEnvironment(t *testing.T) {
	t.Setenv("LLMROUTER_LLM_SCHEDULER_POLICIES_MAX_LOAD_RATIO", "3.5")
	t.Setenv("LLMROUTER_LLM_SCHEDULER_POLICIES_SPEED_CALIBRATION", "false")
	t.Setenv("LLMROUTER_LLM_SCHEDULER_POLICIES_PD_DECODE_BUSY_LOAD", "9")
	cfg, err := config.Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := framework.Parameters(prefixcache.Name, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if pc := p.(prefixcache.Params); pc.MaxLoadRatio != 3.5 || pc.SpeedCalibration {
		t.Fatalf("prefix-cache parameters %+v: want maxLoadRatio 3.5, speedCalibration false", pc)
	}
	d, _, err := framework.Parameters(pdsplit.DynamicName, cfg)
	if err != nil || d.(pdsplit.Params).PDDecodeBusyLoad != 9 {
		t.Fatalf("dynamic-pd-split parameters %+v, %v: want pdDecodeBusyLoad 9", d, err)
	}
}

// TestParameterTypeErrorsNameThePlugin: a value of the wrong kind, a
// duration among them, is refused naming the plugin and the parameter.
func TestParameterTypeErrorsNameThePlugin(t *testing.T) {
	for _, tc := range []struct{ typ, params, param string }{
		{"prefix-cache", "{stepTime: 6}", "stepTime"},
		{"prefix-cache", "{prefillTokenTime: fast}", "prefillTokenTime"},
		{"session-affinity-scorer", "{ttl: [1]}", "ttl"},
		{"saturation-filter", "{maxPredictedWait: 2}", "maxPredictedWait"},
		{"llm-metric-based", "{waitingWeight: true}", "waitingWeight"},
	} {
		_, err := load(t, header+"plugins:\n- type: "+tc.typ+"\n  name: mine\n  parameters: "+tc.params+"\nschedulingProfiles:\n- name: p\n  plugins: [{pluginRef: mine}]\n")
		for _, w := range []string{`plugin "mine"`, "parameter " + tc.param + ":"} {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s %s: %v, want it to name %q", tc.typ, tc.params, err, w)
			}
		}
	}
}

// TestMissingPickerIsMaxScore: as in llm-d, a profile that references no
// picker gets max-score-picker: it ranks by the weighted sum, best first
// (at least the pick and its fallbacks; all of so few candidates).
func TestMissingPickerIsMaxScore(t *testing.T) {
	s, err := load(t, header+"plugins: [{type: queue-scorer}]\nschedulingProfiles:\n- name: p\n  plugins: [{pluginRef: queue-scorer}]\n")
	if err != nil {
		t.Fatal(err)
	}
	p, err := framework.Build(s, "p", deps())
	if err != nil {
		t.Fatal(err)
	}
	c := []*policy.Instance{{ID: "a", Waiting: 5}, {ID: "b", Waiting: 1}, {ID: "c", Waiting: 9}, {ID: "d", Waiting: 3}}
	for range 50 {
		var got []string
		for _, x := range p.Pick(&policy.Request{}, c).Ranked {
			got = append(got, x.ID)
		}
		if strings.Join(got, ",") != "b,d,a,c" {
			t.Fatalf("ranked %v, want b,d,a,c (shortest queue first)", got)
		}
	}
}

// TestPDSplitPluginInAFile: dynamic-pd-split declared in a file, with its
// parameters, passes the startup check (it builds its sub-profiles through
// the resolver) and decides by them: a short prompt is disaggregated only
// with pdMinPrefillTokens and pdDecodeBusyLoad 0.
func TestPDSplitPluginInAFile(t *testing.T) {
	for _, tc := range []struct {
		params string
		split  bool
	}{
		{"", false},
		{"\n  parameters: {pdMinPrefillTokens: 0, pdDecodeBusyLoad: 0}", true},
	} {
		s, err := load(t, header+"plugins:\n- type: dynamic-pd-split"+tc.params+"\nschedulingProfiles:\n- name: mypd\n  plugins: [{pluginRef: dynamic-pd-split}]\n")
		if err != nil {
			t.Fatalf("%q: %v", tc.params, err)
		}
		p, err := framework.Resolver{File: &s}.New("mypd", deps())
		if err != nil {
			t.Fatal(err)
		}
		pre := &policy.Instance{ID: "p", Role: policy.RolePrefill}
		dec := &policy.Instance{ID: "d", Role: policy.RoleDecode}
		d := p.Pick(&policy.Request{BlockHashes: []uint64{1, 2}, PromptTokens: 32}, []*policy.Instance{pre, dec})
		if (d.Prefill != nil) != tc.split || d.Ranked[0] != dec {
			t.Errorf("%q: prefill %v, decode %s; want disaggregated %v", tc.params, d.Prefill, d.Ranked[0].ID, tc.split)
		}
	}
	if _, err := load(t, header+"plugins:\n- type: dynamic-pd-split\n  parameters: {pdDecodeBusyLoad: -1}\nschedulingProfiles:\n- name: mypd\n  plugins: [{pluginRef: dynamic-pd-split}]\n"); err == nil ||
		!strings.Contains(err.Error(), `plugin "dynamic-pd-split"`) || !strings.Contains(err.Error(), "parameter pdDecodeBusyLoad -1: accepted: 0 or more") {
		t.Fatalf("pdDecodeBusyLoad -1: %v", err)
	}
}
