package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/integration/harness"
)

// TestPredictionErrorOnAFlushedEngine: a live fleet under prefix-cache
// (scheduler, gateway, data plane, three enginesims and their agents as
// separate processes). One long prompt, sent again and again, stays on one
// engine, whose cache serves it: llmrouter_prefix_prediction_error for that
// engine, measured from its agent's reports of prefix-cache hits, is near
// 0. Then its cache is flushed before every request behind the router's
// back (POST /reset_prefix_cache): the index still predicts hits the
// engine no longer has, and the error rises.
func TestPredictionErrorOnAFlushedEngine(t *testing.T) {
	s := startSystem(t, options{policy: "prefix-cache", split: true})
	// About 6,000 tokens: three requests fill one measuring interval.
	prompt := strings.Repeat("a long shared document the fleet keeps being asked about. ", 400)
	send := func() {
		t.Helper()
		if err := s.chat(context.Background(), chatReq{MaxTokens: 1, Prompt: prompt}).Failure(); err != nil {
			t.Fatal(err)
		}
		// A new agent report (every 200 ms) for the next pick to measure.
		time.Sleep(250 * time.Millisecond)
	}
	engineErr := func() (addr string, v float64, ok bool) {
		m, err := harness.Scrape(s.SchedulerHTTP, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range s.Engines {
			if v, ok := m.Value("llmrouter_prefix_prediction_error", "engine", e.Addr); ok {
				return e.Addr, v, true
			}
		}
		return "", 0, false
	}
	var home string
	var before float64
	harness.Eventually(t, 30*time.Second, "a prediction error measured for the prompt's engine", func() error {
		send()
		var ok bool
		if home, before, ok = engineErr(); !ok {
			return fmt.Errorf("no llmrouter_prefix_prediction_error series yet")
		}
		return nil
	})
	for range 8 { // a few more intervals with the cache intact
		send()
	}
	_, before, _ = engineErr()
	if before > 0.15 || before < -0.15 {
		t.Fatalf("prediction error %.3f on %s with its cache intact: want near 0", before, home)
	}
	after := before
	for i := 0; i < 16 && after < 0.5; i++ {
		resp, err := s.Client.Post("http://"+home+"/reset_prefix_cache", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		send()
		var ok bool
		var addr string
		if addr, after, ok = engineErr(); !ok || addr != home {
			t.Fatalf("the prediction error series moved from %s to %q", home, addr)
		}
	}
	t.Logf("prediction error on %s: %.3f with its cache, %.3f with it flushed before every request", home, before, after)
	if after < 0.5 {
		t.Fatalf("prediction error %.3f on %s with its cache flushed before every request: want above 0.5", after, home)
	}
}
