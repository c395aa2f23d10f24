package registry

// View is the registry as its readers see it — xDS publishing endpoints,
// the admin API listing instances, metrics — with no way to change it:
// only the scheduler, under its lock, registers, reports, drains and
// removes.
type View interface {
	// Get returns instance id.
	Get(id string) (Instance, bool)
	// Len is the number of registered instances.
	Len() int
	// List returns every registered instance, sorted by ID.
	List() []Instance
	// Published returns the instances that belong in Envoy's endpoint set.
	Published() []RoutableInstance
	// Watch signals (coalesced) after every change of the published set.
	Watch() (changed <-chan struct{}, cancel func())
}

var _ View = (*Registry)(nil)
