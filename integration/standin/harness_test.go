package standin

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/llmrouter/llmrouter/bootstrap"
	"github.com/llmrouter/llmrouter/envoy"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/servetest"
	"github.com/llmrouter/llmrouter/xds"
)

// fakeProc is an ext_proc server playing the gateway: on request headers it
// removes any client-sent x-gateway-destination-endpoint; on the body (or on
// headers when there is no body) it writes the pick as header and envoy.lb
// metadata. Observability messages are recorded.
type fakeProc struct {
	extprocsvc.UnimplementedExternalProcessorServer
	mu sync.Mutex
	// pick returns the pick for a request ("" = none).
	pick func(path string) string
	// immediate, when set, answers request headers with it.
	immediate *extprocsvc.ImmediateResponse
	// bodyDelay delays the body answer; overrideFirst sends
	// override_message_timeout before waiting.
	bodyDelay     time.Duration
	overrideFirst *durationpb.Duration
	// extraMutation is added to the body answer.
	extraMutation []*corev3.HeaderValueOption
	blocking      []*extprocsvc.ProcessingRequest
	observed      []*extprocsvc.ProcessingRequest
}

func (f *fakeProc) Process(st extprocsvc.ExternalProcessor_ProcessServer) error {
	var path string
	for {
		req, err := st.Recv()
		if err != nil {
			return nil
		}
		f.mu.Lock()
		if req.GetObservabilityMode() {
			f.observed = append(f.observed, req)
			f.mu.Unlock()
			continue
		}
		f.blocking = append(f.blocking, req)
		imm, pickFn, delay, override, extra := f.immediate, f.pick, f.bodyDelay, f.overrideFirst, f.extraMutation
		f.mu.Unlock()
		var resp *extprocsvc.ProcessingResponse
		switch r := req.GetRequest().(type) {
		case *extprocsvc.ProcessingRequest_RequestHeaders:
			for _, h := range r.RequestHeaders.GetHeaders().GetHeaders() {
				if h.GetKey() == ":path" {
					path = string(h.GetRawValue())
				}
			}
			if imm != nil {
				resp = &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_ImmediateResponse{ImmediateResponse: imm}}
				break
			}
			common := &extprocsvc.CommonResponse{HeaderMutation: &extprocsvc.HeaderMutation{RemoveHeaders: []string{envoy.DestinationKey}}}
			resp = &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocsvc.HeadersResponse{Response: common}}}
			if r.RequestHeaders.GetEndOfStream() || isUpgrade(r.RequestHeaders) {
				f.decorate(resp, common, pickFn, path, nil)
			}
		case *extprocsvc.ProcessingRequest_RequestBody:
			if override != nil {
				if err := st.Send(&extprocsvc.ProcessingResponse{OverrideMessageTimeout: override}); err != nil {
					return nil
				}
			}
			time.Sleep(delay)
			common := &extprocsvc.CommonResponse{HeaderMutation: &extprocsvc.HeaderMutation{}}
			resp = &extprocsvc.ProcessingResponse{Response: &extprocsvc.ProcessingResponse_RequestBody{RequestBody: &extprocsvc.BodyResponse{Response: common}}}
			f.decorate(resp, common, pickFn, path, extra)
		default:
			return fmt.Errorf("unexpected blocking message %T", r)
		}
		if err := st.Send(resp); err != nil {
			return nil
		}
	}
}

func isUpgrade(h *extprocsvc.HttpHeaders) bool {
	for _, e := range h.GetHeaders().GetHeaders() {
		if e.GetKey() == "upgrade" {
			return true
		}
	}
	return false
}

func (f *fakeProc) decorate(resp *extprocsvc.ProcessingResponse, common *extprocsvc.CommonResponse, pickFn func(string) string, path string, extra []*corev3.HeaderValueOption) {
	common.HeaderMutation.SetHeaders = append(common.HeaderMutation.SetHeaders, extra...)
	if pickFn == nil {
		return
	}
	pick := pickFn(path)
	if pick == "" {
		return
	}
	common.HeaderMutation.SetHeaders = append(common.HeaderMutation.SetHeaders, &corev3.HeaderValueOption{
		Header: &corev3.HeaderValue{Key: envoy.DestinationKey, RawValue: []byte(pick)}})
	md, _ := structpb.NewStruct(map[string]any{envoy.MetadataNamespace: map[string]any{envoy.DestinationKey: pick},
		"ignored.namespace": map[string]any{"k": "v"}})
	resp.DynamicMetadata = md
}

func (f *fakeProc) set(fn func(f *fakeProc)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeProc) observedCopy() []*extprocsvc.ProcessingRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*extprocsvc.ProcessingRequest(nil), f.observed...)
}

func (f *fakeProc) blockingCopy() []*extprocsvc.ProcessingRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*extprocsvc.ProcessingRequest(nil), f.blocking...)
}

// upstream is a fake engine that names itself in every answer.
type upstream struct {
	name string
	srv  *httptest.Server
	mu   sync.Mutex
	seen []http.Header
	hits int
}

func (u *upstream) addr() string { return u.srv.Listener.Addr().String() }

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits
}

func (u *upstream) lastHeaders() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		return nil
	}
	return u.seen[len(u.seen)-1]
}

type env struct {
	t        *testing.T
	s        *Server
	proc     *fakeProc
	procAddr string
	ups      []*upstream
	cache    cache.SnapshotCache
	version  int
	xdsAddr  string
	xdsGRPC  *grpc.Server
	xdsStop  context.CancelFunc
	client   *http.Client
}

type envOpts struct {
	upstreams int
	// yaml rewrites the testdata bootstrap before loading.
	yaml func(string) string
	// procDown points the extproc cluster at a closed port.
	procDown bool
	// handler serves every upstream path (default: name + echo).
	handler func(u *upstream) http.HandlerFunc
}

func closedAddr(t *testing.T) string { return servetest.FreeAddr(t) }

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	if o.upstreams == 0 {
		o.upstreams = 3
	}
	e := &env{t: t, proc: &fakeProc{}}
	// ext_proc
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pg := grpc.NewServer()
	extprocsvc.RegisterExternalProcessorServer(pg, e.proc)
	go func() { _ = pg.Serve(pl) }()
	t.Cleanup(pg.Stop)
	e.procAddr = pl.Addr().String()
	if o.procDown {
		e.procAddr = closedAddr(t)
	}
	// upstreams
	for i := 0; i < o.upstreams; i++ {
		u := &upstream{name: "up" + strconv.Itoa(i)}
		h := defaultHandler(u)
		if o.handler != nil {
			h = o.handler(u)
		}
		u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u.mu.Lock()
			u.hits++
			u.seen = append(u.seen, r.Header.Clone())
			u.mu.Unlock()
			h(w, r)
		}))
		t.Cleanup(u.srv.Close)
		e.ups = append(e.ups, u)
	}
	// ADS
	e.cache = cache.NewSnapshotCache(true, cache.IDHash{}, nil)
	// Not :0: TestXDSServerGoneKeepsLastConfig serves it again on this
	// address after the stand-in redialled it (see servetest.FreeAddr).
	e.xdsAddr = servetest.FreeAddr(t)
	e.startXDS()
	e.push(e.addrs()...)
	// stand-in
	raw, err := os.ReadFile("testdata/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	y := string(raw)
	if o.yaml != nil {
		y = o.yaml(y)
	}
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadBootstrap(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, Options{ListenOverride: "127.0.0.1:0", AdminOverride: "127.0.0.1:0",
		ClusterOverrides: map[string]string{"extproc": e.procAddr, "xds_cluster": e.xdsAddr},
		Logger:           zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	e.s = s
	select {
	case <-s.Ready():
	case <-time.After(15 * time.Second):
		t.Fatal("stand-in did not initialize from xDS")
	}
	e.client = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	t.Cleanup(e.client.CloseIdleConnections)
	return e
}

func defaultHandler(u *upstream) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("x-upstream", u.name)
		fmt.Fprintf(w, "%s:%s", u.name, body)
	}
}

func (e *env) startXDS() {
	addr := e.xdsAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var l net.Listener
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		if l, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	e.xdsAddr = l.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	srv := xdsserver.NewServer(ctx, e.cache, nil)
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, srv)
	go func() { _ = g.Serve(l) }()
	e.xdsGRPC, e.xdsStop = g, cancel
	e.t.Cleanup(func() { g.Stop(); cancel() })
}

func (e *env) stopXDS() {
	e.xdsGRPC.Stop()
	e.xdsStop()
}

func (e *env) addrs() []string {
	var out []string
	for _, u := range e.ups {
		out = append(out, u.addr())
	}
	return out
}

// push publishes llm_backends (as package envoy builds it for the xDS
// server) with the given endpoints.
func (e *env) push(addrs ...string) {
	e.t.Helper()
	e.version++
	var eps []envoy.Endpoint
	for _, a := range addrs {
		eps = append(eps, envoy.Endpoint{Address: a, Hostname: a})
	}
	o := envoy.DefaultOptions()
	cla, err := envoy.LoadAssignment(o.ClusterName, eps)
	if err != nil {
		e.t.Fatal(err)
	}
	snap, err := cache.NewSnapshot(strconv.Itoa(e.version), map[resource.Type][]types.Resource{
		resource.ClusterType:  {envoy.BackendCluster(o)},
		resource.EndpointType: {cla},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.cache.SetSnapshot(context.Background(), "standin-test", snap); err != nil {
		e.t.Fatal(err)
	}
}

// waitEndpoints polls the stand-in's EDS view until it equals want.
func (e *env) waitEndpoints(want ...string) {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var got []string
		for _, ep := range e.s.Endpoints("llm_backends") {
			got = append(got, ep.Addr)
		}
		if strings.Join(got, ",") == strings.Join(sorted(want), ",") {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("EDS set %v, want %v", got, sorted(want))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func (e *env) url(path string) string { return "http://" + e.s.Addr() + path }

// post sends a chat-completion-like request and returns status, body and
// headers.
func (e *env) post(path, body string, hdr map[string]string) (int, string, http.Header) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url(path), strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("content-type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

func (e *env) counts() []int {
	var out []int
	for _, u := range e.ups {
		out = append(out, u.count())
	}
	return out
}

// serveXDS runs our xDS server for cfg on 127.0.0.1:0 until the test ends.
func serveXDS(t *testing.T, cfg config.Config, reg prometheus.Registerer) (*xds.Server, string) {
	t.Helper()
	xs := xds.New(cfg, zaptest.NewLogger(t), reg)
	t.Cleanup(xs.Close)
	addr, _ := servetest.Loopback(t, xs)
	return xs, addr
}

// startRendering runs the stand-in on `llmrouter bootstrap`'s rendering of
// o, its xDS cluster at xdsAddr and its ext_proc cluster at a port nothing
// listens on, until the test ends.
func startRendering(t *testing.T, o bootstrap.Options, xdsAddr string) *Server {
	t.Helper()
	y, err := bootstrap.Render(o)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, y, 0o600); err != nil {
		t.Fatal(err)
	}
	bc, err := LoadBootstrap(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(bc, Options{ListenOverride: "127.0.0.1:0", AdminOverride: "127.0.0.1:0",
		ClusterOverrides: map[string]string{"xds_cluster": xdsAddr, "extproc": "127.0.0.1:9"},
		Logger:           zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
