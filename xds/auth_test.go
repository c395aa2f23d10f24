package xds

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/llmrouter/llmrouter/internal/config"
)

const testToken = "xds-t0ken_value"

// reportedAs makes a loopback listener report another address, so the
// exposure warning can be tested without binding beyond loopback.
type reportedAs struct {
	net.Listener
	addr net.Addr
}

func (l reportedAs) Addr() net.Addr { return l.addr }

type authFixture struct {
	srv  *Server
	conn *grpc.ClientConn
	logs *observer.ObservedLogs
}

// startAuth serves a Server with token ("" for none) on 127.0.0.1:0, its
// listener reporting reported when not nil.
func startAuth(t *testing.T, token string, reported net.Addr) *authFixture {
	t.Helper()
	cfg := config.Default()
	cfg.Scheduler.XDSToken = token
	core, logs := observer.New(zapcore.DebugLevel)
	s := New(cfg, zap.New(core), prometheus.NewRegistry())
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := tcp.Addr().String()
	lis := tcp
	if reported != nil {
		lis = reportedAs{Listener: tcp, addr: reported}
	}
	return &authFixture{srv: s, conn: serve(t, s, lis, target), logs: logs}
}

// withAuth is what Envoy sends from the bootstrap's initial_metadata.
func withAuth(ctx context.Context, value string) context.Context {
	if value == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", value)
}

// adsRefusal opens an ADS stream with the given authorization value, sends
// Envoy's first request and returns the stream's error.
func adsRefusal(t *testing.T, f *authFixture, auth string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(f.conn).StreamAggregatedResources(withAuth(ctx, auth))
	if err != nil {
		return err
	}
	// The refusal may close the stream before the send lands; Recv has it.
	_ = st.Send(nodeRequest(resource.ClusterType))
	r, err := st.Recv()
	if err == nil {
		t.Fatalf("served a response without the right token: %v", r)
	}
	return err
}

func wantUnauthenticated(t *testing.T, err error, reason string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != codes.Unauthenticated {
		t.Fatalf("got %v, want Unauthenticated", err)
	}
	if !strings.Contains(st.Message(), reason) || !strings.Contains(st.Message(), "llm_scheduler.xds_token") {
		t.Errorf("message %q does not say %q and name llm_scheduler.xds_token", st.Message(), reason)
	}
	if strings.Contains(st.Message(), testToken) {
		t.Errorf("message %q echoes the token", st.Message())
	}
}

// A server with a token refuses ADS clients without it or with another one,
// logs each refusing host once (never a token), counts every refusal, and
// serves CDS and EDS to a client presenting it.
func TestTokenRequiredOnADS(t *testing.T) {
	f := startAuth(t, testToken, nil)
	f.srv.SetEndpoints([]Endpoint{{ID: "a", Address: "10.0.0.1:8000"}})

	wantUnauthenticated(t, adsRefusal(t, f, ""), "no token")
	wantUnauthenticated(t, adsRefusal(t, f, "Bearer not-"+testToken), "wrong token")
	wantUnauthenticated(t, adsRefusal(t, f, testToken), "wrong token") // no "Bearer "
	wantUnauthenticated(t, adsRefusal(t, f, "Bearer "+testToken+"x"), "wrong token")

	if got := value(t, f.srv.m.unauthenticated); got != 4 {
		t.Errorf("llmrouter_xds_unauthenticated_total = %v, want 4", got)
	}
	refusedLogs := f.logs.FilterMessageSnippet("xds client refused")
	if n := refusedLogs.Len(); n != 1 {
		t.Errorf("%d refusal log lines from one host, want 1", n)
	}
	for _, e := range f.logs.All() {
		line := e.Message
		for _, fld := range e.Context {
			line += " " + fld.String
		}
		if strings.Contains(line, testToken) {
			t.Errorf("a log line carries the token: %s", line)
		}
	}
	if refusedLogs.Len() == 1 {
		e := refusedLogs.All()[0]
		if p, _ := e.ContextMap()["peer"].(string); e.Level != zapcore.WarnLevel || !strings.Contains(p, "127.0.0.1:") {
			t.Errorf("refusal logged at %v with fields %v, want a warning naming the peer", e.Level, e.ContextMap())
		}
	}
	if got := value(t, f.srv.m.clients); got != 0 {
		t.Errorf("refused streams reached the xDS server: %v open", got)
	}

	// The right token: Envoy's subscription goes through.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := discovery.NewAggregatedDiscoveryServiceClient(f.conn).StreamAggregatedResources(withAuth(ctx, "Bearer "+testToken))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(nodeRequest(resource.ClusterType)); err != nil {
		t.Fatal(err)
	}
	cds, err := st.Recv()
	if err != nil {
		t.Fatalf("with the token: %v", err)
	}
	if cl := clusterOf(t, cds.GetResources()); cl.GetName() != clusterName || cl.GetType() != clusterv3.Cluster_EDS {
		t.Fatalf("cluster %v", cl)
	}
	if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: resource.ClusterType, VersionInfo: cds.GetVersionInfo(), ResponseNonce: cds.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: []string{clusterName}}); err != nil {
		t.Fatal(err)
	}
	eds, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	want(t, sotwAddresses(t, eds), "10.0.0.1:8000")
	if got := value(t, f.srv.m.unauthenticated); got != 4 {
		t.Errorf("an authenticated stream counted as refused: %v", got)
	}
}

// Every xDS service behind the port demands the token: delta ADS, the plain
// EDS stream an existing Envoy uses, and the unary fetch.
func TestTokenRequiredOnEveryService(t *testing.T) {
	f := startAuth(t, testToken, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	delta, err := discovery.NewAggregatedDiscoveryServiceClient(f.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = delta.Send(&discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ClusterType})
	_, err = delta.Recv()
	wantUnauthenticated(t, err, "no token")

	eds, err := endpointservice.NewEndpointDiscoveryServiceClient(f.conn).StreamEndpoints(withAuth(ctx, "Bearer wrong"))
	if err != nil {
		t.Fatal(err)
	}
	_ = eds.Send(nodeRequest(resource.EndpointType, clusterName))
	_, err = eds.Recv()
	wantUnauthenticated(t, err, "wrong token")

	_, err = endpointservice.NewEndpointDiscoveryServiceClient(f.conn).FetchEndpoints(ctx, nodeRequest(resource.EndpointType, clusterName))
	wantUnauthenticated(t, err, "no token")

	// The plain EDS stream with the token is served.
	f.srv.SetEndpoints([]Endpoint{{ID: "a", Address: "10.0.0.1:8000"}})
	ok, err := endpointservice.NewEndpointDiscoveryServiceClient(f.conn).StreamEndpoints(withAuth(ctx, "Bearer "+testToken))
	if err != nil {
		t.Fatal(err)
	}
	if err := ok.Send(nodeRequest(resource.EndpointType, clusterName)); err != nil {
		t.Fatal(err)
	}
	r, err := ok.Recv()
	if err != nil {
		t.Fatalf("plain EDS with the token: %v", err)
	}
	want(t, sotwAddresses(t, r), "10.0.0.1:8000")
}

// Without a token the port stays open (existing deploys), and a port beyond
// loopback says so once at startup; loopback, or a token, does not.
func TestOpenPortWarning(t *testing.T) {
	everywhere := &net.TCPAddr{IP: net.IPv6unspecified, Port: 18000}
	for _, tc := range []struct {
		name     string
		token    string
		reported net.Addr
		warn     bool
	}{
		{"open beyond loopback", "", everywhere, true},
		{"open on loopback", "", nil, false},
		{"token beyond loopback", testToken, everywhere, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startAuth(t, tc.token, tc.reported)
			deadline := time.Now().Add(10 * time.Second)
			for f.logs.FilterMessage("xds serving").Len() == 0 {
				if time.Now().After(deadline) {
					t.Fatal("server did not log its start")
				}
				time.Sleep(10 * time.Millisecond)
			}
			warned := f.logs.FilterMessageSnippet("xds port open").Len()
			if (warned == 1) != tc.warn || warned > 1 {
				t.Errorf("%d open-port warnings, want warn=%v", warned, tc.warn)
			}
			if tc.token == "" {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				st, err := discovery.NewAggregatedDiscoveryServiceClient(f.conn).StreamAggregatedResources(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := st.Send(nodeRequest(resource.ClusterType)); err != nil {
					t.Fatal(err)
				}
				if _, err := st.Recv(); err != nil {
					t.Fatalf("a tokenless server refused a tokenless client: %v", err)
				}
			}
		})
	}
}

func TestRefusalsBounded(t *testing.T) {
	r := newRefusals()
	if !r.first("10.0.0.1") || r.first("10.0.0.1") {
		t.Fatal("a host is new once")
	}
	for i := range maxRefusedPeers * 3 {
		r.first(net.IPv4(10, 1, byte(i>>8), byte(i)).String())
		if len(r.seen) > maxRefusedPeers {
			t.Fatalf("%d hosts remembered, bound %d", len(r.seen), maxRefusedPeers)
		}
	}
}

func TestLoopback(t *testing.T) {
	for addr, want := range map[net.Addr]bool{
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}: true,
		&net.TCPAddr{IP: net.IPv6loopback}:       true,
		&net.TCPAddr{IP: net.IPv4zero}:           false,
		&net.TCPAddr{IP: net.IPv4(10, 0, 0, 5)}:  false,
		&net.UnixAddr{Name: "/run/xds.sock"}:     true,
	} {
		if got := loopback(addr); got != want {
			t.Errorf("loopback(%v) = %v, want %v", addr, got, want)
		}
	}
}

// The xDS port answers the standard gRPC health check, without the token
// (probes carry no secrets), as the scheduler's API port does.
func TestHealthServiceWithoutToken(t *testing.T) {
	f := startAuth(t, testToken, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(f.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check on the xDS port: %v, %v", r, err)
	}
}
