package fleet_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// deps lists the module's packages pkg imports, directly or not.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

const module = "github.com/llmrouter/llmrouter/"

// TestLayout: the shared types are a leaf; the registry (which xDS and the
// admin API read) depends on no policy or plugin; no simulator package
// imports the gateway (the overhead benchmark, which runs it, lives beside
// cmd); the framework depends on no plugin.
func TestLayout(t *testing.T) {
	if got := deps(t, module+"scheduler/fleet"); len(got) != 1 {
		t.Errorf("scheduler/fleet imports %v: it must stay a leaf (standard library only)", got[:len(got)-1])
	}
	for _, d := range deps(t, module+"scheduler/registry") {
		for _, banned := range []string{"scheduler/policy", "scheduler/framework", "internal/config"} {
			if strings.HasPrefix(d, module+banned) {
				t.Errorf("scheduler/registry imports %s", d)
			}
		}
	}
	out, err := exec.Command("go", "list", module+"sim/...").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, sim := range strings.Fields(string(out)) {
		for _, d := range deps(t, sim) {
			if strings.HasPrefix(d, module+"extproc") {
				t.Errorf("%s imports %s: the simulator models the data plane, it does not run the gateway", sim, d)
			}
		}
	}
	for _, d := range deps(t, module+"scheduler/framework") {
		if strings.HasPrefix(d, module+"scheduler/policy/") {
			t.Errorf("scheduler/framework imports the plugin or policy package %s: plugins depend on the framework, not the reverse", d)
		}
	}
}

// TestPluginsMeetThroughTheFramework: no policy or plugin package imports
// another, so none can type-assert another's concrete type; a composing
// policy (pd-split) finds what a sub-profile shares by framework.Find, a
// picker its scorer through its Handle. The aggregators import them all;
// cache-aware-picker extends the prefix-cache-scorer its Handle found.
func TestPluginsMeetThroughTheFramework(t *testing.T) {
	const pol = module + "scheduler/policy/"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, pol+"...").Output()
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{pol + "plugins/cacheaware " + pol + "plugins/prefixscorer": true}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg, imps := f[0], f[1:]
		n++
		if pkg == pol+"all" || pkg == pol+"plugins/all" {
			continue
		}
		for _, imp := range imps {
			if strings.HasPrefix(imp, pol) && !strings.HasPrefix(imp, pol+"internal/") && !allowed[pkg+" "+imp] {
				t.Errorf("%s imports %s: plugins reach each other through the framework (by name or type), not by importing one another", pkg, imp)
			}
		}
	}
	if n < 10 {
		t.Fatalf("listed %d packages under scheduler/policy", n)
	}
}

// TestCommandIsWiring: cmd/llmrouter parses flags and calls the runners of
// internal/servers; it listens on nothing and serves nothing itself.
func TestCommandIsWiring(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, module+"cmd/llmrouter").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range strings.Fields(string(out)) {
		switch imp {
		case "net", "net/http", "golang.org/x/sync/errgroup", module + "internal/httpserve", module + "internal/runner",
			module + "scheduler/server", module + "xds", module + "extproc", module + "agent/pdproxy":
			t.Errorf("cmd/llmrouter imports %s: server logic belongs in internal/servers", imp)
		}
	}
	// It imports grpc for the health command's client; it must not build
	// or run a server with it (nor with anything else that serves).
	files, err := filepath.Glob("../../cmd/llmrouter/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("cmd/llmrouter sources: %v %v", files, err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			switch sel.Sel.Name {
			case "NewServer", "Serve", "ListenAndServe", "Listen", "RegisterService":
				t.Errorf("%s: cmd/llmrouter calls %s: server logic belongs in internal/servers", fset.Position(sel.Pos()), sel.Sel.Name)
			}
			return true
		})
	}
}
