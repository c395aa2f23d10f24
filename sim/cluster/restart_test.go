package cluster

import (
	"strings"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/sim/workload"
)

// restartRun is a busy multi-turn run, closed loop, whose scheduler may be
// restarted half-way.
func restartRun(t *testing.T, restartAt time.Duration) Result {
	t.Helper()
	src := multiTurn(t, func(m *workload.MultiTurn) { m.SystemTokens, m.UserTokens, m.OutputTokens = 2048, 300, 200 })
	o := opts(src, 3, workload.Arrivals{Concurrency: 240}, 80*time.Second)
	o.Plan.RampUp = 10 * time.Second
	o.RestartAt, o.Window = restartAt, 5*time.Second
	return run(t, o, "prefix-cache")
}

// A restarted scheduler routes cold: the prefix hit ratio of the requests
// arriving just after the restart falls well below its level before, and
// is back by the end of the run, with no request failing or shed. The same
// run without the restart shows no dip at that instant.
func TestRestartDipsAndRecovers(t *testing.T) {
	const at = 40 * time.Second
	r := restartRun(t, at)
	if r.Failed != 0 || r.Rejected != 0 {
		t.Fatalf("restart: %d failed, %d rejected (%v %v): want none, requests pass through while the agents re-register", r.Failed, r.Rejected, r.Errors, r.Rejections)
	}
	s := r.Series
	if s == nil || s.RestartAt != at {
		t.Fatalf("series %+v: want one around the restart at %s", s, at)
	}
	rc := s.Recovery
	if rc.BeforeWindows != 4 || rc.Before < 0.5 {
		t.Fatalf("before the restart: %d windows, hit ratio %.3f: want the 4 windows of the 20 s before it (the second half of the run so far), of a warm fleet", rc.BeforeWindows, rc.Before)
	}
	var first Window
	for _, w := range s.Windows {
		if w.Start == at {
			first = w
		}
	}
	if first.Requests == 0 || first.HitRatio > 0.85*rc.Before {
		t.Fatalf("window after the restart: %+v, hit ratio before %.3f: want a dip below 85%% of it", first, rc.Before)
	}
	t.Logf("hit ratio before %.3f, window after the restart %.3f (mean TTFT %s against %s), recovery time %s, last window %.3f",
		rc.Before, first.HitRatio, first.MeanTTFT, rc.TTFTBefore, rc.RecoveryTime, rc.LastHitRatio)
	if first.MeanTTFT <= rc.TTFTBefore {
		t.Fatalf("window after the restart: mean TTFT %s, before %s: want the cold routing's prefills to show", first.MeanTTFT, rc.TTFTBefore)
	}
	if !rc.Recovered || rc.RecoveryTime <= 0 || rc.LastHitRatio < (1-RecoveryTolerance)*rc.Before {
		t.Fatalf("recovery %+v: want the hit ratio back within %.0f%% of %.3f before the run ends", rc, 100*RecoveryTolerance, rc.Before)
	}
	if s.PassedThrough == 0 {
		t.Fatalf("no request passed through while no agent had re-registered (gap %s)", s.RestartGap)
	}
	var b strings.Builder
	s.Write(&b)
	for _, want := range []string{"Scheduler restart at 40s", "recovery time: ", "<- restart"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("series text lacks %q:\n%s", want, b.String())
		}
	}

	// The control: no restart, the same windows, no dip at the same instant.
	c := restartRun(t, 0)
	if c.Series == nil || c.Series.RestartAt != 0 || c.Series.PassedThrough != 0 {
		t.Fatalf("control: series %+v, want one without a restart", c.Series)
	}
	cc := c.Series.Around(at)
	if cc.Before < 0 || cc.Dip < (1-RecoveryTolerance)*cc.Before {
		t.Fatalf("control without a restart: hit ratio %.3f before %s, lowest window after %.3f: want no dip", cc.Before, at, cc.Dip)
	}
	if d := cc.Before - rc.Before; d > 0.02 || d < -0.02 {
		t.Fatalf("hit ratio before the restart %.3f, control %.3f: the runs should agree until the restart", rc.Before, cc.Before)
	}
}

func TestRestartOptionsRefused(t *testing.T) {
	src := multiTurn(t, nil)
	for _, c := range []struct {
		mutate func(*Options)
		want   string
	}{
		{func(o *Options) { o.RestartAt = -time.Second }, "restart at -1s"},
		{func(o *Options) { o.RestartAt = time.Minute }, "before the end of the run's duration 1m0s"},
		{func(o *Options) { o.RestartAt, o.RestartGap = time.Second, -time.Second }, "restart gap -1s"},
		{func(o *Options) { o.Window = -time.Second }, "window -1s"},
		{func(o *Options) {
			o.RestartAt, o.Roles = time.Second, []string{RolePrefill, RoleDecode}
		}, "prefill/decode"},
	} {
		o := opts(src, 2, workload.Arrivals{Concurrency: 4}, time.Minute)
		c.mutate(&o)
		if err := o.defaults(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v: want one naming %q", err, c.want)
		}
	}
}
