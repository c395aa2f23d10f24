package framework_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/llmrouter/llmrouter/scheduler/framework"
)

// The apiVersions upstream loads an EndpointPickerConfig under, written out
// here rather than taken from the package, so that dropping one fails.
const (
	llmdV1       = "llm-d.ai/v1"                            // llm-d-router's current one
	llmdV1alpha1 = "llm-d.ai/v1alpha1"                      // llm-d's before v1; deprecated there
	gieV1alpha1  = "inference.networking.x-k8s.io/v1alpha1" // the Inference Extension's; deprecated by llm-d
)

// TestUpstreamAPIVersionsLoad: a file loads under each apiVersion upstream
// accepts, into the same spec, and only the deprecated ones say so.
func TestUpstreamAPIVersionsLoad(t *testing.T) {
	body := strings.TrimPrefix(llmdDefault, header)
	var first framework.Spec
	for i, tc := range []struct {
		version    string
		deprecated bool
	}{
		{llmdV1, false},
		{llmdV1alpha1, true},
		{gieV1alpha1, true},
	} {
		s, err := load(t, "apiVersion: "+tc.version+"\nkind: EndpointPickerConfig\n"+body)
		if err != nil {
			t.Fatalf("apiVersion %s refused: %v", tc.version, err)
		}
		if s.APIVersion != tc.version {
			t.Errorf("apiVersion %s read as %q", tc.version, s.APIVersion)
		}
		s.APIVersion = ""
		if i == 0 {
			first = s
		} else if !reflect.DeepEqual(s, first) {
			t.Errorf("apiVersion %s: spec %+v, want the same as under %s: %+v", tc.version, s, llmdV1, first)
		}
		s.APIVersion = tc.version
		m := s.Deprecation()
		switch {
		case !tc.deprecated && m != "":
			t.Errorf("apiVersion %s: deprecation %q, want none", tc.version, m)
		case tc.deprecated && (!strings.Contains(m, tc.version) || !strings.Contains(m, "use "+llmdV1) || strings.Contains(m, "\n")):
			t.Errorf("apiVersion %s: deprecation %q, want one line naming it and %s", tc.version, m, llmdV1)
		}
	}
}

// TestUnknownAPIVersionListsAccepted: an apiVersion upstream does not
// accept (near misses included) is refused naming it and every accepted
// one, deprecated ones marked.
func TestUnknownAPIVersionListsAccepted(t *testing.T) {
	body := strings.TrimPrefix(llmdDefault, header)
	for _, bad := range []string{"", "v9", "llm-d.ai/v1alpha2", "LLM-D.ai/v1", "llm-d.ai/v1 ", "inference.networking.k8s.io/v1alpha1", "inference.networking.k8s.io/v1", "inference.networking.x-k8s.io/v1alpha2"} {
		src := fmt.Sprintf("apiVersion: %q\nkind: EndpointPickerConfig\n", bad) + body
		if bad == "" {
			src = "kind: EndpointPickerConfig\n" + body
		}
		_, err := framework.ParseEndpointPickerConfig([]byte(src))
		if err == nil {
			t.Errorf("apiVersion %q accepted", bad)
			continue
		}
		for _, w := range []string{fmt.Sprintf("apiVersion %q", bad), "accepted: " + llmdV1 + ", ", llmdV1alpha1 + " (deprecated)", gieV1alpha1 + " (deprecated)"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("apiVersion %q: error %q does not name %q", bad, err, w)
			}
		}
	}
}

// TestKindRequiredUnderEveryAPIVersion: kind EndpointPickerConfig is
// required whichever apiVersion the file gives.
func TestKindRequiredUnderEveryAPIVersion(t *testing.T) {
	body := strings.TrimPrefix(llmdDefault, header)
	for _, v := range []string{llmdV1, llmdV1alpha1, gieV1alpha1} {
		for _, kind := range []string{"", "kind: InferencePool\n", "kind: endpointpickerconfig\n"} {
			_, err := framework.ParseEndpointPickerConfig([]byte("apiVersion: " + v + "\n" + kind + body))
			if err == nil || !strings.Contains(err.Error(), "kind ") || !strings.Contains(err.Error(), "accepted: EndpointPickerConfig") {
				t.Errorf("apiVersion %s, %q: %v, want kind refused naming EndpointPickerConfig", v, kind, err)
			}
		}
	}
}
