package xds

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	llmrouterv1 "github.com/llmrouter/llmrouter/api/llmrouter/v1"
	"github.com/llmrouter/llmrouter/scheduler/registry"
)

type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *stepClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// What EDS carries follows the registry's membership: a silent instance
// stays published, one its agent reports down leaves with the next push,
// and a fleet-wide stall never empties the set.
func TestEDSKeepsSilentInstances(t *testing.T) {
	f := start(t, 0, nil)
	clk := &stepClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	reg := registry.New(registry.Options{Clock: clk})
	addrs := []string{"10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"}
	for _, a := range addrs {
		if _, err := reg.Register(&llmrouterv1.Register{Address: a, Models: []string{"m"}}, nil); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { FollowRegistry(ctx, reg, f.srv); close(done) }()
	defer func() { cancel(); <-done }()
	pushed := func(want ...string) {
		t.Helper()
		var got []string
		for range 200 {
			got = got[:0]
			for _, e := range f.srv.Endpoints() {
				got = append(got, e.Address)
			}
			if slices.Equal(got, want) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("EDS = %v, want %v", got, want)
	}
	pushed(addrs...)

	// Every agent stalls: all silent, all kept.
	clk.add(time.Minute)
	if res := reg.Sweep(); len(res.Silenced) != 3 || !res.Panic {
		t.Fatalf("sweep = %+v", res)
	}
	pushed(addrs...)

	// Two report again; the third's agent says its engine is down.
	for _, a := range addrs[:2] {
		if _, err := reg.Report(a, 0, &llmrouterv1.Report{Healthy: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.Report(addrs[2], 0, &llmrouterv1.Report{Healthy: false, UnhealthyReason: "connection refused"}); err != nil {
		t.Fatal(err)
	}
	pushed(addrs[:2]...)
}
