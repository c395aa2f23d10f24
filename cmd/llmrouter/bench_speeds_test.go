package main

import (
	"strings"
	"testing"
)

func TestBenchSimInstanceSpeeds(t *testing.T) {
	// --instances follows the list's length when not given.
	r := run(t, nil, "bench", "--mode", "sim", "--instance-speeds", "1, 0.5,0.5", "--policy", "least-request",
		"--concurrency", "8", "--duration", "20s")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, w := range []string{"Simulated cluster: 3 × llama3-8b-h100 at speeds 1, 0.5,0.5",
		"Instance speeds:                         10.0.0.1:8000=1 10.0.0.2:8000=0.5 10.0.0.3:8000=0.5"} {
		if !strings.Contains(r.stdout, w) {
			t.Fatalf("output lacks %q:\n%s", w, r.stdout)
		}
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--instance-speeds", "1,fast"}, `--instance-speeds "1,fast": item 2 "fast" is not a number`},
		{[]string{"--instance-speeds", "1,,1"}, `item 2 "" is not a number`},
		{[]string{"--instance-speeds", "1,0"}, "item 2 is 0: want a speed from 0.01 to 100"},
		{[]string{"--instance-speeds", "-1"}, "item 1 is -1"},
		{[]string{"--instance-speeds", "NaN"}, "item 1 is NaN"},
		{[]string{"--instance-speeds", "1,0.5", "--instances", "3"}, "--instance-speeds has 2 speeds and --instances is 3"},
		{[]string{"--mode", "live", "--target", "http://127.0.0.1:1", "--instance-speeds", "1,1"}, "--instance-speeds is for --mode sim"},
	} {
		r := run(t, nil, append([]string{"bench", "--concurrency", "1", "--duration", "1s"}, c.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("bench %v: exit %d, stderr %q: want an error containing %q", c.args, r.code, r.stderr, c.want)
		}
	}
}
