//go:build faults

package faults

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestEngineKilled: one of three engines is SIGKILLed while streams run on
// it. Only streams that started before the kill may fail, and a stream that
// broke after its first token must have come from the killed engine (its
// seed's first token); nothing sent after the kill fails. The engine comes
// back on the same port and serves again.
func TestEngineKilled(t *testing.T) {
	row := scenario(t)
	s := startSystem(t, options{fixedEnginePorts: true})
	// Each engine's first token: which engine served a stream.
	first := map[string]string{}
	for _, e := range s.Engines {
		r := s.chatTo(t.Context(), e.Addr, chatReq{MaxTokens: 1})
		if err := r.Failure(); err != nil || r.Text == "" {
			t.Fatalf("engine %s directly: %v (first token %q)", e.Addr, err, r.Text)
		}
		first[e.Addr] = r.Text
	}
	victim := s.Engines[1]
	if n := len(map[string]bool{first[s.Engines[0].Addr]: true, first[victim.Addr]: true, first[s.Engines[2].Addr]: true}); n != 3 {
		t.Fatalf("the engines' first tokens do not tell them apart: %v", first)
	}

	// 2 s streams (100 tokens at 20 ms): about 10 in flight per engine.
	l := s.openLoop(15, 10*time.Second, chatReq{MaxTokens: 100}, nil)
	time.Sleep(3 * time.Second)
	killed := time.Now()
	victim.Proc.Kill(t)
	// A confirmed dead engine leaves the data plane's endpoints within 2 s.
	var left time.Duration
	for left == 0 && time.Since(killed) < 3*time.Second {
		if have, err := s.Endpoints(); err == nil && !have[victim.Addr] {
			left = time.Since(killed)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if left == 0 || left > 2*time.Second {
		t.Errorf("the killed engine was still an endpoint of the data plane %s after the kill, want out within 2s", time.Since(killed).Round(time.Millisecond))
	} else {
		t.Logf("the killed engine left the data plane's endpoints %s after the kill", left.Round(time.Millisecond))
	}
	time.Sleep(time.Until(killed.Add(3 * time.Second)))
	victim.Proc = victim.Proc.Restart(t)
	victim.Proc.WaitLog(t, startTimeout, "enginesim serving", nil)
	restarted := time.Now()
	// Back on its port: healthy again (verified, published) under the load.
	s.WaitFleet(t, settle)
	t.Logf("the restarted engine is healthy %s after its restart", time.Since(restarted).Round(time.Millisecond))
	rs := l.wait()

	var o outcome
	var allowed int
	var bad []string
	for _, r := range rs {
		o.sent++
		err := r.Failure()
		if err == nil {
			o.ok++
			continue
		}
		o.failed++
		inFlight := r.Start.Before(killed) && r.End.After(killed)
		fromVictim := r.Text == "" || r.Text == first[victim.Addr]
		if inFlight && fromVictim {
			allowed++
			continue
		}
		if len(bad) < 10 {
			bad = append(bad, fmt.Sprintf("started %+.3fs from the kill, first token %q: %v", r.Start.Sub(killed).Seconds(), r.Text, err))
		}
	}
	row.add(o)
	row.note = fmt.Sprintf("(%d failed in flight on the killed engine, allowed)", allowed)
	t.Logf("%d sent, %d succeeded, %d failed of which %d were in flight on the killed engine", o.sent, o.ok, o.failed, allowed)
	if len(bad) > 0 {
		t.Errorf("%d requests failed that were not in flight on the killed engine: %s", o.failed-allowed, strings.Join(bad, "; "))
	}

	// And serving.
	l = s.openLoop(10, 3*time.Second, chatReq{}, nil)
	judge(t, row, l.wait(), l.began, false)
	if n := s.Counter(t, victim.Addr, "vllm:request_success_total"); n < 1 {
		t.Errorf("the restarted engine served no request (%s)", victim.Addr)
	}
	s.logSignals(t)
	s.alive(t)
}
