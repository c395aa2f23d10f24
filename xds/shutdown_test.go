package xds

import (
	"testing"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/servetest"
)

// TestServeReturnsAfterItsStreams: when Serve returns, every ADS stream it
// served has ended, its close counted and logged. A stream handler still
// running after Serve returned logged into whatever came next: a test's
// logger after the test had ended (a data race, seen under -race in
// integration/standin), a process's after its logger was flushed.
func TestServeReturnsAfterItsStreams(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	reg := prometheus.NewRegistry()
	s := New(config.Default(), zap.New(core), reg)
	t.Cleanup(s.Close)
	addr, stop := servetest.Loopback(t, s)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f := &fixture{addr: addr, srv: s, reg: reg, conn: conn}

	const streams = 4
	for i := range streams {
		if i%2 == 0 {
			subscribeSotW(t, f)
			continue
		}
		c := f.delta(t)
		c.send(t, &discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ClusterType, ResourceNamesSubscribe: []string{"*"}})
		c.next(t, resource.ClusterType, initialWait)
	}
	if got := value(t, s.m.clients); got != streams {
		t.Fatalf("llmrouter_xds_connected_clients = %v with %d streams open", got, streams)
	}

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := value(t, s.m.clients); got != 0 {
		t.Fatalf("llmrouter_xds_connected_clients = %v once Serve returned, want 0: a stream outlived Serve", got)
	}
	if n := logs.FilterMessage("xds client disconnected").Len(); n != streams {
		t.Fatalf("%d of %d streams logged their end before Serve returned", n, streams)
	}
}
