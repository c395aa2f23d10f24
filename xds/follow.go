package xds

import (
	"context"

	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// Source is what FollowRegistry needs of the registry (*registry.Registry
// satisfies it).
type Source interface {
	// Watch signals (coalesced) after every change of the routable set.
	Watch() (changed <-chan struct{}, cancel func())
	// Routable returns the healthy, not draining instances.
	Routable() []registry.RoutableInstance
}

var _ Source = (*registry.Registry)(nil)

// FollowRegistry publishes src's routable set now and after every change
// until ctx ends (or src closes the watch channel). A draining or unhealthy
// instance leaves EDS with the next push.
func FollowRegistry(ctx context.Context, src Source, srv *Server) {
	changed, cancel := src.Watch()
	defer cancel()
	publish := func() {
		insts := src.Routable()
		eps := make([]Endpoint, len(insts))
		for i, in := range insts {
			eps[i] = Endpoint{ID: in.ID, Address: in.Address}
		}
		srv.SetEndpoints(eps)
	}
	publish()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-changed:
			if !ok {
				return
			}
			publish()
		}
	}
}
