package main

import (
	"strings"
	"testing"
)

func TestEngineSimRejectsBadSettings(t *testing.T) {
	r := run(t, nil, "enginesim", "--profile", "nope", "--listen", "127.0.0.1:0")
	if r.code != 1 || !strings.Contains(r.stderr, "llama3-8b-h100") {
		t.Fatalf("unknown profile: exit %d, stderr %q; want 1 and the accepted profiles", r.code, r.stderr)
	}
	r = run(t, nil, "enginesim", "--block-size", "0", "--listen", "127.0.0.1:0")
	if r.code != 1 || !strings.Contains(r.stderr, "block_size") {
		t.Fatalf("bad block size: exit %d, stderr %q", r.code, r.stderr)
	}
}
