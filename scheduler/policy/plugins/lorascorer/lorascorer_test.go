package lorascorer_test

import (
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	"github.com/llmrouter/llmrouter/scheduler/policy"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/all"
)

// build is profile "lora" of an EndpointPickerConfig.
func build(t *testing.T, src string) policy.Policy {
	t.Helper()
	spec, err := framework.ParseEndpointPickerConfig([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	p, err := framework.Build(spec, "lora", policy.Deps{Config: config.Default(), Rand: rand.New(rand.NewPCG(1, 2))})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHolderWins: in a profile with the queue, the instance holding the
// adapter wins unless its queue outweighs the adapter's weight.
func TestHolderWins(t *testing.T) {
	p := build(t, `
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: lora-affinity-scorer
- type: queue-scorer
schedulingProfiles:
- name: lora
  plugins:
  - {pluginRef: lora-affinity-scorer, weight: 2}
  - {pluginRef: queue-scorer, weight: 1}
`)
	a := &policy.Instance{ID: "a", Waiting: 3}
	b := &policy.Instance{ID: "b", Waiting: 0, LoRAs: []string{"sql"}}
	c := &policy.Instance{ID: "c", Waiting: 1}
	req := &policy.Request{LoRA: "sql"}
	if d := p.Pick(req, []*policy.Instance{a, b, c}); d.Ranked[0] != b {
		t.Fatalf("picked %s, want b (holds the adapter, shortest queue)", d.Ranked[0].ID)
	}
	b.Waiting = 3 // now b loses the whole queue score (1) but keeps the adapter's (2)
	if d := p.Pick(req, []*policy.Instance{a, b, c}); d.Ranked[0] != b {
		t.Fatalf("picked %s, want b (2 for the adapter beats 1 for the queue)", d.Ranked[0].ID)
	}
	if d := p.Pick(&policy.Request{}, []*policy.Instance{a, b, c}); d.Ranked[0] != c {
		t.Fatalf("no adapter asked: picked %s, want c (shortest queue)", d.Ranked[0].ID)
	}
}

// TestGrades: each candidate's score for a request naming adapter "sql",
// by what its engine reports of adapters running (LoRAs), waiting and its
// adapter slots (MaxLoRA).
func TestGrades(t *testing.T) {
	p := build(t, `
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: lora-affinity-scorer
schedulingProfiles:
- name: lora
  plugins:
  - {pluginRef: lora-affinity-scorer}
`)
	cases := []struct {
		name    string
		running []string
		waiting []string
		max     int64
		want    float64
	}{
		{"running here", []string{"chat", "sql"}, nil, 2, 1},
		{"running here, slots unknown", []string{"sql"}, nil, 0, 1},
		{"running and waiting here", []string{"sql"}, []string{"sql", "chat"}, 2, 1},
		{"a free slot", []string{"chat"}, nil, 2, 0.8},
		{"a free slot on an idle engine", nil, nil, 4, 0.8},
		{"a free slot, and queued here too", []string{"chat"}, []string{"sql"}, 4, 0.8},
		{"queued here, no free slot", []string{"chat"}, []string{"sql"}, 2, 0.6},
		{"queued here, slots unknown", nil, []string{"sql"}, 0, 0.6},
		{"slots full of others", []string{"chat", "tools"}, nil, 2, 0},
		{"slots taken by others running and waiting", []string{"chat"}, []string{"tools"}, 2, 0},
		{"engine says nothing of slots or waiting", []string{"chat"}, nil, 0, 0},
		{"engine says nothing at all", nil, nil, 0, 0},
	}
	cands := make([]*policy.Instance, len(cases))
	for i, c := range cases {
		cands[i] = &policy.Instance{ID: c.name, Models: []string{"m"}, LoRAs: c.running, WaitingLoRAs: c.waiting, MaxLoRA: c.max}
	}
	got := p.(*framework.Profile).Scores(&policy.Request{LoRA: "sql"}, cands)
	if len(got) != len(cases) {
		t.Fatalf("%d scores for %d candidates", len(got), len(cases))
	}
	for i, c := range cases {
		if got[i] != c.want {
			t.Errorf("%s (running %q, waiting %q, max_lora %d): %v, want %v", c.name, c.running, c.waiting, c.max, got[i], c.want)
		}
	}
	// No adapter asked, or the base model named where the adapter goes (as
	// the gateway does without an adapter header): every candidate serves
	// it as it is, whatever its slots.
	for _, req := range []*policy.Request{{}, {Model: "m", LoRA: "m"}} {
		for i, s := range p.(*framework.Profile).Scores(req, cands) {
			if s != 1 {
				t.Errorf("adapter %q asked: %s scores %v, want 1", req.LoRA, cases[i].name, s)
			}
		}
	}
}

// codeLines are the non-blank lines of src, trimmed, without line comments.
func codeLines(src string) []string {
	var out []string
	for _, l := range strings.Split(src, "\n") {
		if i := strings.Index(l, "//"); i >= 0 {
			l = l[:i]
		}
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// TestDocsExampleIsThisPackage: the scorer docs/policies.md shows under
// "Writing a plugin" is this package's code, line for line, and adding it
// took this package and one line elsewhere (plugins/all's import), as the
// docs claim — so the example cannot rot away from the code it shows.
func TestDocsExampleIsThisPackage(t *testing.T) {
	doc, err := os.ReadFile("../../../../docs/policies.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "### Writing a plugin")
	_, block, ok2 := strings.Cut(section, "```go\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal(`docs/policies.md has no Go example under "### Writing a plugin"`)
	}
	src, err := os.ReadFile("lorascorer.go")
	if err != nil {
		t.Fatal(err)
	}
	code := codeLines(string(src))
	shown := codeLines(block)
	if len(shown) < 10 {
		t.Fatalf("the docs example has %d lines of code", len(shown))
	}
	for _, l := range shown {
		if !slices.Contains(code, l) {
			t.Errorf("docs/policies.md shows %q, which lorascorer.go does not have", l)
		}
	}
	// One registration line: nothing outside this package names it but
	// plugins/all, with one import line.
	const pkg = "scheduler/policy/plugins/lorascorer"
	err = filepath.WalkDir("../../../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || strings.HasSuffix(filepath.ToSlash(path), pkg)) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n := strings.Count(string(b), pkg)
		switch {
		case strings.HasSuffix(filepath.ToSlash(path), "scheduler/policy/plugins/all/all.go"):
			if n != 1 {
				t.Errorf("%s names %s %d times, want its one import line", path, pkg, n)
			}
		case n > 0 || strings.Contains(string(b), `"lora-affinity-scorer"`):
			t.Errorf("%s names the example scorer: adding a scorer should touch only its package and plugins/all", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
