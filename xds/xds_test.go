package xds

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/llmrouter/llmrouter/envoy"
	"github.com/llmrouter/llmrouter/internal/config"
	schedfleet "github.com/llmrouter/llmrouter/scheduler/fleet"
	"github.com/llmrouter/llmrouter/scheduler/registry"
)

const (
	clusterName = "llm_backends"
	initialWait = 5 * time.Second // first responses: generous, not what is measured
	pushWait    = time.Second     // the acceptance bound for an endpoint change
	quietWait   = 500 * time.Millisecond
)

var node = &corev3.Node{Id: "test-envoy", Cluster: "test"}

type fixture struct {
	addr string
	srv  *Server
	reg  *prometheus.Registry
	conn *grpc.ClientConn
}

func start(t testing.TB, interval time.Duration, before func(*Server)) *fixture {
	t.Helper()
	cfg := config.Default()
	cfg.Scheduler.XDSPushInterval = interval
	reg := prometheus.NewRegistry()
	s := New(cfg, nil, reg)
	if before != nil {
		before(s)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{addr: lis.Addr().String(), srv: s, reg: reg, conn: serve(t, s, lis, lis.Addr().String())}
}

// serve runs s on lis until the test ends and returns a client connection
// to target.
func serve(t testing.TB, s *Server, lis net.Listener, target string) *grpc.ClientConn {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.Serve(ctx, lis); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		<-done
		s.Close()
	})
	return conn
}

// queue collects responses per type URL from a receiving goroutine.
type queue[R any] struct {
	ch     chan R
	typeOf func(R) string
	held   map[string][]R
}

func newQueue[R any](typeOf func(R) string) *queue[R] {
	return &queue[R]{ch: make(chan R, 64), typeOf: typeOf, held: map[string][]R{}}
}

func (q *queue[R]) next(t testing.TB, typeURL string, within time.Duration) R {
	t.Helper()
	if h := q.held[typeURL]; len(h) > 0 {
		q.held[typeURL] = h[1:]
		return h[0]
	}
	deadline := time.After(within)
	for {
		select {
		case r, ok := <-q.ch:
			if !ok {
				t.Fatalf("stream ended waiting for %s", typeURL)
			}
			if q.typeOf(r) == typeURL {
				return r
			}
			q.held[q.typeOf(r)] = append(q.held[q.typeOf(r)], r)
		case <-deadline:
			t.Fatalf("no %s response within %v", typeURL, within)
		}
	}
}

// none asserts that no response of typeURL arrives for d.
func (q *queue[R]) none(t testing.TB, typeURL string, d time.Duration) {
	t.Helper()
	if len(q.held[typeURL]) > 0 {
		t.Fatalf("unexpected %s response", typeURL)
	}
	deadline := time.After(d)
	for {
		select {
		case r, ok := <-q.ch:
			if !ok {
				return
			}
			if q.typeOf(r) == typeURL {
				t.Fatalf("unexpected %s response (a resend): %v", typeURL, r)
			}
			q.held[q.typeOf(r)] = append(q.held[q.typeOf(r)], r)
		case <-deadline:
			return
		}
	}
}

// pump feeds q from recv until the stream ends; the test's end cancels the
// stream and waits for it.
func pump[R any](t testing.TB, q *queue[R], recv func() (R, error), cancel func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(q.ch)
		for {
			r, err := recv()
			if err != nil {
				return
			}
			q.ch <- r
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

type sotwClient struct {
	*queue[*discovery.DiscoveryResponse]
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
}

func (f *fixture) sotw(t testing.TB) *sotwClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(f.conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &sotwClient{queue: newQueue(func(r *discovery.DiscoveryResponse) string { return r.GetTypeUrl() }), stream: stream}
	pump(t, c.queue, stream.Recv, cancel)
	return c
}

func (c *sotwClient) send(t testing.TB, req *discovery.DiscoveryRequest) {
	t.Helper()
	if err := c.stream.Send(req); err != nil {
		t.Fatal(err)
	}
}

func (c *sotwClient) ack(t testing.TB, r *discovery.DiscoveryResponse, names ...string) {
	c.send(t, &discovery.DiscoveryRequest{TypeUrl: r.GetTypeUrl(), VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce(), ResourceNames: names})
}

func clusterOf(t testing.TB, res []*anypb.Any) *clusterv3.Cluster {
	t.Helper()
	if len(res) != 1 {
		t.Fatalf("want one cluster, got %d", len(res))
	}
	c := &clusterv3.Cluster{}
	if err := res[0].UnmarshalTo(c); err != nil {
		t.Fatal(err)
	}
	if err := envoy.Validate(c); err != nil {
		t.Fatalf("published cluster invalid: %v", err)
	}
	return c
}

func addressesOf(t testing.TB, res *anypb.Any) []string {
	t.Helper()
	cla := &endpointv3.ClusterLoadAssignment{}
	if err := res.UnmarshalTo(cla); err != nil {
		t.Fatal(err)
	}
	if cla.GetClusterName() != clusterName {
		t.Fatalf("assignment for %q", cla.GetClusterName())
	}
	if err := envoy.Validate(cla); err != nil {
		t.Fatalf("published assignment invalid: %v", err)
	}
	out := []string{}
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, net.JoinHostPort(sa.GetAddress(), itoa(sa.GetPortValue())))
		}
	}
	return out
}

func itoa(p uint32) string { return (&net.TCPAddr{Port: int(p)}).String()[1:] }

func sotwAddresses(t testing.TB, r *discovery.DiscoveryResponse) []string {
	t.Helper()
	if len(r.GetResources()) != 1 {
		t.Fatalf("want one assignment, got %d", len(r.GetResources()))
	}
	return addressesOf(t, r.GetResources()[0])
}

func want(t testing.TB, got []string, exp ...string) {
	t.Helper()
	if !slices.Equal(got, exp) {
		t.Fatalf("endpoints %v, want %v", got, exp)
	}
}

// subscribeSotW does what Envoy does: CDS (wildcard), ACK, EDS for the
// cluster, ACK. It returns the client and the EDS response.
func subscribeSotW(t *testing.T, f *fixture) (*sotwClient, *discovery.DiscoveryResponse) {
	c := f.sotw(t)
	c.send(t, &discovery.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType})
	cds := c.next(t, resource.ClusterType, initialWait)
	cl := clusterOf(t, cds.GetResources())
	if cl.GetName() != clusterName || cl.GetType() != clusterv3.Cluster_EDS {
		t.Fatalf("cluster %v", cl)
	}
	c.ack(t, cds)
	c.send(t, &discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: []string{clusterName}})
	eds := c.next(t, resource.EndpointType, initialWait)
	c.ack(t, eds, clusterName)
	return c, eds
}

func TestSotWCDSAndEDS(t *testing.T) {
	f := start(t, 50*time.Millisecond, nil)
	c, eds := subscribeSotW(t, f)
	// Nothing set yet: the response carries no assignment (Envoy initializes
	// the cluster without hosts, or keeps the ones it has; EmptyHold).
	if n := len(eds.GetResources()); n != 0 {
		t.Fatalf("first EDS response carries %d assignments, want none", n)
	}

	f.srv.SetEndpoints([]Endpoint{{ID: "a", Address: "10.0.0.1:8000"}})
	eds = c.next(t, resource.EndpointType, pushWait)
	want(t, sotwAddresses(t, eds), "10.0.0.1:8000")
	c.ack(t, eds, clusterName)

	f.srv.SetEndpoints([]Endpoint{{ID: "a", Address: "10.0.0.1:8000"}, {ID: "b", Address: "10.0.0.2:8000"}})
	eds = c.next(t, resource.EndpointType, pushWait)
	want(t, sotwAddresses(t, eds), "10.0.0.1:8000", "10.0.0.2:8000")
	c.ack(t, eds, clusterName)

	f.srv.SetEndpoints([]Endpoint{{ID: "b", Address: "10.0.0.2:8000"}})
	eds = c.next(t, resource.EndpointType, pushWait)
	want(t, sotwAddresses(t, eds), "10.0.0.2:8000")
	c.ack(t, eds, clusterName)

	// The same set again is not a change.
	f.srv.SetEndpoints([]Endpoint{{ID: "b", Address: "10.0.0.2:8000"}})
	c.none(t, resource.EndpointType, quietWait)

	if got := value(t, f.srv.m.endpoints); got != 1 {
		t.Errorf("llmrouter_xds_endpoints = %v", got)
	}
	if got := value(t, f.srv.m.clients); got != 1 {
		t.Errorf("llmrouter_xds_connected_clients = %v", got)
	}
	if got := value(t, f.srv.m.pushes.WithLabelValues(resource.EndpointType)); got != 4 {
		t.Errorf("EDS pushes = %v, want 4", got)
	}
	if n := histCount(t, f.srv.m.pushLatency); n != 3 {
		t.Errorf("push latency observations = %d, want 3 (one per endpoint update)", n)
	}
	if got := value(t, f.srv.m.nacks.WithLabelValues(resource.EndpointType)); got != 0 {
		t.Errorf("NACKs counted without a NACK: %v", got)
	}
}

func nackDetail() *statuspb.Status { return &statuspb.Status{Code: 3, Message: "rejected by test"} }

func TestSotWNACKDoesNotLoop(t *testing.T) {
	f := start(t, 50*time.Millisecond, nil)
	c := f.sotw(t)
	c.send(t, &discovery.DiscoveryRequest{Node: node, TypeUrl: resource.ClusterType})
	cds := c.next(t, resource.ClusterType, initialWait)
	// NACK of the very first response: the client has accepted no version.
	c.send(t, &discovery.DiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: cds.GetNonce(), ErrorDetail: nackDetail()})
	c.none(t, resource.ClusterType, quietWait)
	if got := value(t, f.srv.m.nacks.WithLabelValues(resource.ClusterType)); got != 1 {
		t.Fatalf("CDS NACKs = %v, want 1", got)
	}

	c.send(t, &discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: []string{clusterName}})
	first := c.next(t, resource.EndpointType, initialWait)
	c.ack(t, first, clusterName)
	f.srv.SetEndpoints([]Endpoint{{ID: "a", Address: "10.0.0.1:8000"}})
	upd := c.next(t, resource.EndpointType, pushWait)
	// NACK of an update: the client stays at the version it accepted.
	c.send(t, &discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, VersionInfo: first.GetVersionInfo(),
		ResponseNonce: upd.GetNonce(), ResourceNames: []string{clusterName}, ErrorDetail: nackDetail()})
	c.none(t, resource.EndpointType, quietWait)
	if got := value(t, f.srv.m.nacks.WithLabelValues(resource.EndpointType)); got != 1 {
		t.Fatalf("EDS NACKs = %v, want 1", got)
	}
	// The stream is alive: the next change arrives.
	f.srv.SetEndpoints([]Endpoint{{ID: "b", Address: "10.0.0.2:8000"}})
	want(t, sotwAddresses(t, c.next(t, resource.EndpointType, pushWait)), "10.0.0.2:8000")
}

type deltaClient struct {
	*queue[*discovery.DeltaDiscoveryResponse]
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
}

func (f *fixture) delta(t testing.TB) *deltaClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(f.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &deltaClient{queue: newQueue(func(r *discovery.DeltaDiscoveryResponse) string { return r.GetTypeUrl() }), stream: stream}
	pump(t, c.queue, stream.Recv, cancel)
	return c
}

func (c *deltaClient) send(t testing.TB, req *discovery.DeltaDiscoveryRequest) {
	t.Helper()
	if err := c.stream.Send(req); err != nil {
		t.Fatal(err)
	}
}

func (c *deltaClient) ack(t testing.TB, r *discovery.DeltaDiscoveryResponse) {
	c.send(t, &discovery.DeltaDiscoveryRequest{TypeUrl: r.GetTypeUrl(), ResponseNonce: r.GetNonce()})
}

func deltaAddresses(t testing.TB, r *discovery.DeltaDiscoveryResponse) []string {
	t.Helper()
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != clusterName {
		t.Fatalf("want the assignment of %s, got %v", clusterName, r.GetResources())
	}
	return addressesOf(t, r.GetResources()[0].GetResource())
}

func TestDeltaCDSAndEDSAndNACK(t *testing.T) {
	f := start(t, 50*time.Millisecond, nil)
	c := f.delta(t)
	c.send(t, &discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ClusterType})
	cds := c.next(t, resource.ClusterType, initialWait)
	if len(cds.GetResources()) != 1 {
		t.Fatalf("CDS: %v", cds)
	}
	clusterOf(t, []*anypb.Any{cds.GetResources()[0].GetResource()})
	c.ack(t, cds)
	c.send(t, &discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{clusterName}})
	// No assignment while nothing was set (EmptyHold): no response.
	c.none(t, resource.EndpointType, quietWait)

	f.srv.SetEndpoints([]Endpoint{{ID: "a", Address: "10.0.0.1:8000"}})
	eds := c.next(t, resource.EndpointType, pushWait)
	want(t, deltaAddresses(t, eds), "10.0.0.1:8000")
	c.ack(t, eds)

	f.srv.SetEndpoints(nil)
	eds = c.next(t, resource.EndpointType, pushWait)
	want(t, deltaAddresses(t, eds))

	// NACK it: counted, not resent.
	c.send(t, &discovery.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResponseNonce: eds.GetNonce(), ErrorDetail: nackDetail()})
	c.none(t, resource.EndpointType, quietWait)
	if got := value(t, f.srv.m.nacks.WithLabelValues(resource.EndpointType)); got != 1 {
		t.Fatalf("EDS NACKs = %v, want 1", got)
	}
	f.srv.SetEndpoints([]Endpoint{{ID: "c", Address: "10.0.0.3:8000"}})
	want(t, deltaAddresses(t, c.next(t, resource.EndpointType, pushWait)), "10.0.0.3:8000")
}

// TestEmptySetHeldAfterStart: a starting server (a restarted scheduler
// whose agents have not reconnected) does not tell Envoy the fleet is empty
// until the hold has passed; the first non-empty set goes out at once.
func TestEmptySetHeldAfterStart(t *testing.T) {
	const hold = 2 * time.Second
	var started time.Time
	f := start(t, 50*time.Millisecond, func(s *Server) {
		started = time.Now()
		s.holdEmptyUntil = started.Add(hold)
	})
	f.srv.SetEndpoints(nil)
	c := f.delta(t)
	c.send(t, &discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{clusterName}})
	// The first EDS answer, whenever it comes, must not come before the
	// hold ends. (A quiet window after subscribing said the same, but a
	// run slowed past the hold before opening it saw the legitimate push.)
	eds := c.next(t, resource.EndpointType, hold+initialWait)
	if took := time.Since(started); took < hold {
		t.Fatalf("empty set published %s after start, want after the %s hold", took, hold)
	}
	want(t, deltaAddresses(t, eds))
	c.ack(t, eds)
	if got := f.srv.Endpoints(); len(got) != 0 {
		t.Fatalf("Endpoints() = %v", got)
	}

	// Held, then replaced by a registration before the hold ends: the
	// non-empty set goes out at once and the hold timer is gone.
	g := start(t, 50*time.Millisecond, func(s *Server) { s.holdEmptyUntil = time.Now().Add(time.Hour) })
	g.srv.SetEndpoints(nil)
	d := g.delta(t)
	d.send(t, &discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.EndpointType, ResourceNamesSubscribe: []string{clusterName}})
	d.none(t, resource.EndpointType, 300*time.Millisecond)
	g.srv.SetEndpoints([]Endpoint{{ID: "a", Address: "10.0.0.1:8000"}})
	want(t, deltaAddresses(t, d.next(t, resource.EndpointType, pushWait)), "10.0.0.1:8000")
	g.srv.mu.Lock()
	pending := g.srv.holdTimer != nil
	g.srv.mu.Unlock()
	if pending {
		t.Fatal("hold timer still pending after a non-empty push")
	}
}

type fakeSource struct {
	mu    sync.Mutex
	insts []registry.RoutableInstance
	ch    chan struct{}
}

func (f *fakeSource) Watch() (<-chan struct{}, func()) { return f.ch, func() {} }

func (f *fakeSource) Published() []registry.RoutableInstance {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.insts)
}

func (f *fakeSource) set(insts ...registry.RoutableInstance) {
	f.mu.Lock()
	f.insts = insts
	f.mu.Unlock()
	select {
	case f.ch <- struct{}{}:
	default:
	}
}

func TestFollowRegistry(t *testing.T) {
	f := start(t, 50*time.Millisecond, nil)
	src := &fakeSource{ch: make(chan struct{}, 1), insts: []registry.RoutableInstance{{ID: "a", Address: "10.0.0.1:8000", Models: []string{"m"}, Role: schedfleet.RoleBoth}}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { FollowRegistry(ctx, src, f.srv); close(done) }()
	defer func() { cancel(); <-done }()

	c, eds := subscribeSotW(t, f)
	if len(eds.GetResources()) == 0 {
		// FollowRegistry's first publication raced the subscription: the
		// first response carries no assignment yet.
		eds = c.next(t, resource.EndpointType, pushWait)
		c.ack(t, eds, clusterName)
	}
	want(t, sotwAddresses(t, eds), "10.0.0.1:8000")

	src.set(registry.RoutableInstance{ID: "a", Address: "10.0.0.1:8000"}, registry.RoutableInstance{ID: "b", Address: "10.0.0.2:8000"})
	eds = c.next(t, resource.EndpointType, pushWait)
	want(t, sotwAddresses(t, eds), "10.0.0.1:8000", "10.0.0.2:8000")
	c.ack(t, eds, clusterName)

	src.set(registry.RoutableInstance{ID: "b", Address: "10.0.0.2:8000"}) // a drained
	want(t, sotwAddresses(t, c.next(t, resource.EndpointType, pushWait)), "10.0.0.2:8000")
}

func TestChurnIsCoalesced(t *testing.T) {
	const interval = 300 * time.Millisecond
	f := start(t, interval, nil)
	c, _ := subscribeSotW(t, f)
	begin := time.Now()
	var last []Endpoint
	for i := range 20 {
		last = []Endpoint{{ID: "x", Address: net.JoinHostPort("10.0.1.1", itoa(uint32(8000+i)))}}
		f.srv.SetEndpoints(last)
	}
	calls := time.Since(begin)
	pushes := 0
	var got []string
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case r := <-c.ch:
			if r.GetTypeUrl() == resource.EndpointType {
				pushes++
				got = sotwAddresses(t, r)
				c.ack(t, r, clusterName)
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
	want(t, got, last[0].Address)
	// One immediate push, then at most one per interval while the calls lasted, plus the trailing one.
	if limit := 2 + int(calls/interval); pushes > limit || pushes < 1 {
		t.Fatalf("%d pushes for 20 changes in %v (interval %v), want at most %d", pushes, calls, interval, limit)
	}
}

func TestSetEndpointsNormalizes(t *testing.T) {
	f := start(t, 0, nil)
	f.srv.SetEndpoints([]Endpoint{
		{ID: "dns", Address: "engine:8000"},
		{ID: "a", Address: "10.0.0.2:1"},
		{ID: "b", Address: "10.0.0.1:1"},
		{ID: "c", Address: "10.0.0.1:1"},
		{ID: "noport", Address: "10.0.0.3"},
	})
	got := f.srv.Endpoints()
	exp := []Endpoint{{ID: "b", Address: "10.0.0.1:1"}, {ID: "a", Address: "10.0.0.2:1"}}
	if !slices.Equal(got, exp) {
		t.Fatalf("endpoints %v, want %v", got, exp)
	}
}

// A subscription to a type we do not serve must not end the ADS stream.
func TestUnknownTypeKeepsStream(t *testing.T) {
	f := start(t, 50*time.Millisecond, nil)
	c := f.sotw(t)
	c.send(t, &discovery.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType})
	c.send(t, &discovery.DiscoveryRequest{TypeUrl: resource.ClusterType})
	clusterOf(t, c.next(t, resource.ClusterType, initialWait).GetResources())
	c.none(t, resource.ListenerType, quietWait)
}

func metricOf(t testing.TB, c prometheus.Collector) *dto.Metric {
	t.Helper()
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	m := &dto.Metric{}
	if err := (<-ch).Write(m); err != nil {
		t.Fatal(err)
	}
	return m
}

func value(t testing.TB, c prometheus.Collector) float64 {
	t.Helper()
	m := metricOf(t, c)
	if m.Counter != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

func histCount(t testing.TB, c prometheus.Collector) uint64 {
	t.Helper()
	return metricOf(t, c).GetHistogram().GetSampleCount()
}

func nodeRequest(typeURL string, names ...string) *discovery.DiscoveryRequest {
	return &discovery.DiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNames: names}
}
