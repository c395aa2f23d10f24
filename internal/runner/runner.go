// Package runner runs a process's servers together and stops them in a
// stated order, as Envoy Gateway's runners do: a Group holds stages of
// runners; all start at once, and when the context ends (or any runner
// fails) the stages stop one after another, each waited for before the
// next — so a process says once, in one place, that xDS stops before the
// agent streams close, or the gateway before the scheduler it calls.
package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/llmrouter/llmrouter/internal/grpcx"
)

// Runner is one server or loop of a process.
type Runner struct {
	Name string
	// Run serves until ctx ends (then returns nil) or it fails.
	Run func(ctx context.Context) error
}

// Group is a process's runners in stop order.
type Group struct {
	stages [][]Runner
}

// Stage adds runners that stop together, after every stage added before.
func (g *Group) Stage(rs ...Runner) { g.stages = append(g.stages, rs) }

// Run starts every runner and blocks until ctx ends or one fails; then
// stops the stages in order. stopping, when not nil, is called first (a
// readiness probe turning unready). It returns every runner's error.
func (g *Group) Run(ctx context.Context, stopping func()) error {
	failed, fail := context.WithCancel(ctx)
	defer fail()
	var (
		mu   sync.Mutex
		errs []error
	)
	cancels := make([]context.CancelFunc, len(g.stages))
	wgs := make([]sync.WaitGroup, len(g.stages))
	for i, stage := range g.stages {
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		cancels[i] = cancel
		for _, r := range stage {
			wgs[i].Add(1)
			go func() {
				defer wgs[i].Done()
				if err := r.Run(sctx); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", r.Name, err))
					mu.Unlock()
					fail()
				}
			}()
		}
	}
	<-failed.Done()
	if stopping != nil {
		stopping()
	}
	for i := range g.stages {
		cancels[i]()
		wgs[i].Wait()
	}
	return errors.Join(errs...)
}

// GRPC serves s on ln; when ctx ends it stops s gracefully, forcing it
// after grace, and returns once every handler has returned. Serve alone
// returns as soon as a forced stop has closed the connections, while a
// cut handler may still be running (logging, counting its end): the next
// stage, or the process's exit, must not start under it.
func GRPC(name string, s *grpc.Server, ln net.Listener, grace time.Duration) Runner {
	return Runner{Name: name, Run: func(ctx context.Context) error {
		served, stopped := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(stopped)
			select {
			case <-ctx.Done():
				grpcx.Stop(s, grace)
			case <-served:
			}
		}()
		err := s.Serve(ln)
		close(served)
		<-stopped
		if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return err
		}
		return nil
	}}
}

// Loop runs f, which returns when ctx ends, as a runner that cannot fail.
func Loop(name string, f func(ctx context.Context)) Runner {
	return Runner{Name: name, Run: func(ctx context.Context) error { f(ctx); return nil }}
}
