package runner

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestStopsInStageOrder: every runner of a stage has returned before the
// next stage is told to stop.
func TestStopsInStageOrder(t *testing.T) {
	var (
		mu  sync.Mutex
		log []string
	)
	rec := func(name string) Runner {
		return Runner{Name: name, Run: func(ctx context.Context) error {
			<-ctx.Done()
			time.Sleep(5 * time.Millisecond) // a slow stop must still finish first
			mu.Lock()
			log = append(log, name)
			mu.Unlock()
			return nil
		}}
	}
	var g Group
	g.Stage(rec("xds"))
	g.Stage(rec("ext_proc"))
	g.Stage(rec("api"), rec("http"))
	ctx, cancel := context.WithCancel(context.Background())
	stopped := false
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx, func() { stopped = true }) }()
	time.Sleep(10 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !stopped || len(log) != 4 || log[0] != "xds" || log[1] != "ext_proc" || !slices.Contains(log[2:], "api") || !slices.Contains(log[2:], "http") {
		t.Fatalf("stop order %v (stopping called %v)", log, stopped)
	}
}

// TestFailureStopsAll: one runner failing stops the others and is reported
// by name.
func TestFailureStopsAll(t *testing.T) {
	var g Group
	g.Stage(Runner{Name: "xds", Run: func(ctx context.Context) error { <-ctx.Done(); return nil }})
	g.Stage(Runner{Name: "api", Run: func(context.Context) error { return errors.New("port taken") }})
	done := make(chan error, 1)
	go func() { done <- g.Run(context.Background(), nil) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "api: port taken") {
			t.Fatalf("got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a failed runner did not stop the group")
	}
}
