package standin

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocsvc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/llmrouter/llmrouter/envoy"
)

const chatBody = `{"model":"m","messages":[{"role":"user","content":"hi"}]}`

func TestPickInMetadataRoutesToThatUpstream(t *testing.T) {
	e := newEnv(t, envOpts{})
	target := e.ups[2]
	e.proc.set(func(f *fakeProc) { f.pick = func(string) string { return target.addr() } })
	for i := 0; i < 6; i++ {
		status, body, _ := e.post("/v1/chat/completions", chatBody, nil)
		if status != 200 || body != "up2:"+chatBody {
			t.Fatalf("status %d body %q", status, body)
		}
	}
	if got := e.counts(); got[0] != 0 || got[1] != 0 || got[2] != 6 {
		t.Fatalf("hits %v, want all on up2", got)
	}
	h := target.lastHeaders()
	if h.Get("x-gateway-destination-endpoint") != target.addr() {
		t.Errorf("upstream saw pick header %q", h.Get("x-gateway-destination-endpoint"))
	}
	if h.Get("x-request-id") == "" || h.Get("x-forwarded-proto") != "http" {
		t.Errorf("upstream headers %v", h)
	}
	// Envoy's message sequence: request_headers (end_of_stream false, raw
	// values only, pseudo-headers present), then one buffered body.
	msgs := e.proc.blockingCopy()
	if len(msgs) < 2 {
		t.Fatalf("%d blocking messages", len(msgs))
	}
	rh := msgs[0].GetRequestHeaders()
	if rh == nil || rh.GetEndOfStream() || msgs[0].GetProtocolConfig() == nil {
		t.Fatalf("first message %v", msgs[0])
	}
	seen := map[string]string{}
	for _, hv := range rh.GetHeaders().GetHeaders() {
		if hv.GetValue() != "" {
			t.Errorf("header %s sent in value, want raw_value only", hv.GetKey())
		}
		seen[hv.GetKey()] = string(hv.GetRawValue())
	}
	if seen[":path"] != "/v1/chat/completions" || seen[":method"] != "POST" || seen["x-request-id"] == "" || seen["content-type"] != "application/json" {
		t.Errorf("request headers %v", seen)
	}
	rb := msgs[1].GetRequestBody()
	if rb == nil || !rb.GetEndOfStream() || string(rb.GetBody()) != chatBody {
		t.Errorf("second message %v", msgs[1])
	}
}

func TestClientHeaderAloneDoesNotSteer(t *testing.T) {
	// The processor makes no pick and (like a gateway that is failing
	// open) leaves the client's header: routing must ignore it.
	e := newEnv(t, envOpts{})
	e.proc.set(func(f *fakeProc) { f.pick = nil })
	for i := 0; i < 9; i++ {
		if status, _, _ := e.post("/v1/chat/completions", chatBody, map[string]string{"x-gateway-destination-endpoint": e.ups[0].addr()}); status != 200 {
			t.Fatalf("status %d", status)
		}
	}
	if got := e.counts(); got[0] != 3 || got[1] != 3 || got[2] != 3 {
		t.Fatalf("hits %v, want round robin 3/3/3", got)
	}
}

func TestPickOutsideEDSFallsBackToRoundRobin(t *testing.T) {
	e := newEnv(t, envOpts{})
	outside := closedAddr(t)
	e.proc.set(func(f *fakeProc) { f.pick = func(string) string { return outside + ", 10.255.255.1:80" } })
	for i := 0; i < 6; i++ {
		if status, _, _ := e.post("/v1/completions", `{"prompt":"x"}`, nil); status != 200 {
			t.Fatalf("status %d", status)
		}
	}
	if got := e.counts(); got[0] != 2 || got[1] != 2 || got[2] != 2 {
		t.Fatalf("hits %v, want round robin 2/2/2", got)
	}
}

func TestRetriesWalkThePick(t *testing.T) {
	e := newEnv(t, envOpts{})
	dead := closedAddr(t) // in EDS, refuses connections
	e.push(append(e.addrs(), dead)...)
	e.waitEndpoints(append(e.addrs(), dead)...)
	e.proc.set(func(f *fakeProc) {
		f.pick = func(string) string { return dead + "," + e.ups[1].addr() + "," + e.ups[2].addr() }
	})
	for i := 0; i < 4; i++ {
		status, body, _ := e.post("/v1/chat/completions", chatBody, nil)
		if status != 200 || !strings.HasPrefix(body, "up1:") {
			t.Fatalf("status %d body %q: the retry must take the next entry of the pick", status, body)
		}
	}
	if got := e.counts(); got[1] != 4 || got[0]+got[2] != 0 {
		t.Fatalf("hits %v", got)
	}
}

func TestRetryableStatusWalksThePick(t *testing.T) {
	e := newEnv(t, envOpts{handler: func(u *upstream) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if u.name == "up0" {
				http.Error(w, "overloaded", http.StatusServiceUnavailable)
				return
			}
			defaultHandler(u)(w, r)
		}
	}})
	e.proc.set(func(f *fakeProc) { f.pick = func(string) string { return e.ups[0].addr() + "," + e.ups[2].addr() } })
	status, body, _ := e.post("/v1/chat/completions", chatBody, nil)
	if status != 200 || !strings.HasPrefix(body, "up2:") {
		t.Fatalf("status %d body %q", status, body)
	}
	if got := e.counts(); got[0] != 1 || got[2] != 1 {
		t.Fatalf("hits %v", got)
	}
}

func TestNoPickRoundRobinEven(t *testing.T) {
	e := newEnv(t, envOpts{})
	for i := 0; i < 30; i++ {
		if status, _, _ := e.post("/v1/models", "", nil); status != 200 {
			t.Fatalf("status %d", status)
		}
	}
	if got := e.counts(); got[0] != 10 || got[1] != 10 || got[2] != 10 {
		t.Fatalf("hits %v, want 10/10/10", got)
	}
}

func TestExtProcDownFailsOpen(t *testing.T) {
	e := newEnv(t, envOpts{procDown: true})
	for i := 0; i < 6; i++ {
		if status, _, _ := e.post("/v1/chat/completions", chatBody, nil); status != 200 {
			t.Fatalf("status %d with failure_mode_allow", status)
		}
	}
	if got := e.counts(); got[0] != 2 || got[1] != 2 || got[2] != 2 {
		t.Fatalf("hits %v", got)
	}
}

func TestExtProcFailureClosed(t *testing.T) {
	// failure_mode_allow false on the pick filter: a processor slower than
	// message_timeout gets 504, an unreachable one 500.
	e := newEnv(t, envOpts{yaml: func(y string) string {
		return strings.Replace(y, "failure_mode_allow: true", "failure_mode_allow: false", 1)
	}})
	e.proc.set(func(f *fakeProc) {
		f.pick = func(string) string { return e.ups[0].addr() }
		f.bodyDelay = 700 * time.Millisecond
	})
	if status, _, _ := e.post("/v1/chat/completions", chatBody, nil); status != 504 {
		t.Fatalf("status %d, want 504 on message timeout", status)
	}
	if got := e.counts(); got[0]+got[1]+got[2] != 0 {
		t.Fatalf("upstream reached: %v", got)
	}
}

func TestMessageTimeoutAndOverride(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.proc.set(func(f *fakeProc) {
		f.pick = func(string) string { return e.ups[1].addr() }
		f.bodyDelay = 600 * time.Millisecond // > message_timeout 200ms
	})
	// Without an override the filter times out and fails open: no pick.
	for i := 0; i < 3; i++ {
		if status, _, _ := e.post("/v1/chat/completions", chatBody, nil); status != 200 {
			t.Fatalf("status %d", status)
		}
	}
	if got := e.counts(); got[0] != 1 || got[1] != 1 || got[2] != 1 {
		t.Fatalf("hits %v: a timed-out pick must not be applied", got)
	}
	// With override_message_timeout (<= max_message_timeout) it waits.
	e.proc.set(func(f *fakeProc) { f.overrideFirst = durationpb.New(3 * time.Second) })
	status, body, _ := e.post("/v1/chat/completions", chatBody, nil)
	if status != 200 || !strings.HasPrefix(body, "up1:") {
		t.Fatalf("status %d body %q: the override must extend the timeout", status, body)
	}
	// Beyond max_message_timeout (5s) the override is ignored: the
	// filter times out and the pick (header and metadata) is not applied.
	e.proc.set(func(f *fakeProc) { f.overrideFirst = durationpb.New(30 * time.Second) })
	before := e.counts()
	if status, _, _ := e.post("/v1/chat/completions", chatBody, nil); status != 200 {
		t.Fatalf("status %d", status)
	}
	for i, u := range e.ups {
		if u.count() > before[i] {
			if got := u.lastHeaders().Get("x-gateway-destination-endpoint"); got != "" {
				t.Fatalf("the pick of a timed-out exchange was applied (%q)", got)
			}
		}
	}
}

func TestImmediateResponseReachesClient(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.proc.set(func(f *fakeProc) {
		f.immediate = &extprocsvc.ImmediateResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests},
			Headers: &extprocsvc.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "retry-after", RawValue: []byte("2")}},
				{Header: &corev3.HeaderValue{Key: "content-type", RawValue: []byte("application/json")}},
				{Header: &corev3.HeaderValue{Key: "x-envoy-overloaded", RawValue: []byte("true")}},
			}},
			Body: []byte(`{"error":{"message":"queue full","type":"rate_limit","code":429}}`),
		}
	})
	status, body, h := e.post("/v1/chat/completions", chatBody, nil)
	if status != 429 || h.Get("Retry-After") != "2" || h.Get("content-type") != "application/json" || !strings.Contains(body, "queue full") {
		t.Fatalf("status %d headers %v body %q", status, h, body)
	}
	if h.Get("x-envoy-overloaded") != "" {
		t.Errorf("x-envoy-* header from the processor must be refused")
	}
	if got := e.counts(); got[0]+got[1]+got[2] != 0 {
		t.Fatalf("upstream reached: %v", got)
	}
	// The observability filter comes after the pick filter: it never sees
	// the pick filter's local reply.
	time.Sleep(100 * time.Millisecond)
	for _, m := range e.proc.observedCopy() {
		if m.GetResponseHeaders() != nil {
			t.Fatalf("observe filter saw the local reply of an earlier filter")
		}
	}
}

func TestHeaderMutationRules(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.proc.set(func(f *fakeProc) {
		f.extraMutation = []*corev3.HeaderValueOption{
			{Header: &corev3.HeaderValue{Key: "x-custom", RawValue: []byte("yes")}},
			{Header: &corev3.HeaderValue{Key: "x-envoy-retry-on", RawValue: []byte("5xx")}},
			{Header: &corev3.HeaderValue{Key: "host", RawValue: []byte("evil.example")}},
			{Header: &corev3.HeaderValue{Key: "x-value-only", Value: "lost"}},
		}
	})
	if status, _, _ := e.post("/v1/chat/completions", chatBody, nil); status != 200 {
		t.Fatalf("status %d", status)
	}
	var h http.Header
	for _, u := range e.ups {
		if u.count() > 0 {
			h = u.lastHeaders()
		}
	}
	if h.Get("x-custom") != "yes" {
		t.Errorf("allowed mutation not applied: %v", h)
	}
	if h.Get("x-envoy-retry-on") != "" {
		t.Errorf("x-envoy-* mutation must be ignored")
	}
	if _, ok := h["X-Value-Only"]; !ok || h.Get("x-value-only") != "" {
		t.Errorf("a mutation with value but no raw_value yields an empty header in Envoy; got %q", h.Values("x-value-only"))
	}
}

func TestBodyOverBufferLimitIs413(t *testing.T) {
	e := newEnv(t, envOpts{})
	big := `{"prompt":"` + strings.Repeat("a", DefaultBufferLimit) + `"}`
	status, _, _ := e.post("/v1/completions", big, nil)
	if status != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413", status)
	}
	if got := e.counts(); got[0]+got[1]+got[2] != 0 {
		t.Fatalf("upstream reached: %v", got)
	}
}

func TestSSEStreamsWithoutBuffering(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, envOpts{upstreams: 1, handler: func(u *upstream) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("content-type", "text/event-stream")
			fl := w.(http.Flusher)
			fmt.Fprint(w, "data: {\"n\":1}\n\n")
			fl.Flush()
			// The rest is generated only after the client saw the first
			// chunk: a buffering proxy would deadlock here.
			select {
			case <-release:
			case <-time.After(10 * time.Second):
				return
			}
			for i := 2; i <= 4; i++ {
				fmt.Fprintf(w, "data: {\"n\":%d}\n\n", i)
				fl.Flush()
			}
			fmt.Fprint(w, "data: [DONE]\n\n")
		}
	}})
	req, _ := http.NewRequest(http.MethodPost, e.url("/v1/chat/completions"), strings.NewReader(`{"model":"m","stream":true}`))
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	if err != nil || first != "data: {\"n\":1}\n" {
		t.Fatalf("first line %q err %v", first, err)
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(rest), "data: [DONE]\n\n") || !strings.Contains(string(rest), "\"n\":4") {
		t.Fatalf("rest %q", rest)
	}
	full := first + string(rest)
	// The observability filter received the response headers and every
	// body chunk, the last with end_of_stream.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var got strings.Builder
		sawHeaders, sawEOS := false, false
		for _, m := range e.proc.observedCopy() {
			if rh := m.GetResponseHeaders(); rh != nil {
				for _, h := range rh.GetHeaders().GetHeaders() {
					if h.GetKey() == ":status" && string(h.GetRawValue()) == "200" {
						sawHeaders = true
					}
				}
			}
			if rb := m.GetResponseBody(); rb != nil {
				got.Write(rb.GetBody())
				sawEOS = sawEOS || rb.GetEndOfStream()
			}
		}
		if sawHeaders && sawEOS && got.String() == full {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("observed headers=%v eos=%v body %q want %q", sawHeaders, sawEOS, got.String(), full)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestObservabilityGetsForwardedMetadata(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.proc.set(func(f *fakeProc) { f.pick = func(string) string { return e.ups[0].addr() } })
	if status, _, _ := e.post("/v1/chat/completions", chatBody, nil); status != 200 {
		t.Fatalf("status %d", status)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, m := range e.proc.observedCopy() {
			if m.GetResponseHeaders() == nil {
				continue
			}
			md := m.GetMetadataContext().GetFilterMetadata()
			if got := md["envoy.lb"].GetFields()["x-gateway-destination-endpoint"].GetStringValue(); got != e.ups[0].addr() {
				t.Fatalf("forwarded envoy.lb metadata %v", md)
			}
			if _, ok := md["ignored.namespace"]; ok {
				t.Fatalf("metadata of a namespace not in receiving_namespaces was kept")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("observe filter got no response headers")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWebSocketProxied(t *testing.T) {
	e := newEnv(t, envOpts{handler: func(u *upstream) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			ctx := r.Context()
			for {
				typ, msg, err := c.Read(ctx)
				if err != nil {
					return
				}
				for i := 0; i < 3; i++ {
					if err := c.Write(ctx, typ, []byte(fmt.Sprintf("%s:%s:%d", u.name, msg, i))); err != nil {
						return
					}
				}
			}
		}
	}})
	e.proc.set(func(f *fakeProc) { f.pick = func(string) string { return e.ups[2].addr() } })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+e.s.Addr()+"/v1/realtime", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		_, msg, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("up2:hello:%d", i); string(msg) != want {
			t.Fatalf("got %q want %q", msg, want)
		}
	}
	c.Close(websocket.StatusNormalClosure, "")
	// The pick filter saw only the upgrade's headers (end_of_stream false,
	// body mode NONE on the WebSocket route).
	msgs := e.proc.blockingCopy()
	if len(msgs) != 1 || msgs[0].GetRequestHeaders() == nil || msgs[0].GetRequestHeaders().GetEndOfStream() {
		t.Fatalf("pick filter messages %v", msgs)
	}
}

func TestEDSRemovalTakesEffect(t *testing.T) {
	e := newEnv(t, envOpts{})
	removed := e.ups[0]
	e.push(e.ups[1].addr(), e.ups[2].addr())
	e.waitEndpoints(e.ups[1].addr(), e.ups[2].addr())
	e.proc.set(func(f *fakeProc) { f.pick = func(string) string { return removed.addr() } })
	for i := 0; i < 6; i++ {
		if status, _, _ := e.post("/v1/chat/completions", chatBody, nil); status != 200 {
			t.Fatalf("status %d", status)
		}
	}
	if got := e.counts(); got[0] != 0 || got[1] != 3 || got[2] != 3 {
		t.Fatalf("hits %v: a removed host must never be reached", got)
	}
	// No endpoints at all: 503 no healthy upstream.
	e.push()
	e.waitEndpoints()
	status, body, _ := e.post("/v1/chat/completions", chatBody, nil)
	if status != 503 || body != "no healthy upstream" {
		t.Fatalf("status %d body %q", status, body)
	}
}

func TestDeltaADS(t *testing.T) {
	e := newEnv(t, envOpts{yaml: func(y string) string { return strings.Replace(y, "api_type: GRPC", "api_type: DELTA_GRPC", 1) }})
	if !e.s.cfg.ADS.Delta {
		t.Fatal("delta not selected")
	}
	e.push(e.ups[0].addr())
	e.waitEndpoints(e.ups[0].addr())
	for i := 0; i < 3; i++ {
		if status, body, _ := e.post("/v1/models", "", nil); status != 200 || !strings.HasPrefix(body, "up0:") {
			t.Fatalf("status %d body %q", status, body)
		}
	}
	if acks, nacks := e.s.XDSCounts(); acks < 2 || nacks != 0 {
		t.Fatalf("acks %d nacks %d", acks, nacks)
	}
}

func TestXDSServerGoneKeepsLastConfig(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.stopXDS()
	for i := 0; i < 3; i++ {
		if status, _, _ := e.post("/v1/models", "", nil); status != 200 {
			t.Fatalf("status %d after the xDS server went away", status)
		}
	}
	// It comes back (same address): the stand-in reconnects and follows.
	e.startXDS()
	e.push(e.ups[2].addr())
	e.waitEndpoints(e.ups[2].addr())
}

func TestAdminEndpoints(t *testing.T) {
	e := newEnv(t, envOpts{})
	resp, err := http.Get("http://" + e.s.AdminAddr() + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != "LIVE" {
		t.Fatalf("/ready %d %q", resp.StatusCode, b)
	}
	resp, err = http.Get("http://" + e.s.AdminAddr() + "/clusters?format=json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		ClusterStatuses []struct {
			Name         string `json:"name"`
			HostStatuses []struct {
				Address struct {
					SocketAddress struct {
						Address   string `json:"address"`
						PortValue int    `json:"port_value"`
					} `json:"socket_address"`
				} `json:"address"`
			} `json:"host_statuses"`
		} `json:"cluster_statuses"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range out.ClusterStatuses {
		if c.Name != "llm_backends" {
			continue
		}
		for _, h := range c.HostStatuses {
			got = append(got, fmt.Sprintf("%s:%d", h.Address.SocketAddress.Address, h.Address.SocketAddress.PortValue))
		}
	}
	if strings.Join(sorted(got), ",") != strings.Join(sorted(e.addrs()), ",") {
		t.Fatalf("admin EDS view %v, want %v", got, e.addrs())
	}
}

func TestRequestIDGeneratedAndReturned(t *testing.T) {
	e := newEnv(t, envOpts{upstreams: 1})
	_, _, h := e.post("/v1/models", "", nil)
	id := h.Get("x-request-id")
	if len(id) != 36 || e.ups[0].lastHeaders().Get("x-request-id") != id {
		t.Fatalf("response id %q upstream id %q", id, e.ups[0].lastHeaders().Get("x-request-id"))
	}
	_, _, h = e.post("/v1/models", "", map[string]string{"x-request-id": "mine"})
	if h.Get("x-request-id") != "mine" {
		t.Fatalf("client request id not kept: %q", h.Get("x-request-id"))
	}
}

func TestUnsupportedClusterIsNACKedAndOldConfigKept(t *testing.T) {
	e := newEnv(t, envOpts{})
	o := envoy.DefaultOptions()
	bad := envoy.BackendCluster(o)
	bad.LoadBalancingPolicy = nil
	bad.LbPolicy = clusterv3.Cluster_LEAST_REQUEST // not implemented by the stand-in
	var eps []envoy.Endpoint
	for _, a := range e.addrs() {
		eps = append(eps, envoy.Endpoint{Address: a})
	}
	cla, err := envoy.LoadAssignment(o.ClusterName, eps)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := cache.NewSnapshot("bad", map[resource.Type][]types.Resource{
		resource.ClusterType: {bad}, resource.EndpointType: {cla}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cache.SetSnapshot(context.Background(), "standin-test", snap); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, nacks := e.s.XDSCounts(); return nacks > 0 })
	// The previous cluster (override_host) stays: picks still steer.
	e.proc.set(func(f *fakeProc) { f.pick = func(string) string { return e.ups[1].addr() } })
	for i := 0; i < 4; i++ {
		if status, body, _ := e.post("/v1/chat/completions", chatBody, nil); status != 200 || !strings.HasPrefix(body, "up1:") {
			t.Fatalf("status %d body %q", status, body)
		}
	}
}
