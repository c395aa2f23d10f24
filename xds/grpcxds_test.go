package xds

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcxds "google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/anypb"
)

// apiListener is the LDS resource a proxyless gRPC client needs before it
// asks for clusters: an API listener routing everything to the engine
// cluster. Envoy never sees it; only this test serves it.
func apiListener(t *testing.T, name string) *listenerv3.Listener {
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		t.Fatal(err)
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix: "grpc",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: "grpc",
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    "all",
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: clusterName}}},
				}},
			}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: hcm}}
}

// grpc-go's own xDS client consumes our CDS and EDS: a channel to
// xds:///llm resolves through LDS (test-only), our cluster (it takes the
// round robin entry of the policy list) and our endpoint assignment, and an
// RPC reaches the endpoint we published.
func TestGRPCXDSClientAcceptsOurResources(t *testing.T) {
	f := start(t, 50*time.Millisecond, func(s *Server) {
		lds := cachev3.NewLinearCache(resource.ListenerType,
			cachev3.WithInitialResources(map[string]types.Resource{"llm": apiListener(t, "llm")}))
		s.mux.Caches[resource.ListenerType] = lds
	})

	backend := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(backend, hs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = backend.Serve(lis) }()
	defer backend.Stop()
	f.srv.SetEndpoints([]Endpoint{{ID: "backend", Address: lis.Addr().String()}})

	bootstrap := fmt.Sprintf(`{
		"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": "grpc-test-client", "cluster": "test"}
	}`, f.addr)
	rb, err := grpcxds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///llm", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(rb))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("RPC through grpc's xDS client: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("status %v", resp.GetStatus())
	}
	for _, typ := range []string{resource.ListenerType, resource.ClusterType, resource.EndpointType} {
		if n := value(t, f.srv.m.nacks.WithLabelValues(typ)); n != 0 {
			t.Errorf("grpc's xDS client rejected %s (%v NACKs)", typ, n)
		}
		if n := value(t, f.srv.m.pushes.WithLabelValues(typ)); n < 1 {
			t.Errorf("no %s response sent", typ)
		}
	}
}
