package envoy

import (
	"regexp/syntax"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	overridehostv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/override_host/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

func unpack[T proto.Message](t *testing.T, a *anypb.Any, into T) T {
	t.Helper()
	if err := a.UnmarshalTo(into); err != nil {
		t.Fatalf("unpack %s: %v", a.GetTypeUrl(), err)
	}
	return into
}

func TestBackendCluster(t *testing.T) {
	o := DefaultOptions()
	c := BackendCluster(o)
	if err := Validate(c); err != nil {
		t.Fatalf("invalid: %v", err)
	}
	if c.GetName() != "llm_backends" || c.GetType() != clusterv3.Cluster_EDS || c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
		t.Fatalf("want EDS over ADS named llm_backends, got %v", c)
	}
	pols := c.GetLoadBalancingPolicy().GetPolicies()
	if len(pols) != 2 || pols[0].GetTypedExtensionConfig().GetName() != "envoy.load_balancing_policies.override_host" {
		t.Fatalf("first policy must be override_host: %v", pols)
	}
	oh := unpack(t, pols[0].GetTypedExtensionConfig().GetTypedConfig(), &overridehostv3.OverrideHost{})
	srcs := oh.GetOverrideHostSources()
	if len(srcs) != 1 || srcs[0].GetHeader() != "" {
		t.Fatalf("override_host must read metadata only, never a header: %v", srcs)
	}
	md := srcs[0].GetMetadata()
	if md.GetKey() != "envoy.lb" || len(md.GetPath()) != 1 || md.GetPath()[0].GetKey() != "x-gateway-destination-endpoint" {
		t.Fatalf("metadata source: %v", md)
	}
	if fb := oh.GetFallbackPolicy().GetPolicies(); len(fb) != 1 || !strings.HasSuffix(fb[0].GetTypedExtensionConfig().GetTypedConfig().GetTypeUrl(), "round_robin.v3.RoundRobin") {
		t.Fatalf("fallback must be round robin: %v", fb)
	}
	th := c.GetCircuitBreakers().GetThresholds()
	if len(th) != 1 || th[0].GetMaxRequests().GetValue() < 100_000 || th[0].GetMaxPendingRequests().GetValue() < 100_000 || th[0].GetMaxConnections().GetValue() < 100_000 {
		t.Fatalf("circuit breakers not raised: %v", th)
	}
	hpo := unpack(t, c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"], &upstreamhttpv3.HttpProtocolOptions{})
	if hpo.GetExplicitHttpConfig().GetHttpProtocolOptions() == nil || hpo.GetCommonHttpProtocolOptions().GetIdleTimeout().AsDuration() < time.Minute {
		t.Fatalf("want HTTP/1.1 upstream with a generous idle timeout: %v", hpo)
	}
	o.UpstreamHTTP2 = true
	hpo = unpack(t, BackendCluster(o).GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"], &upstreamhttpv3.HttpProtocolOptions{})
	if hpo.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Fatalf("UpstreamHTTP2 not honoured: %v", hpo)
	}
}

func TestPlainEDSSource(t *testing.T) {
	o := DefaultOptions()
	o.EDSCluster, o.EDSDelta = "llmrouter_xds", true
	api := BackendCluster(o).GetEdsClusterConfig().GetEdsConfig().GetApiConfigSource()
	if api.GetApiType() != corev3.ApiConfigSource_DELTA_GRPC || api.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != "llmrouter_xds" {
		t.Fatalf("EDS source: %v", api)
	}
}

func TestFilters(t *testing.T) {
	o := DefaultOptions()
	o.WaitScheduleTimeout = 30 * time.Second
	fs := HTTPFilters(o)
	if len(fs) != 4 || fs[0].GetName() != StripFilterName || fs[1].GetName() != PickFilterName || fs[2].GetName() != ObserveFilterName {
		t.Fatalf("filter order: %v", fs)
	}
	// First, before anything reads the request: client x-llmrouter-* and
	// x-prefiller-* headers go.
	strip := unpack(t, fs[0].GetTypedConfig(), &headermutationv3.HeaderMutation{})
	rm := strip.GetMutations().GetRequestMutations()
	if len(rm) != 2 || rm[0].GetRemoveOnMatch().GetKeyMatcher().GetPrefix() != "x-llmrouter-" ||
		rm[1].GetRemoveOnMatch().GetKeyMatcher().GetPrefix() != "x-prefiller-" || strip.GetMutations().GetResponseMutations() != nil {
		t.Fatalf("strip filter: %v", strip)
	}
	unpack(t, fs[3].GetTypedConfig(), &routerv3.Router{})
	fs = fs[1:]
	pick := unpack(t, fs[0].GetTypedConfig(), &extprocv3.ExternalProcessor{})
	pm := pick.GetProcessingMode()
	if pm.GetRequestHeaderMode() != extprocv3.ProcessingMode_SEND || pm.GetRequestBodyMode() != extprocv3.ProcessingMode_BUFFERED ||
		pm.GetResponseHeaderMode() != extprocv3.ProcessingMode_SKIP || pm.GetResponseBodyMode() != extprocv3.ProcessingMode_NONE {
		t.Fatalf("pick modes: %v", pm)
	}
	if !pick.GetFailureModeAllow() || pick.GetAllowModeOverride() || pick.GetObservabilityMode() {
		t.Fatalf("pick flags: %v", pick)
	}
	if pick.GetMessageTimeout().AsDuration() != 200*time.Millisecond || pick.GetMaxMessageTimeout().AsDuration() < 31*time.Second {
		t.Fatalf("pick timeouts: %v / %v", pick.GetMessageTimeout(), pick.GetMaxMessageTimeout())
	}
	if ns := pick.GetMetadataOptions().GetReceivingNamespaces().GetUntyped(); len(ns) == 0 || ns[0] != "envoy.lb" {
		t.Fatalf("pick must receive envoy.lb metadata: %v", ns)
	}
	if pick.GetGrpcService().GetEnvoyGrpc().GetClusterName() != ExtProcCluster {
		t.Fatalf("pick service: %v", pick.GetGrpcService())
	}
	obs := unpack(t, fs[1].GetTypedConfig(), &extprocv3.ExternalProcessor{})
	om := obs.GetProcessingMode()
	// Request headers SEND: the stream opens with the request, so one that
	// ends before any response still ends a stream (its pick is released).
	if !obs.GetObservabilityMode() || !obs.GetFailureModeAllow() || om.GetRequestHeaderMode() != extprocv3.ProcessingMode_SEND ||
		om.GetResponseHeaderMode() != extprocv3.ProcessingMode_SEND || om.GetResponseBodyMode() != extprocv3.ProcessingMode_STREAMED {
		t.Fatalf("observe: %v", obs)
	}
}

func TestRoutes(t *testing.T) {
	o := DefaultOptions()
	o.RetryCount = 3
	rc := RouteConfig(o)
	if err := Validate(rc); err != nil {
		t.Fatal(err)
	}
	routes := rc.GetVirtualHosts()[0].GetRoutes()
	// The Realtime WebSocket, one route per API path, 404 for a
	// /v1/models/{id} with a dot segment, /v1/models/{id} by prefix, 404
	// for the rest.
	if len(routes) != 4+len(APIPaths) {
		t.Fatalf("got %d routes, want %d", len(routes), 4+len(APIPaths))
	}
	ws, api, refused, model, nf := routes[0], routes[1:len(routes)-3], routes[len(routes)-3], routes[len(routes)-2], routes[len(routes)-1]
	if model.GetMatch().GetPrefix() != "/v1/models/" || len(model.GetMatch().GetHeaders()) != 0 {
		t.Fatalf("model retrieval route matches %v, want the prefix /v1/models/", model.GetMatch())
	}
	// Envoy refuses a regex whose RE2 program is over
	// re2.max_program_size.error_level (100 by default). RE2 sizes
	// ModelsRefused at 41 (libre2 2022-06-01, RE2::ProgramSize) and Go's
	// regexp, the same syntax, at 33 instructions: a bound of 60 here
	// keeps a change to it well inside Envoy's.
	rx := refused.GetMatch().GetSafeRegex().GetRegex()
	if rx != ModelsRefused || refused.GetDirectResponse().GetStatus() != 404 || refused.GetRoute() != nil {
		t.Fatalf("refused model paths: %v, want 404 for the paths matching ModelsRefused", refused)
	}
	re, err := syntax.Parse(rx, syntax.Perl)
	if err != nil {
		t.Fatalf("ModelsRefused is not RE2: %v", err)
	}
	if prog, err := syntax.Compile(re.Simplify()); err != nil || len(prog.Inst) > 60 {
		t.Fatalf("ModelsRefused compiles to %d instructions (%v), at most 60 keeps RE2's under Envoy's 100", len(prog.Inst), err)
	}
	if h := ws.GetMatch().GetHeaders(); ws.GetMatch().GetPath() != "/v1/realtime" || len(h) != 1 || h[0].GetName() != "upgrade" || h[0].GetStringMatch().GetExact() != "websocket" {
		t.Fatalf("websocket match: %v", ws.GetMatch())
	}
	per := unpack(t, ws.GetTypedPerFilterConfig()[PickFilterName], &extprocv3.ExtProcPerRoute{})
	if m := per.GetOverrides().GetProcessingMode(); m.GetRequestBodyMode() != extprocv3.ProcessingMode_NONE || m.GetRequestHeaderMode() != extprocv3.ProcessingMode_SEND {
		t.Fatalf("websocket route must send headers only: %v", m)
	}
	want := []string{"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings", "/v1/models"}
	for i, r := range api {
		if r.GetMatch().GetPath() != want[i] || len(r.GetMatch().GetHeaders()) != 0 {
			t.Fatalf("route %d matches %v, want exactly %s", i, r.GetMatch(), want[i])
		}
	}
	// The API routes keep filter #1 on request headers: the gateway picks
	// from them, and answers GET /v1/models and /v1/models/{id} there (an
	// immediate_response to the headers of a request without a body).
	api = append(api, model)
	for _, r := range api {
		for _, f := range []string{PickFilterName, ObserveFilterName} {
			if c, ok := r.GetTypedPerFilterConfig()[f]; ok {
				per := unpack(t, c, &extprocv3.ExtProcPerRoute{})
				if per.GetDisabled() || per.GetOverrides().GetProcessingMode().GetRequestHeaderMode() == extprocv3.ProcessingMode_SKIP {
					t.Fatalf("route %s skips %s's request headers: %v", r.GetName(), f, per)
				}
			}
		}
	}
	for _, r := range append([]*routev3.Route{ws}, api...) {
		a := r.GetRoute()
		if a.GetCluster() != "llm_backends" || a.GetTimeout() == nil || a.GetTimeout().AsDuration() != 0 || a.GetIdleTimeout().AsDuration() < time.Minute {
			t.Fatalf("route %s: want timeout 0s and a generous idle timeout: %v", r.GetName(), a)
		}
		rp := a.GetRetryPolicy()
		if rp.GetNumRetries().GetValue() != 3 || !strings.Contains(rp.GetRetryOn(), "connect-failure") || len(rp.GetRetryHostPredicate()) != 0 {
			t.Fatalf("route %s retry policy: %v", r.GetName(), rp)
		}
	}
	dr := nf.GetDirectResponse()
	if nf.GetMatch().GetPrefix() != "/" || dr.GetStatus() != 404 || dr.GetBody().GetInlineString() != NotFoundBody || nf.GetRoute() != nil {
		t.Fatalf("catch-all: %v", nf)
	}
	if refused.GetDirectResponse().GetBody().GetInlineString() != NotFoundBody {
		t.Fatalf("refused model paths answer %v, want the catch-all's 404", refused.GetDirectResponse())
	}
	for _, r := range []*routev3.Route{refused, nf} {
		for _, f := range []string{PickFilterName, ObserveFilterName} {
			if !unpack(t, r.GetTypedPerFilterConfig()[f], &extprocv3.ExtProcPerRoute{}).GetDisabled() {
				t.Fatalf("the 404 route %s runs %s", r.GetName(), f)
			}
		}
	}
	hcm := HTTPConnectionManager(o)
	if u := hcm.GetUpgradeConfigs(); len(u) != 1 || u[0].GetUpgradeType() != "websocket" {
		t.Fatalf("websocket upgrades: %v", u)
	}
}

func TestListenerValid(t *testing.T) {
	l, err := Listener(DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(l); err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.Listen = "nope"
	if _, err := Listener(o); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("bad listen address accepted: %v", err)
	}
}

func TestLoadAssignment(t *testing.T) {
	cla, err := LoadAssignment("llm_backends", []Endpoint{{Address: "10.0.0.1:8000", Hostname: "a"}, {Address: "[::1]:9000", Hostname: "b"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(cla); err != nil {
		t.Fatal(err)
	}
	lbs := cla.GetEndpoints()[0].GetLbEndpoints()
	if len(lbs) != 2 || lbs[1].GetEndpoint().GetAddress().GetSocketAddress().GetAddress() != "::1" || lbs[0].GetHealthStatus() != corev3.HealthStatus_HEALTHY {
		t.Fatalf("endpoints: %v", lbs)
	}
	for _, bad := range []string{"engine:8000", "10.0.0.1", "10.0.0.1:0", "10.0.0.1:70000"} {
		if _, err := LoadAssignment("c", []Endpoint{{Address: bad}}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("address %q accepted or not named: %v", bad, err)
		}
	}
}

func problems(t *testing.T, err error) []Problem {
	t.Helper()
	ve, ok := err.(*ValidationError)
	if !ok {
		t.Fatalf("want *ValidationError, got %T: %v", err, err)
	}
	return ve.Problems
}

func TestValidateRecursesIntoAny(t *testing.T) {
	c := BackendCluster(DefaultOptions())
	oh := &overridehostv3.OverrideHost{} // no sources, no fallback: two PGV rules broken
	c.LoadBalancingPolicy.Policies[0].TypedExtensionConfig.TypedConfig = mustAny(oh)
	ps := problems(t, Validate(c))
	want := map[string]bool{
		"load_balancing_policy.policies[0].typed_extension_config.typed_config(override_host.v3.OverrideHost).override_host_sources": false,
		"load_balancing_policy.policies[0].typed_extension_config.typed_config(override_host.v3.OverrideHost).fallback_policy":       false,
	}
	for _, p := range ps {
		if _, ok := want[p.Path]; ok {
			want[p.Path] = true
		}
	}
	for path, seen := range want {
		if !seen {
			t.Errorf("no problem reported at %s; got %v", path, ps)
		}
	}
}

func TestValidateOwnRules(t *testing.T) {
	c := BackendCluster(DefaultOptions())
	c.Name = ""
	c.ConnectTimeout = durationpb.New(-time.Second)
	ps := problems(t, Validate(c))
	got := map[string]bool{}
	for _, p := range ps {
		got[p.Path] = true
	}
	if !got["name"] || !got["connect_timeout"] || len(ps) != 2 {
		t.Fatalf("want exactly name and connect_timeout, got %v", ps)
	}
}

func TestValidateAnySlotKind(t *testing.T) {
	c := BackendCluster(DefaultOptions())
	c.LoadBalancingPolicy.Policies[1].TypedExtensionConfig.TypedConfig = mustAny(&routerv3.Router{})
	ps := problems(t, Validate(c))
	if len(ps) != 1 || ps[0].Path != "load_balancing_policy.policies[1].typed_extension_config.typed_config" || !strings.Contains(ps[0].Message, "load_balancing_policies") {
		t.Fatalf("router as LB policy: %v", ps)
	}
	c = BackendCluster(DefaultOptions())
	c.LoadBalancingPolicy.Policies[1].TypedExtensionConfig.TypedConfig = &anypb.Any{TypeUrl: "type.googleapis.com/envoy.extensions.load_balancing_policies.nope.v3.Nope"}
	ps = problems(t, Validate(c))
	if len(ps) != 1 || !strings.Contains(ps[0].Message, "nope.v3.Nope") {
		t.Fatalf("unknown type: %v", ps)
	}
}

func TestUnmarshalNamesPath(t *testing.T) {
	cases := []struct{ name, doc, want string }{
		{"misspelt field", "name: c\nconect_timeout: 1s\n", `conect_timeout: unknown field "conect_timeout"`},
		{"nested misspelt field", "name: c\nload_assignment:\n  cluster_name: c\n  endpoints:\n    - lb_endpoints:\n        - endpoint: {adress: {}}\n", "load_assignment.endpoints[0].lb_endpoints[0].endpoint.adress"},
		{"invalid enum", "name: c\ntype: STATICK\n", "type: "},
		{"unknown Any type", "name: c\ntyped_extension_protocol_options:\n  x:\n    '@type': type.googleapis.com/envoy.Nope\n", "typed_extension_protocol_options.x"},
		{"not YAML", "name: [c\n", "not YAML"},
	}
	for _, tc := range cases {
		err := Unmarshal([]byte(tc.doc), &clusterv3.Cluster{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: want error containing %q, got %v", tc.name, tc.want, err)
		}
	}
	var c clusterv3.Cluster
	if err := Unmarshal([]byte(`{"name": "c", "connect_timeout": "1s"}`), &c); err != nil || c.GetName() != "c" {
		t.Fatalf("JSON: %v %v", err, &c)
	}
}

func TestYAMLRoundTrip(t *testing.T) {
	l, err := Listener(DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	y, err := MarshalYAML(l)
	if err != nil {
		t.Fatal(err)
	}
	back := proto.Clone(l)
	proto.Reset(back)
	if err := Unmarshal(y, back); err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	if !proto.Equal(l, back) {
		t.Fatalf("round trip changed the listener:\n%s", y)
	}
}

func TestSplitAddress(t *testing.T) {
	h, p, err := SplitAddress(":8080")
	if err != nil || h != "0.0.0.0" || p != 8080 {
		t.Fatalf("%q %d %v", h, p, err)
	}
	if _, _, err := SplitAddress("host:port"); err == nil {
		t.Fatal("non-numeric port accepted")
	}
}
