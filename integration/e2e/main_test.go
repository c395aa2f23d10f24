package e2e

import (
	"os"
	"sync"
	"testing"

	"github.com/llmrouter/llmrouter/integration/stack"
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
	buildOnce.Do(func() { buildDir, standinBin, buildErr = stack.Build("llmrouter-e2e-") })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return standinBin
}
