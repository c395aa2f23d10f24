package xds

import (
	"fmt"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

func fleet(n, variant int) []Endpoint {
	eps := make([]Endpoint, n)
	for i := range eps {
		eps[i] = Endpoint{ID: fmt.Sprintf("inst-%d", i), Address: fmt.Sprintf("10.%d.%d.%d:8000", variant, i/256, i%256)}
	}
	// One instance differs between the variants: a single join or leave.
	eps[n-1].Address = fmt.Sprintf("10.200.%d.1:8000", variant)
	return eps
}

// SetEndpoints with 1,024 endpoints, one changed per call: normalize, diff,
// build the assignment, update the linear cache.
func BenchmarkEDSPush1024(b *testing.B) {
	f := start(b, 0, nil)
	sets := [2][]Endpoint{fleet(1024, 1), fleet(1024, 2)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.srv.SetEndpoints(sets[i%2])
	}
}

// The same, until a subscribed state-of-the-world client has received the
// assignment (serialisation and gRPC included).
func BenchmarkEDSPush1024ToClient(b *testing.B) {
	f := start(b, 0, nil)
	c := f.sotw(b)
	c.send(b, nodeRequest(resource.EndpointType, clusterName))
	c.ack(b, c.next(b, resource.EndpointType, initialWait), clusterName)
	sets := [2][]Endpoint{fleet(1024, 1), fleet(1024, 2)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f.srv.SetEndpoints(sets[i%2])
		r := c.next(b, resource.EndpointType, initialWait)
		c.ack(b, r, clusterName)
	}
}
