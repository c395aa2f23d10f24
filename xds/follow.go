package xds

import (
	"context"

	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// Source is what FollowRegistry needs of the registry (*registry.Registry
// satisfies it).
type Source interface {
	// Watch signals (coalesced) after every change of the published set.
	Watch() (changed <-chan struct{}, cancel func())
	// Published returns the instances Envoy may send to: verified, not
	// draining, not confirmed down — silent ones included (silence is not
	// death; see registry.Instance.Published).
	Published() []registry.RoutableInstance
}

var _ Source = (*registry.Registry)(nil)

// FollowRegistry publishes src's published set now and after every change
// until ctx ends (or src closes the watch channel). A draining, unhealthy
// (confirmed down) or removed instance leaves EDS with the next push; a
// silent one stays.
func FollowRegistry(ctx context.Context, src Source, srv *Server) {
	changed, cancel := src.Watch()
	defer cancel()
	publish := func() {
		insts := src.Published()
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
