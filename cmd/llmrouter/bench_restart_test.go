package main

import (
	"strings"
	"testing"
)

func TestBenchRestartAt(t *testing.T) {
	r := run(t, nil, "bench", "--instances", "2", "--policy", "prefix-cache", "--concurrency", "40", "--duration", "40s",
		"--restart-at", "20s", "--series-window", "2s")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, w := range []string{"Scheduler restart at 20s (agents re-registered over 1.5s", "prefix hit ratio before (the 10s before it): ",
		"dip: ", "recovery time: ", "20s-22s", "<- restart", "38s-40s"} {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("output lacks %q:\n%s", w, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "40s-42s") {
		t.Fatalf("series goes past --duration 40s:\n%s", r.stdout)
	}
}

func TestBenchRestartAtRejectsBadInput(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--restart-at", "-5s"}, "--restart-at -5s: want a time into the run"},
		{[]string{"--restart-at", "1m"}, "--restart-at 1m0s: want a time before the end of --duration 1m0s"},
		{[]string{"--restart-at", "2m"}, "before the end of --duration"},
		{[]string{"--restart-at", "soon"}, `invalid argument "soon" for "--restart-at"`},
		{[]string{"--restart-at", "30s", "--series-window", "0s"}, "--series-window 0s: want a positive window"},
		{[]string{"--restart-at", "30s", "--series-window", "40s"}, "no longer than --restart-at 30s"},
		{[]string{"--series-window", "2s"}, "give --restart-at too"},
		{[]string{"--restart-at", "30s", "--json"}, "does not combine with --json"},
		{[]string{"--mode", "live", "--target", "http://127.0.0.1:1", "--restart-at", "30s"}, "--restart-at is for --mode sim (got --mode live)"},
		{[]string{"--mode", "suite", "--restart-at", "30s"}, "--restart-at is for --mode sim (got --mode suite)"},
		{[]string{"--mode", "overhead", "--restart-at", "30s"}, "--restart-at is for --mode sim (got --mode overhead)"},
	} {
		args := append([]string{"bench", "--instances", "2", "--concurrency", "4", "--duration", "1m"}, c.args...)
		r := run(t, nil, args...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("bench %v: exit %d, stderr %q: want an error naming %q", c.args, r.code, r.stderr, c.want)
		}
	}
}
