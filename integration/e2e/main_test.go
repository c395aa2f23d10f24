package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The binaries are built once per test binary, both in one `go build`, into
// a directory TestMain removes. LLMROUTER_BIN (read by harness.Binary) is
// pointed at the llmrouter binary built here unless the caller set it.
var (
	buildOnce  sync.Once
	buildDir   string
	standinBin string
	buildErr   error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binaries builds llmrouter (unless LLMROUTER_BIN names one) and the stand-in
// data plane, and returns the stand-in's path.
func binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			buildErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(out)))
		if buildDir, err = os.MkdirTemp("", "llmrouter-e2e-"); err != nil {
			buildErr = err
			return
		}
		pkgs := []string{"./integration/standin/cmd/standin"}
		prebuilt := os.Getenv("LLMROUTER_BIN") != ""
		if !prebuilt {
			pkgs = append(pkgs, "./cmd/llmrouter")
		}
		cmd := exec.Command("go", append([]string{"build", "-o", buildDir + string(filepath.Separator)}, pkgs...)...)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build %v: %v\n%s", pkgs, err, b)
			return
		}
		standinBin = filepath.Join(buildDir, "standin")
		if !prebuilt {
			// Before the harness's first Binary call, which reads it once.
			os.Setenv("LLMROUTER_BIN", filepath.Join(buildDir, "llmrouter"))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return standinBin
}
