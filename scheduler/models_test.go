package scheduler

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/llmrouter/llmrouter/scheduler/registry"
)

// listView is a registry.View over fixed instances.
type listView []registry.Instance

func (v listView) Get(string) (registry.Instance, bool)   { return registry.Instance{}, false }
func (v listView) Len() int                               { return len(v) }
func (v listView) List() []registry.Instance              { return v }
func (v listView) Published() []registry.RoutableInstance { return nil }
func (v listView) Watch() (<-chan struct{}, func())       { return nil, func() {} }

func routableServing(models ...string) registry.Instance {
	return registry.Instance{Healthy: true, Verified: true, Models: models, Registered: time.Unix(1700000000, 0)}
}

// ListModels' answer is bounded in entries and in bytes: past either, the
// sorted list stops and says it was cut.
func TestListModelsBounded(t *testing.T) {
	var many []string
	for i := range MaxListedModels + 100 {
		many = append(many, fmt.Sprintf("m-%05d", i))
	}
	// Spread over instances, each name twice: the cap counts names, not
	// what instances serve.
	r := ListModels(listView{routableServing(many...), routableServing(many[:600]...)})
	if !r.Truncated || len(r.Models) != MaxListedModels || r.Models[0].Name != "m-00000" || r.Models[MaxListedModels-1].Name != many[MaxListedModels-1] {
		t.Fatalf("%d names (truncated %v), want the first %d of %d", len(r.Models), r.Truncated, MaxListedModels, len(many))
	}

	long := make([]string, 300)
	for i := range long {
		long[i] = fmt.Sprintf("%03d-%s", i, strings.Repeat("x", 1020)) // 1 KiB each
	}
	r = ListModels(listView{routableServing(long...)})
	size := 0
	for _, m := range r.Models {
		size += len(m.Name)
	}
	if !r.Truncated || size > MaxListedModelBytes || size+1024 <= MaxListedModelBytes || r.Models[0].Name != long[0] {
		t.Fatalf("%d names of %d bytes (truncated %v), want as many as fit in %d bytes", len(r.Models), size, r.Truncated, MaxListedModelBytes)
	}

	r = ListModels(listView{routableServing(many[:10]...)})
	if r.Truncated || len(r.Models) != 10 {
		t.Fatalf("under the bounds: %d names, truncated %v", len(r.Models), r.Truncated)
	}
}
