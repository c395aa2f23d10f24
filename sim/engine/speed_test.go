package engine

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestWithSpeedScalesEveryTimeCost(t *testing.T) {
	c := testConfig()
	half, err := c.WithSpeed(0.5)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range [][2]int{{0, 1}, {1, 0}, {300, 4}, {0, 200}} {
		if got, want := half.StepTime(st[0], st[1]), 2*c.StepTime(st[0], st[1]); got != want {
			t.Errorf("step of %d prefill + %d decode tokens at speed 0.5: %s, want %s", st[0], st[1], got, want)
		}
	}
	if half.NumBlocks != c.NumBlocks || half.BlockSize != c.BlockSize || half.MaxNumSeqs != c.MaxNumSeqs ||
		half.MaxNumBatchedTokens != c.MaxNumBatchedTokens {
		t.Fatalf("speed changed the capacity: %+v from %+v", half, c)
	}

	fixed := c
	fixed.FixedPrefillStep, fixed.FixedDecodeStep = 30*time.Millisecond, 8*time.Millisecond
	fast, err := fixed.WithSpeed(2)
	if err != nil {
		t.Fatal(err)
	}
	if fast.StepTime(100, 3) != 15*time.Millisecond || fast.StepTime(0, 3) != 4*time.Millisecond {
		t.Fatalf("fixed steps at speed 2: prefill %s, decode %s; want 15ms, 4ms", fast.StepTime(100, 3), fast.StepTime(0, 3))
	}
	if same, _ := c.WithSpeed(1); same != c {
		t.Fatal("speed 1 changed the config")
	}
	if err := half.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestWithSpeedRejectsOutOfRange(t *testing.T) {
	for _, s := range []float64{0, -1, 0.001, 101, math.Inf(1), math.NaN()} {
		_, err := testConfig().WithSpeed(s)
		if err == nil || !strings.Contains(err.Error(), "engine speed") || !strings.Contains(err.Error(), "from 0.01 to 100") {
			t.Errorf("speed %g: %v, want an error naming the accepted range", s, err)
		}
	}
}
