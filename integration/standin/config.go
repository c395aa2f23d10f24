package standin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	// Imported so that protojson can resolve the Any-typed extension configs
	// of the bootstrap and of CDS resources.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/override_host/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// DefaultBufferLimit is Envoy's per-connection buffer limit (1 MiB): a
// BUFFERED request body beyond it gets 413.
const DefaultBufferLimit = 1 << 20

// Config is the part of an Envoy bootstrap the stand-in interprets.
type Config struct {
	Path     string
	Node     *corev3.Node
	Admin    string // host:port, empty when the bootstrap has no admin
	Listener *Listener
	Static   map[string]*StaticCluster
	ADS      *ADSConfig // nil without dynamic_resources
}

// StaticCluster is a static cluster with its single endpoint.
type StaticCluster struct {
	Name           string
	Addr           string
	ConnectTimeout time.Duration
}

// ADSConfig says where and how to fetch CDS and EDS.
type ADSConfig struct {
	Cluster             string
	Delta               bool
	InitialMetadata     [][2]string
	CDS                 bool // cds_config points at ADS
	InitialFetchTimeout time.Duration
}

// Listener is the one HTTP listener with its connection manager.
type Listener struct {
	Name              string
	Addr              string
	BufferLimit       int
	Filters           []*ExtProcFilter // in decoding order
	VirtualHosts      []*VirtualHost
	Upgrades          map[string]bool
	StreamIdleTimeout time.Duration
	RequestTimeout    time.Duration
	GenerateRequestID bool
	// AlwaysSetRequestID copies x-request-id into every response.
	AlwaysSetRequestID bool
	// Removals are the request headers header_mutation filters (placed
	// before every ext_proc filter) remove, in order.
	Removals []HeaderRemoval
}

// HeaderRemoval is one request header removal of a header_mutation filter:
// a name, or every name with a prefix (remove_on_match).
type HeaderRemoval struct {
	Name, Prefix string
}

func (hr HeaderRemoval) matches(key string) bool {
	if hr.Prefix != "" {
		return strings.HasPrefix(key, hr.Prefix)
	}
	return key == hr.Name
}

// BodyMode mirrors ext_proc's ProcessingMode.BodySendMode.
type BodyMode = extprocv3.ProcessingMode_BodySendMode

// Mode is an effective ext_proc processing mode.
type Mode struct {
	RequestHeaders  bool
	ResponseHeaders bool
	RequestBody     BodyMode
	ResponseBody    BodyMode
}

// ExtProcFilter is one envoy.filters.http.ext_proc instance.
type ExtProcFilter struct {
	Name              string
	Cluster           string
	InitialMetadata   [][2]string
	FailureModeAllow  bool
	Mode              Mode
	MessageTimeout    time.Duration
	MaxMessageTimeout time.Duration
	Receiving         []string
	Forwarding        []string
	AllowModeOverride bool
	Observability     bool
	DeferredClose     time.Duration
	ClearRouteCache   bool // honour clear_route_cache
	StatusOnError     int
	DisableImmediate  bool
}

// VirtualHost is a route_config virtual host.
type VirtualHost struct {
	Name      string
	Domains   []string
	Routes    []*Route
	Retry     *RetryPolicy
	PerFilter map[string]*PerRoute
}

// HeaderMatch is a route header matcher.
type HeaderMatch struct {
	Name       string
	Kind       string // exact, prefix, suffix, contains, present
	Value      string
	IgnoreCase bool
	Present    bool
	Invert     bool
}

// Route is one route with its action.
type Route struct {
	Name          string
	Prefix        string
	Path          string
	HasPath       bool
	CaseSensitive bool
	Headers       []HeaderMatch
	Cluster       string
	Timeout       time.Duration // 0 = disabled
	IdleTimeout   time.Duration
	HasIdle       bool
	Retry         *RetryPolicy
	Upgrades      map[string]bool
	PerFilter     map[string]*PerRoute
	NotFoundCode  int
	// Direct is a direct_response route's answer (no cluster).
	Direct *DirectResponse
	// Regex is a safe_regex route's: the whole path without its query
	// string must match (case_sensitive does not apply).
	Regex *regexp.Regexp
}

// DirectResponse is a route's direct_response: Envoy's router answers with
// it as a local reply.
type DirectResponse struct {
	Status int
	Body   []byte
}

// PerRoute is an ExtProcPerRoute override.
type PerRoute struct {
	Disabled         bool
	Mode             *Mode
	FailureModeAllow *bool
	Receiving        []string
	HasReceiving     bool
	Forwarding       []string
	HasForwarding    bool
	InitialMetadata  [][2]string
}

// RetryPolicy is a route retry policy.
type RetryPolicy struct {
	On          map[string]bool
	NumRetries  int
	PerTry      time.Duration
	Base, Max   time.Duration
	StatusCodes map[int]bool
}

// LoadBootstrap reads an Envoy bootstrap (YAML or JSON, chosen by the file
// name like Envoy does) and interprets it.
func LoadBootstrap(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read bootstrap: %w", err)
	}
	bs, err := ParseBootstrap(raw, strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml"))
	if err != nil {
		return nil, fmt.Errorf("bootstrap %s: %w", path, err)
	}
	cfg, err := Interpret(bs)
	if err != nil {
		return nil, fmt.Errorf("bootstrap %s: %w", path, err)
	}
	cfg.Path, _ = filepath.Abs(path)
	return cfg, nil
}

// ParseBootstrap decodes a bootstrap with protojson, unknown fields refused.
func ParseBootstrap(raw []byte, isYAML bool) (*bootstrapv3.Bootstrap, error) {
	js := raw
	if isYAML {
		var v any
		if err := yaml.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("yaml: %w", err)
		}
		var err error
		if js, err = json.Marshal(v); err != nil {
			return nil, fmt.Errorf("yaml to json: %w", err)
		}
	}
	bs := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, bs); err != nil {
		return nil, fmt.Errorf("not a valid envoy.config.bootstrap.v3.Bootstrap: %w", err)
	}
	if err := bs.ValidateAll(); err != nil {
		return nil, fmt.Errorf("invalid bootstrap: %w", err)
	}
	return bs, nil
}

// Interpret turns a bootstrap into the stand-in's Config, refusing anything
// it does not understand.
func Interpret(bs *bootstrapv3.Bootstrap) (*Config, error) {
	if bad := checkUnderstood(bs); len(bad) > 0 {
		return nil, fmt.Errorf("the test stand-in does not understand (real Envoy would behave differently):\n  %s",
			strings.Join(bad, "\n  "))
	}
	cfg := &Config{Node: bs.GetNode(), Static: map[string]*StaticCluster{}}
	if hp := bs.GetHeaderPrefix(); hp != "" && hp != "x-envoy" {
		return nil, fmt.Errorf("header_prefix %q: only the default x-envoy is supported", hp)
	}
	if a := bs.GetAdmin().GetAddress(); a != nil {
		addr, err := socketAddr(a, "admin.address")
		if err != nil {
			return nil, err
		}
		cfg.Admin = addr
	}
	for i, c := range bs.GetStaticResources().GetClusters() {
		sc, err := staticCluster(c)
		if err != nil {
			return nil, fmt.Errorf("static_resources.clusters[%d]: %w", i, err)
		}
		cfg.Static[sc.Name] = sc
	}
	ls := bs.GetStaticResources().GetListeners()
	if len(ls) != 1 {
		return nil, fmt.Errorf("static_resources.listeners: the stand-in serves exactly one listener, found %d", len(ls))
	}
	l, err := listener(cfg, ls[0])
	if err != nil {
		return nil, fmt.Errorf("static_resources.listeners[0]: %w", err)
	}
	cfg.Listener = l
	if dr := bs.GetDynamicResources(); dr != nil {
		ads, err := adsConfig(cfg, dr)
		if err != nil {
			return nil, fmt.Errorf("dynamic_resources: %w", err)
		}
		cfg.ADS = ads
	}
	return cfg, nil
}

func socketAddr(a *corev3.Address, field string) (string, error) {
	sa := a.GetSocketAddress()
	if sa == nil {
		return "", fmt.Errorf("%s: only socket_address is supported", field)
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return "", fmt.Errorf("%s.protocol: only TCP is supported", field)
	}
	if _, ok := sa.GetPortSpecifier().(*corev3.SocketAddress_PortValue); !ok {
		return "", fmt.Errorf("%s: port_value is required", field)
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))), nil
}

func dur(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}

func staticCluster(c *clusterv3.Cluster) (*StaticCluster, error) {
	switch c.GetType() {
	case clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
	default:
		return nil, fmt.Errorf("cluster %q: type %s: static clusters must be STATIC, STRICT_DNS or LOGICAL_DNS", c.GetName(), c.GetType())
	}
	var addrs []string
	for _, le := range c.GetLoadAssignment().GetEndpoints() {
		for _, e := range le.GetLbEndpoints() {
			a, err := socketAddr(e.GetEndpoint().GetAddress(), "load_assignment endpoint")
			if err != nil {
				return nil, fmt.Errorf("cluster %q: %w", c.GetName(), err)
			}
			addrs = append(addrs, a)
		}
	}
	if len(addrs) != 1 {
		return nil, fmt.Errorf("cluster %q: the stand-in needs exactly one endpoint in a static cluster, found %d", c.GetName(), len(addrs))
	}
	return &StaticCluster{Name: c.GetName(), Addr: addrs[0], ConnectTimeout: dur(c.GetConnectTimeout(), 5*time.Second)}, nil
}

func grpcTarget(cfg *Config, gs *corev3.GrpcService, field string) (string, [][2]string, error) {
	eg := gs.GetEnvoyGrpc()
	if eg == nil {
		return "", nil, fmt.Errorf("%s: only envoy_grpc is supported", field)
	}
	if _, ok := cfg.Static[eg.GetClusterName()]; !ok {
		return "", nil, fmt.Errorf("%s.envoy_grpc.cluster_name %q: no such static cluster", field, eg.GetClusterName())
	}
	md, err := headerValues(gs.GetInitialMetadata(), field+".initial_metadata")
	return eg.GetClusterName(), md, err
}

func headerValues(hv []*corev3.HeaderValue, field string) ([][2]string, error) {
	var out [][2]string
	for i, h := range hv {
		v := h.GetValue()
		if len(h.GetRawValue()) > 0 {
			v = string(h.GetRawValue())
		}
		if h.GetKey() == "" {
			return nil, fmt.Errorf("%s[%d]: empty key", field, i)
		}
		out = append(out, [2]string{strings.ToLower(h.GetKey()), v})
	}
	return out, nil
}

func adsConfig(cfg *Config, dr *bootstrapv3.Bootstrap_DynamicResources) (*ADSConfig, error) {
	ac := dr.GetAdsConfig()
	if ac == nil {
		return nil, errors.New("ads_config is required: the stand-in fetches CDS and EDS over ADS only")
	}
	ads := &ADSConfig{}
	switch ac.GetApiType() {
	case corev3.ApiConfigSource_GRPC, corev3.ApiConfigSource_AGGREGATED_GRPC:
	case corev3.ApiConfigSource_DELTA_GRPC, corev3.ApiConfigSource_AGGREGATED_DELTA_GRPC:
		ads.Delta = true
	default:
		return nil, fmt.Errorf("ads_config.api_type %s: accepted GRPC, DELTA_GRPC", ac.GetApiType())
	}
	if len(ac.GetGrpcServices()) != 1 {
		return nil, fmt.Errorf("ads_config.grpc_services: exactly one is supported, found %d", len(ac.GetGrpcServices()))
	}
	var err error
	ads.Cluster, ads.InitialMetadata, err = grpcTarget(cfg, ac.GetGrpcServices()[0], "ads_config.grpc_services[0]")
	if err != nil {
		return nil, err
	}
	if cds := dr.GetCdsConfig(); cds != nil {
		if cds.GetAds() == nil {
			return nil, errors.New("cds_config: only ads: {} is supported")
		}
		ads.CDS = true
		ads.InitialFetchTimeout = dur(cds.GetInitialFetchTimeout(), 15*time.Second)
	}
	return ads, nil
}

func listener(cfg *Config, l *listenerv3.Listener) (*Listener, error) {
	addr, err := socketAddr(l.GetAddress(), "address")
	if err != nil {
		return nil, err
	}
	out := &Listener{Name: l.GetName(), Addr: addr, BufferLimit: DefaultBufferLimit}
	if v := l.GetPerConnectionBufferLimitBytes(); v != nil {
		out.BufferLimit = int(v.GetValue())
	}
	if len(l.GetFilterChains()) != 1 || len(l.GetFilterChains()[0].GetFilters()) != 1 {
		return nil, errors.New("filter_chains: exactly one chain with one filter (the http_connection_manager) is supported")
	}
	f := l.GetFilterChains()[0].GetFilters()[0]
	hcm := &hcmv3.HttpConnectionManager{}
	if f.GetTypedConfig() == nil || f.GetTypedConfig().UnmarshalTo(hcm) != nil {
		return nil, fmt.Errorf("filter_chains[0].filters[0] %q: only envoy.filters.network.http_connection_manager is supported", f.GetName())
	}
	switch hcm.GetCodecType() {
	case hcmv3.HttpConnectionManager_AUTO, hcmv3.HttpConnectionManager_HTTP1:
	default:
		return nil, fmt.Errorf("http_connection_manager.codec_type %s: the stand-in speaks HTTP/1.1 (AUTO or HTTP1)", hcm.GetCodecType())
	}
	out.StreamIdleTimeout = dur(hcm.GetStreamIdleTimeout(), 5*time.Minute)
	out.RequestTimeout = dur(hcm.GetRequestTimeout(), 0)
	out.GenerateRequestID = hcm.GetGenerateRequestId() == nil || hcm.GetGenerateRequestId().GetValue()
	out.AlwaysSetRequestID = hcm.GetAlwaysSetRequestIdInResponse()
	out.Upgrades = map[string]bool{}
	for _, u := range hcm.GetUpgradeConfigs() {
		out.Upgrades[strings.ToLower(u.GetUpgradeType())] = u.GetEnabled() == nil || u.GetEnabled().GetValue()
	}
	filters := hcm.GetHttpFilters()
	for i, hf := range filters {
		field := fmt.Sprintf("http_filters[%d] %q", i, hf.GetName())
		if hf.GetTypedConfig() == nil {
			return nil, fmt.Errorf("%s: typed_config is required", field)
		}
		msg, err := hf.GetTypedConfig().UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", field, err)
		}
		switch c := msg.(type) {
		case *routerv3.Router:
			if i != len(filters)-1 {
				return nil, fmt.Errorf("%s: the router must be the last filter", field)
			}
		case *headermutationv3.HeaderMutation:
			if len(out.Filters) > 0 {
				return nil, fmt.Errorf("%s: the stand-in applies header_mutation only before every ext_proc filter", field)
			}
			rm, err := headerRemovals(c)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", field, err)
			}
			out.Removals = append(out.Removals, rm...)
		case *extprocv3.ExternalProcessor:
			ep, err := extProcFilter(cfg, hf.GetName(), c)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", field, err)
			}
			out.Filters = append(out.Filters, ep)
		default:
			return nil, fmt.Errorf("%s: filter type %T is not supported by the stand-in (header_mutation, ext_proc and router only)", field, msg)
		}
	}
	if len(filters) == 0 {
		return nil, errors.New("http_filters: the router filter is required")
	}
	if !strings.HasSuffix(filters[len(filters)-1].GetTypedConfig().GetTypeUrl(), "envoy.extensions.filters.http.router.v3.Router") {
		return nil, errors.New("http_filters: the last filter must be envoy.filters.http.router")
	}
	rc := hcm.GetRouteConfig()
	if rc == nil {
		return nil, errors.New("http_connection_manager: an inline route_config is required (RDS is not supported)")
	}
	names := map[string]bool{}
	for _, f := range out.Filters {
		names[f.Name] = true
	}
	for i, vh := range rc.GetVirtualHosts() {
		v, err := virtualHost(cfg, vh, names)
		if err != nil {
			return nil, fmt.Errorf("route_config.virtual_hosts[%d] %q: %w", i, vh.GetName(), err)
		}
		out.VirtualHosts = append(out.VirtualHosts, v)
	}
	return out, nil
}

// headerRemovals reads a header_mutation filter: request header removals by
// name or by key prefix only.
func headerRemovals(c *headermutationv3.HeaderMutation) ([]HeaderRemoval, error) {
	var out []HeaderRemoval
	for i, m := range c.GetMutations().GetRequestMutations() {
		switch a := m.GetAction().(type) {
		case *mutationrulesv3.HeaderMutation_Remove:
			out = append(out, HeaderRemoval{Name: strings.ToLower(a.Remove)})
		case *mutationrulesv3.HeaderMutation_RemoveOnMatch_:
			km := a.RemoveOnMatch.GetKeyMatcher()
			switch {
			case km.GetIgnoreCase():
				return nil, fmt.Errorf("request_mutations[%d].remove_on_match: ignore_case is not supported", i)
			case km.GetPrefix() != "":
				out = append(out, HeaderRemoval{Prefix: strings.ToLower(km.GetPrefix())})
			case km.GetExact() != "":
				out = append(out, HeaderRemoval{Name: strings.ToLower(km.GetExact())})
			default:
				return nil, fmt.Errorf("request_mutations[%d].remove_on_match: only exact and prefix key matchers are supported", i)
			}
		default:
			return nil, fmt.Errorf("request_mutations[%d]: only remove and remove_on_match are supported", i)
		}
	}
	return out, nil
}

func mode(pm *extprocv3.ProcessingMode, observability bool, field string) (Mode, error) {
	m := Mode{
		RequestHeaders:  pm.GetRequestHeaderMode() != extprocv3.ProcessingMode_SKIP,
		ResponseHeaders: pm.GetResponseHeaderMode() != extprocv3.ProcessingMode_SKIP,
		RequestBody:     pm.GetRequestBodyMode(),
		ResponseBody:    pm.GetResponseBodyMode(),
	}
	if pm.GetRequestTrailerMode() == extprocv3.ProcessingMode_SEND || pm.GetResponseTrailerMode() == extprocv3.ProcessingMode_SEND {
		return m, fmt.Errorf("%s: trailer processing is not supported by the stand-in", field)
	}
	return m, m.check(observability, field)
}

// check refuses body modes the stand-in does not implement.
func (m Mode) check(observability bool, field string) error {
	ok := func(b BodyMode, allowed ...BodyMode) bool {
		for _, a := range allowed {
			if a == b {
				return true
			}
		}
		return false
	}
	none, streamed, buffered := extprocv3.ProcessingMode_NONE, extprocv3.ProcessingMode_STREAMED, extprocv3.ProcessingMode_BUFFERED
	if observability {
		// Envoy sends bodies in observability mode only when STREAMED (or
		// GRPC); BUFFERED would silently send nothing there.
		if !ok(m.RequestBody, none, streamed) || !ok(m.ResponseBody, none, streamed) {
			return fmt.Errorf("%s: observability_mode supports body modes NONE and STREAMED only (request %s, response %s)", field, m.RequestBody, m.ResponseBody)
		}
		return nil
	}
	if !ok(m.RequestBody, none, buffered) {
		return fmt.Errorf("%s: request_body_mode %s: the stand-in implements NONE and BUFFERED for a blocking filter", field, m.RequestBody)
	}
	if !ok(m.ResponseBody, none) {
		return fmt.Errorf("%s: response_body_mode %s: the stand-in implements NONE only for a blocking filter", field, m.ResponseBody)
	}
	return nil
}

func extProcFilter(cfg *Config, name string, c *extprocv3.ExternalProcessor) (*ExtProcFilter, error) {
	f := &ExtProcFilter{
		Name:              name,
		FailureModeAllow:  c.GetFailureModeAllow(),
		MessageTimeout:    dur(c.GetMessageTimeout(), 200*time.Millisecond),
		MaxMessageTimeout: dur(c.GetMaxMessageTimeout(), 0),
		AllowModeOverride: c.GetAllowModeOverride(),
		Observability:     c.GetObservabilityMode(),
		DeferredClose:     dur(c.GetDeferredCloseTimeout(), 5*time.Second),
		ClearRouteCache:   !c.GetDisableClearRouteCache() && c.GetRouteCacheAction() != extprocv3.ExternalProcessor_RETAIN,
		StatusOnError:     500,
		DisableImmediate:  c.GetDisableImmediateResponse(),
		Receiving:         c.GetMetadataOptions().GetReceivingNamespaces().GetUntyped(),
		Forwarding:        c.GetMetadataOptions().GetForwardingNamespaces().GetUntyped(),
	}
	if c.GetGrpcService() == nil {
		return nil, errors.New("grpc_service is required (http_service is not supported)")
	}
	var err error
	if f.Cluster, f.InitialMetadata, err = grpcTarget(cfg, c.GetGrpcService(), "grpc_service"); err != nil {
		return nil, err
	}
	if c.GetStatusOnError() != nil {
		f.StatusOnError = int(c.GetStatusOnError().GetCode())
	}
	if f.Mode, err = mode(c.GetProcessingMode(), f.Observability, "processing_mode"); err != nil {
		return nil, err
	}
	return f, nil
}

func virtualHost(cfg *Config, vh *routev3.VirtualHost, filters map[string]bool) (*VirtualHost, error) {
	v := &VirtualHost{Name: vh.GetName(), Domains: vh.GetDomains()}
	var err error
	if v.Retry, err = retryPolicy(vh.GetRetryPolicy()); err != nil {
		return nil, fmt.Errorf("retry_policy: %w", err)
	}
	if v.PerFilter, err = perFilter(vh.GetTypedPerFilterConfig(), filters); err != nil {
		return nil, err
	}
	for i, r := range vh.GetRoutes() {
		rt, err := route(r, v.Retry)
		if err != nil {
			return nil, fmt.Errorf("routes[%d] %q: %w", i, r.GetName(), err)
		}
		if rt.PerFilter, err = perFilter(r.GetTypedPerFilterConfig(), filters); err != nil {
			return nil, fmt.Errorf("routes[%d] %q: %w", i, r.GetName(), err)
		}
		v.Routes = append(v.Routes, rt)
	}
	return v, nil
}

func perFilter(m map[string]*anypb.Any, filters map[string]bool) (map[string]*PerRoute, error) {
	out := map[string]*PerRoute{}
	for name, a := range m {
		if !filters[name] {
			return nil, fmt.Errorf("typed_per_filter_config[%s]: no ext_proc filter of that name", name)
		}
		pr := &extprocv3.ExtProcPerRoute{}
		if err := a.UnmarshalTo(pr); err != nil {
			return nil, fmt.Errorf("typed_per_filter_config[%s]: only ExtProcPerRoute is supported (%s)", name, a.GetTypeUrl())
		}
		p := &PerRoute{Disabled: pr.GetDisabled()}
		ov := pr.GetOverrides()
		if ov.GetProcessingMode() != nil {
			// Envoy replaces the whole mode with the route's (unset header
			// modes mean SEND there too); validated when the request runs,
			// where it is known whether the filter observes only.
			pm := ov.GetProcessingMode()
			if pm.GetRequestTrailerMode() == extprocv3.ProcessingMode_SEND || pm.GetResponseTrailerMode() == extprocv3.ProcessingMode_SEND {
				return nil, fmt.Errorf("typed_per_filter_config[%s]: trailer processing is not supported", name)
			}
			md := Mode{
				RequestHeaders:  pm.GetRequestHeaderMode() != extprocv3.ProcessingMode_SKIP,
				ResponseHeaders: pm.GetResponseHeaderMode() != extprocv3.ProcessingMode_SKIP,
				RequestBody:     pm.GetRequestBodyMode(),
				ResponseBody:    pm.GetResponseBodyMode(),
			}
			p.Mode = &md
		}
		if ov.GetFailureModeAllow() != nil {
			v := ov.GetFailureModeAllow().GetValue()
			p.FailureModeAllow = &v
		}
		if ov.GetMetadataOptions().GetReceivingNamespaces() != nil {
			p.HasReceiving = true
			p.Receiving = ov.GetMetadataOptions().GetReceivingNamespaces().GetUntyped()
		}
		if ov.GetMetadataOptions().GetForwardingNamespaces() != nil {
			p.HasForwarding = true
			p.Forwarding = ov.GetMetadataOptions().GetForwardingNamespaces().GetUntyped()
		}
		var err error
		if p.InitialMetadata, err = headerValues(ov.GetGrpcInitialMetadata(), "grpc_initial_metadata"); err != nil {
			return nil, err
		}
		out[name] = p
	}
	return out, nil
}

func route(r *routev3.Route, vhRetry *RetryPolicy) (*Route, error) {
	rt := &Route{Name: r.GetName(), Upgrades: map[string]bool{}}
	m := r.GetMatch()
	switch m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		rt.Prefix = m.GetPrefix()
	case *routev3.RouteMatch_Path:
		rt.Path, rt.HasPath = m.GetPath(), true
	case *routev3.RouteMatch_SafeRegex:
		// Envoy matches the full string, never a part of it.
		re, err := regexp.Compile(`^(?:` + m.GetSafeRegex().GetRegex() + `)$`)
		if err != nil {
			return nil, fmt.Errorf("match.safe_regex %q: not an RE2 expression: %w", m.GetSafeRegex().GetRegex(), err)
		}
		rt.Regex = re
	default:
		return nil, errors.New("match: only prefix, path and safe_regex are supported")
	}
	rt.CaseSensitive = m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue()
	for i, h := range m.GetHeaders() {
		hm := HeaderMatch{Name: strings.ToLower(h.GetName()), Invert: h.GetInvertMatch()}
		switch s := h.GetHeaderMatchSpecifier().(type) {
		case *routev3.HeaderMatcher_ExactMatch:
			//lint:ignore SA1019 deprecated, still honoured by Envoy
			hm.Kind, hm.Value = "exact", s.ExactMatch
		case *routev3.HeaderMatcher_PrefixMatch:
			//lint:ignore SA1019 deprecated, still honoured by Envoy
			hm.Kind, hm.Value = "prefix", s.PrefixMatch
		case *routev3.HeaderMatcher_PresentMatch:
			hm.Kind, hm.Present = "present", s.PresentMatch
		case *routev3.HeaderMatcher_StringMatch:
			sm := s.StringMatch
			hm.IgnoreCase = sm.GetIgnoreCase()
			switch {
			case sm.GetExact() != "" || sm.GetMatchPattern() == nil:
				hm.Kind, hm.Value = "exact", sm.GetExact()
			case sm.GetPrefix() != "":
				hm.Kind, hm.Value = "prefix", sm.GetPrefix()
			case sm.GetSuffix() != "":
				hm.Kind, hm.Value = "suffix", sm.GetSuffix()
			case sm.GetContains() != "":
				hm.Kind, hm.Value = "contains", sm.GetContains()
			default:
				return nil, fmt.Errorf("match.headers[%d].string_match: only exact, prefix, suffix and contains are supported", i)
			}
		default:
			return nil, fmt.Errorf("match.headers[%d]: only exact_match, prefix_match, present_match and string_match are supported", i)
		}
		rt.Headers = append(rt.Headers, hm)
	}
	if dr := r.GetDirectResponse(); dr != nil {
		rt.Direct = &DirectResponse{Status: int(dr.GetStatus())}
		switch b := dr.GetBody().GetSpecifier().(type) {
		case nil:
		case *corev3.DataSource_InlineString:
			rt.Direct.Body = []byte(b.InlineString)
		case *corev3.DataSource_InlineBytes:
			rt.Direct.Body = b.InlineBytes
		default:
			return nil, errors.New("direct_response.body: only inline_string and inline_bytes are supported")
		}
		return rt, nil
	}
	ra := r.GetRoute()
	if ra == nil {
		return nil, errors.New("only route and direct_response actions are supported (no redirect)")
	}
	if ra.GetCluster() == "" {
		return nil, errors.New("route.cluster is required (cluster_header and weighted_clusters are not supported)")
	}
	rt.Cluster = ra.GetCluster()
	rt.Timeout = dur(ra.GetTimeout(), 15*time.Second)
	if ra.GetIdleTimeout() != nil {
		rt.IdleTimeout, rt.HasIdle = ra.GetIdleTimeout().AsDuration(), true
	}
	rt.NotFoundCode = 503
	if ra.GetClusterNotFoundResponseCode() == routev3.RouteAction_NOT_FOUND {
		rt.NotFoundCode = 404
	} else if ra.GetClusterNotFoundResponseCode() == routev3.RouteAction_INTERNAL_SERVER_ERROR {
		rt.NotFoundCode = 500
	}
	for _, u := range ra.GetUpgradeConfigs() {
		rt.Upgrades[strings.ToLower(u.GetUpgradeType())] = u.GetEnabled() == nil || u.GetEnabled().GetValue()
	}
	var err error
	rt.Retry = vhRetry
	if ra.GetRetryPolicy() != nil {
		if rt.Retry, err = retryPolicy(ra.GetRetryPolicy()); err != nil {
			return nil, fmt.Errorf("route.retry_policy: %w", err)
		}
	}
	return rt, nil
}

// retryOn lists the retry_on conditions the stand-in implements.
var retryOn = map[string]bool{"5xx": true, "gateway-error": true, "reset": true, "connect-failure": true,
	"refused-stream": true, "retriable-status-codes": true, "reset-before-request": true}

func retryPolicy(p *routev3.RetryPolicy) (*RetryPolicy, error) {
	if p == nil {
		return nil, nil
	}
	rp := &RetryPolicy{On: map[string]bool{}, NumRetries: 1, StatusCodes: map[int]bool{},
		PerTry: dur(p.GetPerTryTimeout(), 0), Base: 25 * time.Millisecond}
	for _, c := range strings.Split(p.GetRetryOn(), ",") {
		c = strings.TrimSpace(c)
		if c == "" {
			continue
		}
		if !retryOn[c] {
			return nil, fmt.Errorf("retry_on %q: the stand-in implements %s", c, strings.Join(sortedKeys(retryOn), ", "))
		}
		rp.On[c] = true
	}
	if p.GetNumRetries() != nil {
		rp.NumRetries = int(p.GetNumRetries().GetValue())
	}
	for _, c := range p.GetRetriableStatusCodes() {
		rp.StatusCodes[int(c)] = true
	}
	if bo := p.GetRetryBackOff(); bo != nil {
		rp.Base = dur(bo.GetBaseInterval(), rp.Base)
		rp.Max = dur(bo.GetMaxInterval(), 0)
	}
	if rp.Max == 0 {
		rp.Max = 10 * rp.Base
	}
	return rp, nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
