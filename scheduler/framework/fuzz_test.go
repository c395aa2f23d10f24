package framework_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/llmrouter/llmrouter/scheduler/framework"
)

// FuzzEndpointPickerConfig: any file either parses into a spec whose every
// profile builds or fails with an error; nothing panics.
func FuzzEndpointPickerConfig(f *testing.F) {
	files, _ := filepath.Glob("../../docs/examples/endpoint-picker/*.yaml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(llmdDefault))
	f.Add([]byte(noProfiles))
	f.Add([]byte(strings.Replace(llmdDefault, header, "apiVersion: llm-d.ai/v1\nkind: EndpointPickerConfig\n", 1)))
	f.Add([]byte(header + "plugins: [{type: prefix-cache, parameters: {stepTime: 6ms}}]\nschedulingProfiles: [{name: p, plugins: [{pluginRef: prefix-cache}]}]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		s, err := framework.ParseEndpointPickerConfig(b)
		if err != nil {
			return
		}
		if err := framework.Check(s, deps()); err != nil {
			return
		}
		for _, n := range s.ProfileNames() {
			if _, err := (framework.Resolver{File: &s}).New(n, deps()); err != nil {
				t.Fatalf("profile %s checked but does not build: %v", n, err)
			}
		}
	})
}
