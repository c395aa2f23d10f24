package framework_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
)

// The upstream loader these tests hold us to is the Gateway API Inference
// Extension's (kubernetes-sigs/gateway-api-inference-extension), which
// llm-d-inference-scheduler carries under the same paths:
// pkg/epp/config/loader/defaults.go (ensureSchedulingLayer: a file
// without schedulingProfiles gets one profile, "default", of every
// filter, scorer and picker it declares; a scorer without a weight weighs
// 1; a profile without a picker gets a declared picker, else
// max-score-picker) and pkg/epp/config/loader/configloader.go
// (buildSchedulerConfig: one profile handler at most, and
// single-profile-handler refused with more than one profile). Their
// configloader_test.go has the cases "Success - No Profiles" and
// "Error (Scheduling) - Multi-Profile with Single Handler" / "Multiple
// Profile Handlers". Their Go modules cannot be fetched here, so the
// cases are written from that behaviour, not run against their code.

// noProfiles declares three scorers, a profile handler and no picker, and
// no schedulingProfiles: upstream's default scorers, which upstream weighs
// 2, 2 and 3 only in the profile it uses when there is no file at all.
const noProfiles = header + `plugins:
- type: single-profile-handler
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
`

// threeWays are candidates on which each of noProfiles' scorers prefers
// another instance, so the sum shows which scorers ran and their weights:
// a has the shortest queue and half its KV cache free, b an empty KV
// cache, c the prompt (once the returned request was picked for it).
func threeWays(t *testing.T, p policy.Policy) ([]*policy.Instance, *policy.Request) {
	t.Helper()
	c := []*policy.Instance{
		{ID: "a", Waiting: 0, KVCacheUsage: 0.5},
		{ID: "b", Waiting: 10, KVCacheUsage: 0},
		{ID: "c", Waiting: 10, KVCacheUsage: 1},
	}
	req := &policy.Request{BlockHashes: []uint64{21, 22, 23, 24}}
	o, ok := p.(policy.Observer)
	if !ok {
		t.Fatalf("%T observes nothing: the prefix scorer cannot learn", p)
	}
	o.Picked(req, policy.Decision{Ranked: []*policy.Instance{c[2]}})
	return c, req
}

// TestNoProfilesIsUpstreamsDefaultProfile: a file without
// schedulingProfiles (absent or empty) is accepted, with one profile named
// "default" that runs every filter, scorer and picker declared, scorers
// at weight 1, and max-score-picker when the file declares no picker.
func TestNoProfilesIsUpstreamsDefaultProfile(t *testing.T) {
	for _, src := range []string{noProfiles, noProfiles + "schedulingProfiles: []\n"} {
		s, err := load(t, src)
		if err != nil {
			t.Fatalf("a file without schedulingProfiles: %v", err)
		}
		if got := s.ProfileNames(); !slices.Equal(got, []string{framework.DefaultProfile}) || framework.DefaultProfile != "default" {
			t.Fatalf("profiles %v, want [default]", got)
		}
		p, err := framework.Resolver{File: &s}.New("default", deps())
		if err != nil {
			t.Fatal(err)
		}
		prof, ok := p.(*framework.Profile)
		if !ok {
			t.Fatalf("default profile is a %T", p)
		}
		c, req := threeWays(t, p)
		// queue 1 + KV 0.5 + prefix 0; 0 + 1 + 0; 0 + 0 + 1: each scorer
		// once, at weight 1. Upstream's 2/2/3 would give 3, 2, 3.
		if got, want := prof.Scores(req, c), []float64{1.5, 1, 1}; !slices.Equal(got, want) {
			t.Fatalf("scores %v, want %v (every scorer declared, weight 1)", got, want)
		}
		for range 20 {
			if d := p.Pick(req, c); len(d.Ranked) != 3 || d.Ranked[0] != c[0] {
				t.Fatalf("picked %v, want a first (max-score-picker defaulted)", d.Ranked)
			}
		}
	}
}

// TestNoProfilesTakesTheDeclaredPickerAndFilters: the default profile's
// picker is the one the file declares, and its filters run.
func TestNoProfilesTakesTheDeclaredPickerAndFilters(t *testing.T) {
	s, err := load(t, noProfiles+"- type: random-picker\n- type: decode-filter\n")
	if err != nil {
		t.Fatal(err)
	}
	p, err := framework.Resolver{File: &s}.New(framework.DefaultProfile, deps())
	if err != nil {
		t.Fatal(err)
	}
	c, req := threeWays(t, p)
	c = append(c, &policy.Instance{ID: "prefill-only", Role: policy.RolePrefill})
	firsts := map[string]int{}
	for range 60 {
		d := p.Pick(req, c)
		if len(d.Ranked) != 3 {
			t.Fatalf("ranked %d instances, want the 3 decode-filter keeps", len(d.Ranked))
		}
		firsts[d.Ranked[0].ID]++
	}
	if firsts["prefill-only"] > 0 || len(firsts) != 3 {
		t.Fatalf("first picks %v: want a, b and c in turn (random-picker, decode-filter), never prefill-only", firsts)
	}
}

// TestNoProfilesRefusesTwoPickers: every picker declared goes into the
// default profile, as upstream, where a second picker is refused; the
// error says the profile was made because the file has none.
func TestNoProfilesRefusesTwoPickers(t *testing.T) {
	_, err := load(t, noProfiles+"- type: max-score-picker\n- type: random-picker\n")
	if err == nil {
		t.Fatal("two pickers in the default profile accepted")
	}
	for _, w := range []string{`scheduling profile "default"`, "no schedulingProfiles", `"random-picker"`, "second picker"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q", err, w)
		}
	}
}

// TestProfileHandlerRules: single-profile-handler serves one profile, and
// a file has one profile handler at most; several profiles without a
// handler are accepted (llm_scheduler.policy chooses among them).
func TestProfileHandlerRules(t *testing.T) {
	two := "schedulingProfiles:\n- name: first\n  plugins: [{pluginRef: queue-scorer}]\n- name: second\n  plugins: [{pluginRef: queue-scorer}]\n"
	for _, tc := range []struct {
		name, src string
		want      []string // nil: accepted
	}{
		{"single handler, two profiles", header + "plugins:\n- type: single-profile-handler\n  name: handler\n- type: queue-scorer\n" + two,
			[]string{"plugins[0]", `"handler"`, "single-profile-handler", "declares 2 (first, second)", "accepted: one profile with single-profile-handler, or several without it"}},
		{"two handlers", header + "plugins:\n- type: single-profile-handler\n- type: single-profile-handler\n  name: again\n- type: queue-scorer\nschedulingProfiles:\n- name: p\n  plugins: [{pluginRef: queue-scorer}]\n",
			[]string{"plugins[1]", `"again"`, "second profile handler", `"single-profile-handler" is the first`, "accepted: one"}},
		{"two profiles, no handler", header + "plugins:\n- type: queue-scorer\n" + two, nil},
		{"single handler, one profile", llmdDefault, nil},
		{"single handler, default profile", noProfiles, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.src)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
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
