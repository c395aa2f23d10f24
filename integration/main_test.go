package integration

import (
	"testing"

	"github.com/llmrouter/llmrouter/integration/harness"
)

// TestMain removes the llmrouter binary the harness builds for this package.
func TestMain(m *testing.M) { harness.Main(m) }
