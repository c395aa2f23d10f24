package envoy

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	overridehostv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/override_host/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Extension names Envoy logs and matches typed configs by.
const (
	overrideHostPolicyName = "envoy.load_balancing_policies.override_host"
	roundRobinPolicyName   = "envoy.load_balancing_policies.round_robin"
	httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// highLimit raises Envoy's circuit breakers (default 1024 requests, 3
// concurrent retries) far above what a fleet of engines can hold: an LLM
// stream lives for minutes, so concurrency is high while the rate is low, and
// admission is the scheduler's job, not the breaker's.
const highLimit = 1_000_000

// mustAny packs m deterministically (map entries sorted), so equal configs
// pack to equal bytes and a push is not mistaken for a change; it cannot fail
// for the generated messages we pass.
func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(fmt.Sprintf("envoy: packing %T: %v", m, err))
	}
	return a
}

// BackendCluster is the engine fleet's cluster: endpoints from EDS over ADS,
// hosts chosen by override_host from the pick the gateway wrote into the
// request's dynamic metadata, round robin when there is no (usable) pick.
//
// The load_balancing_policy list names override_host first and round robin
// second. A client uses the first policy it supports: Envoy ≥ 1.35 uses
// override_host; proxyless gRPC clients (and an Envoy too old for
// override_host) fall back to plain round robin instead of rejecting the
// cluster, which is the degraded mode of the whole system anyway.
func BackendCluster(o Options) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 o.ClusterName,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig: edsConfigSource(o),
		},
		ConnectTimeout:                durationpb.New(o.ConnectTimeout),
		LoadBalancingPolicy:           backendLBPolicy(),
		CircuitBreakers:               highCircuitBreakers(),
		TypedExtensionProtocolOptions: httpProtocolOptions(o.UpstreamHTTP2, o.UpstreamIdleTimeout),
		UpstreamConnectionOptions: &clusterv3.UpstreamConnectionOptions{
			// Streams last minutes; keepalive notices an engine host that vanished.
			TcpKeepalive: &corev3.TcpKeepalive{},
		},
	}
}

func backendLBPolicy() *clusterv3.LoadBalancingPolicy {
	roundRobin := &clusterv3.LoadBalancingPolicy_Policy{
		TypedExtensionConfig: &corev3.TypedExtensionConfig{
			Name:        roundRobinPolicyName,
			TypedConfig: mustAny(&roundrobinv3.RoundRobin{}),
		},
	}
	override := &overridehostv3.OverrideHost{
		// Metadata only, never the header: a client-sent header must not steer
		// routing while the gateway fails open.
		OverrideHostSources: []*overridehostv3.OverrideHost_OverrideHostSource{{
			Metadata: &metadatav3.MetadataKey{
				Key:  MetadataNamespace,
				Path: []*metadatav3.MetadataKey_PathSegment{{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: DestinationKey}}},
			},
		}},
		FallbackPolicy: &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{roundRobin}},
	}
	return &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{
		{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: overrideHostPolicyName, TypedConfig: mustAny(override)}},
		proto.Clone(roundRobin).(*clusterv3.LoadBalancingPolicy_Policy),
	}}
}

func highCircuitBreakers() *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		Priority:           corev3.RoutingPriority_DEFAULT,
		MaxConnections:     wrapperspb.UInt32(highLimit),
		MaxPendingRequests: wrapperspb.UInt32(highLimit),
		MaxRequests:        wrapperspb.UInt32(highLimit),
		MaxRetries:         wrapperspb.UInt32(highLimit),
	}}}
}

func httpProtocolOptions(http2 bool, idle time.Duration) map[string]*anypb.Any {
	explicit := &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
		ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
	}
	if http2 {
		explicit.ProtocolConfig = &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
			Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
				// Pings find a dead peer on a connection that carries long streams.
				ConnectionKeepalive: &corev3.KeepaliveSettings{Interval: durationpb.New(30 * time.Second), Timeout: durationpb.New(10 * time.Second)},
			},
		}
	}
	opts := &upstreamhttpv3.HttpProtocolOptions{
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(idle)},
		UpstreamProtocolOptions:   &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: explicit},
	}
	return map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(opts)}
}

func edsConfigSource(o Options) *corev3.ConfigSource {
	if o.EDSCluster == "" {
		return adsConfigSource()
	}
	api := corev3.ApiConfigSource_GRPC
	if o.EDSDelta {
		api = corev3.ApiConfigSource_DELTA_GRPC
	}
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType:             api,
			TransportApiVersion: corev3.ApiVersion_V3,
			GrpcServices:        []*corev3.GrpcService{XDSGrpcService(o.EDSCluster, o.EDSToken)},
		}},
		ResourceApiVersion: corev3.ApiVersion_V3,
	}
}

// XDSGrpcService is Envoy's gRPC client of the scheduler's xDS server on
// cluster. With a token (llm_scheduler.xds_token) every stream carries
// "authorization: Bearer <token>" as initial metadata, which the xDS server
// demands when it has one.
func XDSGrpcService(cluster, token string) *corev3.GrpcService {
	return tokenGrpcService(cluster, token)
}

// tokenGrpcService is a gRPC service on a static cluster that presents token
// ("authorization: Bearer <token>") on every stream when token is set.
func tokenGrpcService(cluster, token string) *corev3.GrpcService {
	gs := grpcService(cluster)
	if token != "" {
		gs.InitialMetadata = []*corev3.HeaderValue{{Key: "authorization", Value: "Bearer " + token}}
	}
	return gs
}

// ADSConfigSource says "over the aggregated stream" (CDS and EDS of ours).
func ADSConfigSource() *corev3.ConfigSource { return adsConfigSource() }

func adsConfigSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}
}

// GRPCCluster is a static cluster for one gRPC server (the xDS server, the
// ext_proc gateway): HTTP/2, keepalive pings, breakers raised (every client
// request opens an ext_proc stream). A host that is not an IP literal is
// resolved by DNS (STRICT_DNS), as in docker-compose or Kubernetes.
func GRPCCluster(name, address string) (*clusterv3.Cluster, error) {
	host, port, err := SplitAddress(address)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", name, err)
	}
	typ := clusterv3.Cluster_STATIC
	if _, err := netip.ParseAddr(host); err != nil {
		typ = clusterv3.Cluster_STRICT_DNS
	}
	return &clusterv3.Cluster{
		Name:                          name,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: typ},
		ConnectTimeout:                durationpb.New(time.Second),
		CircuitBreakers:               highCircuitBreakers(),
		TypedExtensionProtocolOptions: httpProtocolOptions(true, time.Hour),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint(host, port, "", corev3.HealthStatus_UNKNOWN)},
			}},
		},
	}, nil
}

// Endpoint is one routable engine instance.
type Endpoint struct {
	// Address is ip:port, as the pick names it (override_host keys hosts by it).
	Address string
	// Hostname labels the host in Envoy's admin output and logs (the instance ID).
	Hostname string
}

// LoadAssignment is the EDS resource of cluster: every endpoint HEALTHY
// (the scheduler publishes only routable instances; a draining or unhealthy
// one leaves the set instead of being marked). One locality with weight 1,
// which Envoy ignores without locality-weighted balancing and which gRPC's
// xDS client needs (it drops localities of weight 0).
func LoadAssignment(cluster string, endpoints []Endpoint) (*endpointv3.ClusterLoadAssignment, error) {
	lbs := make([]*endpointv3.LbEndpoint, 0, len(endpoints))
	for _, e := range endpoints {
		host, port, err := SplitAddress(e.Address)
		if err != nil {
			return nil, fmt.Errorf("endpoint %s: %w", e.Hostname, err)
		}
		if _, err := netip.ParseAddr(host); err != nil {
			return nil, fmt.Errorf("endpoint %s: address %q: want ip:port", e.Hostname, e.Address)
		}
		lbs = append(lbs, lbEndpoint(host, port, e.Hostname, corev3.HealthStatus_HEALTHY))
	}
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: cluster,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{
			Locality:            &corev3.Locality{},
			LoadBalancingWeight: wrapperspb.UInt32(1),
			LbEndpoints:         lbs,
		}},
	}, nil
}

func lbEndpoint(host string, port uint32, hostname string, hs corev3.HealthStatus) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{
		HealthStatus: hs,
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address:  socketAddress(host, port),
			Hostname: hostname,
		}},
	}
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// SplitAddress splits host:port; an empty host means every interface
// (0.0.0.0). It accepts DNS names; callers that need an IP check themselves.
func SplitAddress(address string) (host string, port uint32, err error) {
	h, p, err := net.SplitHostPort(address)
	if err != nil {
		return "", 0, fmt.Errorf("address %q: want host:port: %w", address, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 || n > math.MaxUint16 {
		return "", 0, fmt.Errorf("address %q: port must be 1-65535", address)
	}
	if h == "" {
		h = "0.0.0.0"
	}
	return h, uint32(n), nil
}
