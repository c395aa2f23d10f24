package standin

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	overridehostv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/override_host/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/zap"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/anypb"
)

// Type URLs of the resources the stand-in subscribes to.
const (
	ClusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// OverrideSource is one override_host source: a header or a metadata path.
type OverrideSource struct {
	Header    string
	Namespace string
	Path      []string
}

// DynCluster is a CDS cluster the stand-in can route to.
type DynCluster struct {
	Name           string
	EDSName        string
	ConnectTimeout time.Duration
	// Override is nil for plain round robin.
	Override []OverrideSource
	rr       atomic.Uint64
}

// Endpoint is one EDS host.
type Endpoint struct {
	Addr     string `json:"address"`
	Health   string `json:"health_status"`
	Priority uint32 `json:"priority"`
}

// endpointSet is a cluster's current EDS assignment: every host (override_host
// looks hosts up regardless of health, like Envoy's cross-priority host map)
// and the healthy hosts round robin chooses from.
type endpointSet struct {
	all     map[string]Endpoint
	list    []Endpoint
	healthy []string
}

// fleet is the dynamic cluster state shared by the ADS client and the proxy.
type fleet struct {
	mu        sync.RWMutex
	clusters  map[string]*DynCluster
	endpoints map[string]*endpointSet // by EDS name
	version   map[string]string       // delta: resource versions by type+name
	cdsSeen   bool
}

func newFleet() *fleet {
	return &fleet{clusters: map[string]*DynCluster{}, endpoints: map[string]*endpointSet{}, version: map[string]string{}}
}

func (f *fleet) cluster(name string) (*DynCluster, *endpointSet) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	c := f.clusters[name]
	if c == nil {
		return nil, nil
	}
	return c, f.endpoints[c.EDSName]
}

// edsNames are the EDS resources the current clusters need.
func (f *fleet) edsNamesLocked() []string {
	var out []string
	for _, c := range f.clusters {
		out = append(out, c.EDSName)
	}
	sort.Strings(out)
	return out
}

// ready: CDS arrived and every cluster has its first assignment.
func (f *fleet) ready() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if !f.cdsSeen {
		return false
	}
	for _, c := range f.clusters {
		if f.endpoints[c.EDSName] == nil {
			return false
		}
	}
	return true
}

func decodeCluster(a *anypb.Any) (*DynCluster, error) {
	c := &clusterv3.Cluster{}
	if err := a.UnmarshalTo(c); err != nil {
		return nil, fmt.Errorf("not a Cluster: %w", err)
	}
	if err := c.ValidateAll(); err != nil {
		return nil, fmt.Errorf("cluster %q: %w", c.GetName(), err)
	}
	if bad := checkUnderstood(c); len(bad) > 0 {
		return nil, fmt.Errorf("cluster %q: the test stand-in does not understand: %s", c.GetName(), strings.Join(bad, "; "))
	}
	if c.GetType() != clusterv3.Cluster_EDS {
		return nil, fmt.Errorf("cluster %q: type %s: the stand-in supports EDS clusters over CDS", c.GetName(), c.GetType())
	}
	if c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
		return nil, fmt.Errorf("cluster %q: eds_cluster_config.eds_config must be ads: {}", c.GetName())
	}
	dc := &DynCluster{Name: c.GetName(), EDSName: c.GetEdsClusterConfig().GetServiceName(),
		ConnectTimeout: dur(c.GetConnectTimeout(), 5*time.Second)}
	if dc.EDSName == "" {
		dc.EDSName = dc.Name
	}
	//lint:ignore SA1019 refusing the deprecated field is the point
	if c.GetHttp2ProtocolOptions() != nil {
		return nil, fmt.Errorf("cluster %q: http2_protocol_options: the stand-in speaks HTTP/1.1 to engines", c.GetName())
	}
	for k, v := range c.GetTypedExtensionProtocolOptions() {
		po := &upstreamhttpv3.HttpProtocolOptions{}
		if err := v.UnmarshalTo(po); err != nil {
			return nil, fmt.Errorf("cluster %q: typed_extension_protocol_options[%s]: only HttpProtocolOptions is supported", c.GetName(), k)
		}
		if po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil || po.GetUpstreamProtocolOptions() == nil {
			return nil, fmt.Errorf("cluster %q: typed_extension_protocol_options[%s]: the stand-in speaks HTTP/1.1 to engines (explicit_http_config.http_protocol_options)", c.GetName(), k)
		}
	}
	if lbp := c.GetLoadBalancingPolicy(); lbp != nil {
		ov, err := lbPolicy(lbp, true)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: load_balancing_policy: %w", c.GetName(), err)
		}
		dc.Override = ov
	} else if c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN {
		return nil, fmt.Errorf("cluster %q: lb_policy %s: the stand-in implements ROUND_ROBIN and load_balancing_policy override_host", c.GetName(), c.GetLbPolicy())
	}
	return dc, nil
}

// lbPolicy takes the first policy the stand-in knows, as Envoy takes the
// first one it has a factory for. It returns the override sources, or nil
// for round robin.
func lbPolicy(p *clusterv3.LoadBalancingPolicy, allowOverride bool) ([]OverrideSource, error) {
	var names []string
	for _, pol := range p.GetPolicies() {
		tc := pol.GetTypedExtensionConfig()
		msg, err := tc.GetTypedConfig().UnmarshalNew()
		if err != nil {
			names = append(names, tc.GetName())
			continue
		}
		switch m := msg.(type) {
		case *roundrobinv3.RoundRobin:
			if m.GetSlowStartConfig() != nil {
				return nil, errors.New("round_robin.slow_start_config is not supported")
			}
			return nil, nil
		case *overridehostv3.OverrideHost:
			if !allowOverride {
				return nil, errors.New("override_host cannot be its own fallback")
			}
			var srcs []OverrideSource
			for i, s := range m.GetOverrideHostSources() {
				switch {
				case s.GetHeader() != "" && s.GetMetadata() != nil:
					return nil, fmt.Errorf("override_host_sources[%d]: only one override source must be set", i)
				case s.GetHeader() != "":
					srcs = append(srcs, OverrideSource{Header: strings.ToLower(s.GetHeader())})
				case s.GetMetadata() != nil:
					src := OverrideSource{Namespace: s.GetMetadata().GetKey()}
					for _, seg := range s.GetMetadata().GetPath() {
						src.Path = append(src.Path, seg.GetKey())
					}
					srcs = append(srcs, src)
				default:
					return nil, fmt.Errorf("override_host_sources[%d]: empty override source", i)
				}
			}
			if m.GetFallbackPolicy() == nil {
				return nil, errors.New("override_host.fallback_policy is required")
			}
			if _, err := lbPolicy(m.GetFallbackPolicy(), false); err != nil {
				return nil, fmt.Errorf("override_host.fallback_policy: %w", err)
			}
			if srcs == nil {
				srcs = []OverrideSource{}
			}
			return srcs, nil
		default:
			names = append(names, tc.GetName())
		}
	}
	return nil, fmt.Errorf("no policy the stand-in implements (round_robin, override_host) among %v", names)
}

func decodeAssignment(a *anypb.Any) (string, *endpointSet, error) {
	cla := &endpointv3.ClusterLoadAssignment{}
	if err := a.UnmarshalTo(cla); err != nil {
		return "", nil, fmt.Errorf("not a ClusterLoadAssignment: %w", err)
	}
	if err := cla.ValidateAll(); err != nil {
		return "", nil, fmt.Errorf("assignment %q: %w", cla.GetClusterName(), err)
	}
	if bad := checkUnderstood(cla); len(bad) > 0 {
		return "", nil, fmt.Errorf("assignment %q: the test stand-in does not understand: %s", cla.GetClusterName(), strings.Join(bad, "; "))
	}
	es := &endpointSet{all: map[string]Endpoint{}}
	best := map[uint32][]string{}
	for _, le := range cla.GetEndpoints() {
		for _, lb := range le.GetLbEndpoints() {
			addr, err := socketAddr(lb.GetEndpoint().GetAddress(), "lb_endpoints.endpoint.address")
			if err != nil {
				return "", nil, fmt.Errorf("assignment %q: %w", cla.GetClusterName(), err)
			}
			host, port, _ := net.SplitHostPort(addr)
			if net.ParseIP(host) == nil {
				return "", nil, fmt.Errorf("assignment %q: endpoint %s: EDS endpoints must be IP addresses", cla.GetClusterName(), addr)
			}
			addr = net.JoinHostPort(net.ParseIP(host).String(), port)
			ep := Endpoint{Addr: addr, Health: lb.GetHealthStatus().String(), Priority: le.GetPriority()}
			es.all[addr] = ep
			es.list = append(es.list, ep)
			switch lb.GetHealthStatus() {
			case corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_HEALTHY:
				best[le.GetPriority()] = append(best[le.GetPriority()], addr)
			}
		}
	}
	// Round robin uses the best priority with healthy hosts (Envoy spills
	// over by overprovisioning; our fleet publishes one priority).
	var prios []uint32
	for p := range best {
		prios = append(prios, p)
	}
	sort.Slice(prios, func(i, j int) bool { return prios[i] < prios[j] })
	if len(prios) > 0 {
		es.healthy = best[prios[0]]
	}
	return cla.GetClusterName(), es, nil
}

// adsClient keeps the fleet current from the scheduler's ADS stream; when
// the server goes away it keeps the last config and reconnects.
type adsClient struct {
	cfg   *ADSConfig
	node  *corev3.Node
	conn  *grpc.ClientConn
	fleet *fleet
	log   *zap.Logger
	acks  atomic.Int64
	nacks atomic.Int64
}

func (a *adsClient) run(ctx context.Context) {
	const base, maxBackoff = 500 * time.Millisecond, 30 * time.Second
	backoff := base
	for ctx.Err() == nil {
		start := time.Now()
		var err error
		if a.cfg.Delta {
			err = a.delta(ctx)
		} else {
			err = a.sotw(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 5*time.Second {
			backoff = base
		}
		wait := time.Duration(rand.Int64N(int64(backoff))) + 50*time.Millisecond
		a.log.Warn("ADS stream ended; keeping the last configuration and retrying", zap.Error(err), zap.Duration("retry_in", wait))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

func (a *adsClient) streamCtx(ctx context.Context) context.Context {
	for _, kv := range a.cfg.InitialMetadata {
		ctx = metadata.AppendToOutgoingContext(ctx, kv[0], kv[1])
	}
	return ctx
}

func nackStatus(err error) *statuspb.Status {
	return &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
}

func (a *adsClient) sotw(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(a.conn).StreamAggregatedResources(a.streamCtx(ctx))
	if err != nil {
		return err
	}
	a.fleet.mu.RLock()
	cdsVersion, edsVersion := a.fleet.version["sotw:"+ClusterType], a.fleet.version["sotw:"+EndpointType]
	edsNames := a.fleet.edsNamesLocked()
	a.fleet.mu.RUnlock()
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: a.node, TypeUrl: ClusterType, VersionInfo: cdsVersion}); err != nil {
		return err
	}
	edsNonce := ""
	if len(edsNames) > 0 {
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: a.node, TypeUrl: EndpointType, VersionInfo: edsVersion, ResourceNames: edsNames}); err != nil {
			return err
		}
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		switch resp.GetTypeUrl() {
		case ClusterType:
			clusters := map[string]*DynCluster{}
			var derr error
			for _, r := range resp.GetResources() {
				dc, err := decodeCluster(r)
				if err != nil {
					derr = err
					break
				}
				clusters[dc.Name] = dc
			}
			if derr != nil {
				a.nack(st, &discoveryv3.DiscoveryRequest{Node: a.node, TypeUrl: ClusterType, VersionInfo: cdsVersion, ResponseNonce: resp.GetNonce(), ErrorDetail: nackStatus(derr)}, derr)
				continue
			}
			a.fleet.mu.Lock()
			a.fleet.clusters = clusters
			a.fleet.cdsSeen = true
			cdsVersion = resp.GetVersionInfo()
			a.fleet.version["sotw:"+ClusterType] = cdsVersion
			names := a.fleet.edsNamesLocked()
			for n := range a.fleet.endpoints {
				if !contains(names, n) {
					delete(a.fleet.endpoints, n)
				}
			}
			a.fleet.mu.Unlock()
			a.log.Info("CDS accepted", zap.String("version", cdsVersion), zap.Strings("clusters", sortedKeys(keysOf(clusters))))
			if err := a.ack(st, &discoveryv3.DiscoveryRequest{Node: a.node, TypeUrl: ClusterType, VersionInfo: cdsVersion, ResponseNonce: resp.GetNonce()}); err != nil {
				return err
			}
			if !equalStrings(names, edsNames) {
				edsNames = names
				if err := st.Send(&discoveryv3.DiscoveryRequest{Node: a.node, TypeUrl: EndpointType, VersionInfo: edsVersion, ResourceNames: edsNames, ResponseNonce: edsNonce}); err != nil {
					return err
				}
			}
		case EndpointType:
			edsNonce = resp.GetNonce()
			sets := map[string]*endpointSet{}
			var derr error
			for _, r := range resp.GetResources() {
				name, es, err := decodeAssignment(r)
				if err != nil {
					derr = err
					break
				}
				sets[name] = es
			}
			if derr != nil {
				a.nack(st, &discoveryv3.DiscoveryRequest{Node: a.node, TypeUrl: EndpointType, VersionInfo: edsVersion, ResourceNames: edsNames, ResponseNonce: resp.GetNonce(), ErrorDetail: nackStatus(derr)}, derr)
				continue
			}
			a.applyEndpoints(sets, nil)
			edsVersion = resp.GetVersionInfo()
			a.fleet.mu.Lock()
			a.fleet.version["sotw:"+EndpointType] = edsVersion
			a.fleet.mu.Unlock()
			if err := a.ack(st, &discoveryv3.DiscoveryRequest{Node: a.node, TypeUrl: EndpointType, VersionInfo: edsVersion, ResourceNames: edsNames, ResponseNonce: resp.GetNonce()}); err != nil {
				return err
			}
		default:
			err := fmt.Errorf("type %s was not subscribed to", resp.GetTypeUrl())
			a.nack(st, &discoveryv3.DiscoveryRequest{Node: a.node, TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce(), ErrorDetail: nackStatus(err)}, err)
		}
	}
}

func (a *adsClient) applyEndpoints(sets map[string]*endpointSet, removed []string) {
	a.fleet.mu.Lock()
	defer a.fleet.mu.Unlock()
	for name, es := range sets {
		a.fleet.endpoints[name] = es
		addrs := make([]string, 0, len(es.list))
		for _, e := range es.list {
			addrs = append(addrs, e.Addr+"("+e.Health+")")
		}
		a.log.Info("EDS accepted", zap.String("cluster", name), zap.Strings("endpoints", addrs))
	}
	for _, name := range removed {
		// A removed assignment leaves the cluster with no hosts.
		a.fleet.endpoints[name] = &endpointSet{all: map[string]Endpoint{}}
		a.log.Info("EDS assignment removed", zap.String("cluster", name))
	}
}

type sender[T any] interface{ Send(T) error }

func (a *adsClient) ack(st sender[*discoveryv3.DiscoveryRequest], req *discoveryv3.DiscoveryRequest) error {
	a.acks.Add(1)
	return st.Send(req)
}

func (a *adsClient) nack(st sender[*discoveryv3.DiscoveryRequest], req *discoveryv3.DiscoveryRequest, err error) {
	a.nacks.Add(1)
	a.log.Error("NACK: rejecting xDS update", zap.String("type", req.GetTypeUrl()), zap.Error(err))
	_ = st.Send(req)
}

func (a *adsClient) delta(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(a.conn).DeltaAggregatedResources(a.streamCtx(ctx))
	if err != nil {
		return err
	}
	versions := func(typ string) map[string]string {
		out := map[string]string{}
		prefix := "delta:" + typ + ":"
		for k, v := range a.fleet.version {
			if n, ok := strings.CutPrefix(k, prefix); ok {
				out[n] = v
			}
		}
		return out
	}
	a.fleet.mu.RLock()
	cdsVersions, edsVersions := versions(ClusterType), versions(EndpointType)
	subscribed := a.fleet.edsNamesLocked()
	a.fleet.mu.RUnlock()
	if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: a.node, TypeUrl: ClusterType, InitialResourceVersions: cdsVersions}); err != nil {
		return err
	}
	if len(subscribed) > 0 {
		if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{Node: a.node, TypeUrl: EndpointType, ResourceNamesSubscribe: subscribed, InitialResourceVersions: edsVersions}); err != nil {
			return err
		}
	}
	nack := func(typ, nonce string, err error) {
		a.nacks.Add(1)
		a.log.Error("NACK: rejecting xDS update", zap.String("type", typ), zap.Error(err))
		_ = st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: nonce, ErrorDetail: nackStatus(err)})
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		switch resp.GetTypeUrl() {
		case ClusterType:
			upd := map[string]*DynCluster{}
			var derr error
			for _, r := range resp.GetResources() {
				dc, err := decodeCluster(r.GetResource())
				if err != nil {
					derr = err
					break
				}
				upd[dc.Name] = dc
			}
			if derr != nil {
				nack(ClusterType, resp.GetNonce(), derr)
				continue
			}
			a.fleet.mu.Lock()
			for _, r := range resp.GetResources() {
				a.fleet.clusters[r.GetName()] = upd[r.GetName()]
				a.fleet.version["delta:"+ClusterType+":"+r.GetName()] = r.GetVersion()
			}
			for _, n := range resp.GetRemovedResources() {
				delete(a.fleet.clusters, n)
				delete(a.fleet.version, "delta:"+ClusterType+":"+n)
			}
			a.fleet.cdsSeen = true
			names := a.fleet.edsNamesLocked()
			var sub, unsub []string
			for _, n := range names {
				if !contains(subscribed, n) {
					sub = append(sub, n)
				}
			}
			for _, n := range subscribed {
				if !contains(names, n) {
					unsub = append(unsub, n)
					delete(a.fleet.endpoints, n)
					delete(a.fleet.version, "delta:"+EndpointType+":"+n)
				}
			}
			clusters := sortedKeys(keysOf(a.fleet.clusters))
			a.fleet.mu.Unlock()
			a.log.Info("CDS accepted (delta)", zap.Strings("clusters", clusters))
			a.acks.Add(1)
			if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: ClusterType, ResponseNonce: resp.GetNonce()}); err != nil {
				return err
			}
			if len(sub)+len(unsub) > 0 {
				subscribed = names
				if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: EndpointType, ResourceNamesSubscribe: sub, ResourceNamesUnsubscribe: unsub}); err != nil {
					return err
				}
			}
		case EndpointType:
			sets := map[string]*endpointSet{}
			var derr error
			for _, r := range resp.GetResources() {
				_, es, err := decodeAssignment(r.GetResource())
				if err != nil {
					derr = err
					break
				}
				sets[r.GetName()] = es
			}
			if derr != nil {
				nack(EndpointType, resp.GetNonce(), derr)
				continue
			}
			a.applyEndpoints(sets, resp.GetRemovedResources())
			a.fleet.mu.Lock()
			for _, r := range resp.GetResources() {
				a.fleet.version["delta:"+EndpointType+":"+r.GetName()] = r.GetVersion()
			}
			for _, n := range resp.GetRemovedResources() {
				delete(a.fleet.version, "delta:"+EndpointType+":"+n)
			}
			a.fleet.mu.Unlock()
			a.acks.Add(1)
			if err := st.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: EndpointType, ResponseNonce: resp.GetNonce()}); err != nil {
				return err
			}
		default:
			nack(resp.GetTypeUrl(), resp.GetNonce(), fmt.Errorf("type %s was not subscribed to", resp.GetTypeUrl()))
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func keysOf[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// picker chooses hosts for one request exactly as override_host does: the
// override list is computed once per request, each choice (first try, then
// each retry) consumes the next entry present in the cluster's current host
// set, and when the list is empty or used up the fallback round robin picks.
type picker struct {
	c    *DynCluster
	f    *fleet
	list []string
	next int
}

func newPicker(c *DynCluster, f *fleet, md map[string]any, hdr func(string) (string, bool)) *picker {
	p := &picker{c: c, f: f}
	for _, src := range c.Override {
		var v string
		if src.Header != "" {
			h, ok := hdr(src.Header)
			if !ok {
				continue
			}
			v = h
		} else {
			s, ok := lookupMetadata(md, src.Namespace, src.Path)
			if !ok {
				continue
			}
			v = s
		}
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				p.list = append(p.list, e)
			}
		}
	}
	return p
}

// choose returns the next host, whether it came from the override list, or
// false when the cluster has no healthy host to fall back on.
func (p *picker) choose() (string, bool, bool) {
	_, es := p.f.cluster(p.c.Name)
	if es == nil {
		return "", false, false
	}
	for p.next < len(p.list) {
		h := p.list[p.next]
		p.next++
		if _, ok := es.all[h]; ok {
			return h, true, true
		}
	}
	if len(es.healthy) == 0 {
		return "", false, false
	}
	i := p.c.rr.Add(1) - 1
	return es.healthy[i%uint64(len(es.healthy))], false, true
}

// lookupMetadata reads a string at namespace/path of the request's dynamic
// metadata; override_host accepts only string values.
func lookupMetadata(md map[string]any, ns string, path []string) (string, bool) {
	cur, ok := md[ns]
	if !ok {
		return "", false
	}
	for _, k := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		if cur, ok = m[k]; !ok {
			return "", false
		}
	}
	s, ok := cur.(string)
	return s, ok
}
