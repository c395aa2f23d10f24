package envoy

import (
	"fmt"
	"strings"
	"time"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// GatewayNamespace is a dynamic metadata namespace the gateway may write from
// filter #1 (e.g. its request id); filter #2 receives it, with envoy.lb, in
// ProcessingRequest.metadata_context, so the observer can tie a response to
// its pick.
const GatewayNamespace = "llmrouter"

const (
	routerFilterName = "envoy.filters.http.router"
	hcmFilterName    = "envoy.filters.network.http_connection_manager"
	// RetryOn: failures where the request never reached a working engine, and
	// 503 (engines answer it when not ready or overloaded). Each retry takes
	// the next host of the pick (override_host), so no retry_host_predicate:
	// previous_hosts would make Envoy re-draw hosts and skip pick entries.
	RetryOn = "connect-failure,refused-stream,reset,retriable-status-codes"
)

func grpcService(cluster string) *corev3.GrpcService {
	return &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster}}}
}

// PickFilter is ext_proc filter #1 (ARCHITECTURE §5.1): blocking, request
// headers and the BUFFERED request body, nothing of the response. It fails
// open (no pick: Envoy round-robins). message_timeout stays short; the gateway
// extends it with override_message_timeout, up to max_message_timeout, before
// it waits in the admission queue.
func PickFilter(o Options) *extprocv3.ExternalProcessor {
	return &extprocv3.ExternalProcessor{
		GrpcService:      tokenGrpcService(ExtProcCluster, o.ExtProcToken),
		FailureModeAllow: true,
		ProcessingMode: &extprocv3.ProcessingMode{
			RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
			RequestBodyMode:     extprocv3.ProcessingMode_BUFFERED,
			RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SKIP,
			ResponseBodyMode:    extprocv3.ProcessingMode_NONE,
			ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		},
		MessageTimeout:    durationpb.New(o.MessageTimeout),
		MaxMessageTimeout: durationpb.New(o.WaitScheduleTimeout + time.Second),
		MetadataOptions: &extprocv3.MetadataOptions{
			ReceivingNamespaces: &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: []string{MetadataNamespace, GatewayNamespace}},
		},
		AllowModeOverride: false,
		StatPrefix:        "pick",
	}
}

// ObserveFilter is ext_proc filter #2: observability mode (Envoy sends and
// never waits), request headers, response headers and the STREAMED response
// body, for TTFT, TPOT, usage and completion. The request headers open the
// stream when the request arrives, so a request that ends before any
// response (a client cancel, a reset) still ends a stream at the gateway,
// which releases its pick.
func ObserveFilter(o Options) *extprocv3.ExternalProcessor {
	return &extprocv3.ExternalProcessor{
		GrpcService:       tokenGrpcService(ExtProcCluster, o.ExtProcToken),
		FailureModeAllow:  true,
		ObservabilityMode: true,
		ProcessingMode: &extprocv3.ProcessingMode{
			RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
			RequestBodyMode:     extprocv3.ProcessingMode_NONE,
			RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
			ResponseHeaderMode:  extprocv3.ProcessingMode_SEND,
			ResponseBodyMode:    extprocv3.ProcessingMode_STREAMED,
			ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
		},
		MessageTimeout: durationpb.New(o.MessageTimeout),
		MetadataOptions: &extprocv3.MetadataOptions{
			ForwardingNamespaces: &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: []string{MetadataNamespace, GatewayNamespace}},
		},
		StatPrefix: "observe",
	}
}

// ClientHeaderPrefixes name the headers only llmrouter and the operator's
// Envoy may set: x-llmrouter-* (x-llmrouter-priority among them) and the
// prefill/decode handoff x-prefiller-* that a decode instance's pd proxy acts
// on. StripFilter removes every one a client sends before any other filter
// sees the request, so they stay ours even while the gateway fails open.
var ClientHeaderPrefixes = []string{"x-llmrouter-", "x-prefiller-"}

// StripFilter is the first filter: it removes the ClientHeaderPrefixes
// headers a client sent, so a header the gateway may trust
// (llm_gateway.trusted_priority_header) is set by this Envoy or nobody. An
// operator's own filter placed after it may set one (from a route, an
// authenticated identity).
func StripFilter() *headermutationv3.HeaderMutation {
	rm := make([]*mutationrulesv3.HeaderMutation, 0, len(ClientHeaderPrefixes))
	for _, p := range ClientHeaderPrefixes {
		rm = append(rm, &mutationrulesv3.HeaderMutation{
			Action: &mutationrulesv3.HeaderMutation_RemoveOnMatch_{RemoveOnMatch: &mutationrulesv3.HeaderMutation_RemoveOnMatch{
				KeyMatcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: p}},
			}},
		})
	}
	return &headermutationv3.HeaderMutation{Mutations: &headermutationv3.Mutations{RequestMutations: rm}}
}

// HTTPFilters is the filter chain: strip client x-llmrouter-* and
// x-prefiller-* headers, pick,
// observe, router.
func HTTPFilters(o Options) []*hcmv3.HttpFilter {
	typed := func(m *extprocv3.ExternalProcessor) *hcmv3.HttpFilter_TypedConfig {
		return &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(m)}
	}
	return []*hcmv3.HttpFilter{
		{Name: StripFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(StripFilter())}},
		{Name: PickFilterName, ConfigType: typed(PickFilter(o))},
		{Name: ObserveFilterName, ConfigType: typed(ObserveFilter(o))},
		{Name: routerFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}},
	}
}

// RetryPolicy retries on another host (the pick's next entry, then round
// robin) up to RetryCount times. Envoy retries only before the response
// started, so a streaming generation is never replayed.
func RetryPolicy(o Options) *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn:              RetryOn,
		NumRetries:           wrapperspb.UInt32(uint32(max(o.RetryCount, 0))),
		RetriableStatusCodes: []uint32{503},
	}
}

// backendAction routes to the fleet with the SSE-friendly timeouts: no route
// timeout (the 15 s default kills long generations), a generous idle timeout.
func backendAction(o Options) *routev3.Route_Route {
	return &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: o.ClusterName},
		Timeout:          durationpb.New(0),
		IdleTimeout:      durationpb.New(o.StreamIdleTimeout),
		RetryPolicy:      RetryPolicy(o),
	}}
}

// WebSocketPerFilter overrides the filters on the WebSocket route: filter #1
// sends headers only (BUFFERED with an upgrade hangs, envoy#47081), filter #2
// observes the request and response headers only (STREAMED with an upgrade hung,
// envoy#47048). The pick is made from the headers.
func WebSocketPerFilter() map[string]*anypb.Any {
	mode := func(req, resp extprocv3.ProcessingMode_HeaderSendMode) *extprocv3.ExtProcPerRoute {
		return &extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{Overrides: &extprocv3.ExtProcOverrides{
			ProcessingMode: &extprocv3.ProcessingMode{
				RequestHeaderMode:   req,
				RequestBodyMode:     extprocv3.ProcessingMode_NONE,
				RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
				ResponseHeaderMode:  resp,
				ResponseBodyMode:    extprocv3.ProcessingMode_NONE,
				ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
			},
		}}}
	}
	return map[string]*anypb.Any{
		PickFilterName:    mustAny(mode(extprocv3.ProcessingMode_SEND, extprocv3.ProcessingMode_SKIP)),
		ObserveFilterName: mustAny(mode(extprocv3.ProcessingMode_SEND, extprocv3.ProcessingMode_SEND)),
	}
}

// APIPaths are the engine API paths routed to the fleet (exact paths; a
// query string does not count); RealtimePath is the WebSocket one. Every
// other path gets NotFoundBody with 404 from Envoy itself, so the data plane
// never serves an engine's /metrics, admin or debug endpoints.
var APIPaths = []string{"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings", "/v1/models"}

// ModelsPrefix starts OpenAI's model retrieval path, /v1/models/{id} (ids
// hold slashes: meta-llama/Llama-3-8B): routed to the fleet by prefix,
// so the gateway can answer it from the fleet's model list, or let it
// through to an engine when it has none.
const ModelsPrefix = "/v1/models/"

// ModelsRefused matches the /v1/models/{id} paths not routed to the fleet:
// a dot segment, plain or escaped (/. %2e %2f.), or a backslash (\ %5c),
// escapes in either case, so that no engine that resolves them can be
// reached beyond /v1/models/ (/v1/models/../../metrics). Envoy does not
// normalize paths by default; model ids do not start a segment with a dot.
// It is a route's safe_regex, which Envoy matches against the whole path
// without its query string: a query may hold anything (?next=/../x) and a
// bad path cannot hide behind one. A fragment cannot either: Envoy refuses
// a request whose path holds a '#'. RE2 (libre2 2022-06-01) sizes its
// program at 41, under Envoy's default re2.max_program_size.error_level
// of 100.
const ModelsRefused = `(?s)/v1/models/(?:\.|.*(?:/\.|\\|(?i:%2e|%2f\.|%5c))).*`

// RealtimePath is the OpenAI Realtime API's WebSocket path.
const RealtimePath = "/v1/realtime"

// NotFoundBody is the 404 answer to a path outside the API (it echoes
// nothing of the request).
const NotFoundBody = "not found: this endpoint serves only the OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/responses, /v1/embeddings, /v1/models, /v1/models/{id}, and the /v1/realtime WebSocket)\n"

// notFoundRoute answers every path no other route takes with 404, without
// running the ext_proc filters.
func notFoundRoute() *routev3.Route {
	return refuse("not_found", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}})
}

// refuse is a route answering what m matches with Envoy's 404
// (NotFoundBody), without running the ext_proc filters.
func refuse(name string, m *routev3.RouteMatch) *routev3.Route {
	off := mustAny(&extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Disabled{Disabled: true}})
	return &routev3.Route{
		Name:  name,
		Match: m,
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: 404,
			Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: NotFoundBody}},
		}},
		TypedPerFilterConfig: map[string]*anypb.Any{PickFilterName: off, ObserveFilterName: off},
	}
}

// RouteConfig is the route table: the Realtime WebSocket (its path with
// `upgrade: websocket`), then each API path to the fleet, 404 for a
// ModelsRefused path, ModelsPrefix to the fleet, then 404 for everything
// else.
func RouteConfig(o Options) *routev3.RouteConfiguration {
	ws := &routev3.Route{
		Name: "websocket",
		Match: &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_Path{Path: RealtimePath},
			Headers: []*routev3.HeaderMatcher{{
				Name: "upgrade",
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "websocket"},
					IgnoreCase:   true,
				}},
			}},
		},
		Action:               backendAction(o),
		TypedPerFilterConfig: WebSocketPerFilter(),
	}
	routes := []*routev3.Route{ws}
	for _, p := range APIPaths {
		routes = append(routes, &routev3.Route{
			Name:   strings.ReplaceAll(strings.TrimPrefix(p, "/v1/"), "/", "_"),
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: p}},
			Action: backendAction(o),
		})
	}
	routes = append(routes,
		refuse("model_refused", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{
			SafeRegex: &matcherv3.RegexMatcher{Regex: ModelsRefused}}}),
		&routev3.Route{Name: "model", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: ModelsPrefix}},
			Action: backendAction(o)})
	return &routev3.RouteConfiguration{
		Name: RouteConfigName,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    VirtualHostName,
			Domains: []string{"*"},
			Routes:  append(routes, notFoundRoute()),
		}},
	}
}

// HTTPConnectionManager carries the filters and routes; WebSocket upgrades
// are enabled, and the request id is echoed in responses so that filter #2
// (which sees only the response) can tie a response to its request.
func HTTPConnectionManager(o Options) *hcmv3.HttpConnectionManager {
	return &hcmv3.HttpConnectionManager{
		StatPrefix:                   "llmrouter",
		CodecType:                    hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier:               &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: RouteConfig(o)},
		HttpFilters:                  HTTPFilters(o),
		UpgradeConfigs:               []*hcmv3.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}},
		StreamIdleTimeout:            durationpb.New(o.StreamIdleTimeout),
		AlwaysSetRequestIdInResponse: true,
	}
}

// Listener is the data-plane listener. Its buffer limit bounds the BUFFERED
// request body filter #1 reads (LLM prompts, with images, exceed the 1 MiB
// default).
func Listener(o Options) (*listenerv3.Listener, error) {
	host, port, err := SplitAddress(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	return &listenerv3.Listener{
		Name:                          ListenerName,
		Address:                       socketAddress(host, port),
		PerConnectionBufferLimitBytes: wrapperspb.UInt32(o.MaxRequestBytes),
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       hcmFilterName,
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(HTTPConnectionManager(o))},
			}},
		}},
	}, nil
}
