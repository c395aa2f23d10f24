package standin

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// understood lists, per message type, every field the stand-in either
// interprets or may safely ignore (stats names, access logs, tuning that does
// not change what our tests observe). A populated field outside this table is
// a configuration the stand-in would silently misbehave on, so loading fails
// and names it. Sub-messages of a listed field are checked with their own
// entry; a message type with no entry is refused unless it is a well-known
// leaf (Duration, wrappers, Struct) or listed in opaque.
var understood = map[protoreflect.FullName][]string{
	"envoy.config.bootstrap.v3.Bootstrap": {"node", "static_resources", "dynamic_resources", "admin",
		"layered_runtime", "stats_config", "stats_flush_interval", "overload_manager", "stats_sinks",
		"cluster_manager", "header_prefix"},
	"envoy.config.bootstrap.v3.Bootstrap.StaticResources":  {"listeners", "clusters"},
	"envoy.config.bootstrap.v3.Bootstrap.DynamicResources": {"ads_config", "cds_config"},
	"envoy.config.bootstrap.v3.Admin":                      {"address", "access_log", "access_log_path", "profile_path"},
	"envoy.config.bootstrap.v3.ClusterManager":             {"local_cluster_name"},
	"envoy.config.core.v3.Address":                         {"socket_address"},
	"envoy.config.core.v3.SocketAddress":                   {"address", "port_value", "protocol", "ipv4_compat"},
	"envoy.config.core.v3.ApiConfigSource": {"api_type", "transport_api_version", "grpc_services",
		"set_node_on_first_message_only", "rate_limit_settings"},
	"envoy.config.core.v3.ConfigSource":          {"ads", "resource_api_version", "initial_fetch_timeout"},
	"envoy.config.core.v3.GrpcService":           {"envoy_grpc", "timeout", "initial_metadata"},
	"envoy.config.core.v3.GrpcService.EnvoyGrpc": {"cluster_name", "authority", "max_receive_message_length"},
	"envoy.config.core.v3.HeaderValue":           {"key", "value", "raw_value"},
	"envoy.config.core.v3.TypedExtensionConfig":  {"name", "typed_config"},

	"envoy.config.listener.v3.Listener": {"name", "address", "filter_chains", "per_connection_buffer_limit_bytes",
		"access_log", "traffic_direction", "stat_prefix"},
	"envoy.config.listener.v3.FilterChain": {"filters", "name"},
	"envoy.config.listener.v3.Filter":      {"name", "typed_config"},

	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager": {"codec_type",
		"stat_prefix", "route_config", "http_filters", "upgrade_configs", "stream_idle_timeout", "request_timeout",
		"access_log", "generate_request_id", "preserve_external_request_id", "use_remote_address",
		"normalize_path", "merge_slashes", "common_http_protocol_options", "http_protocol_options",
		"server_name", "xff_num_trusted_hops", "drain_timeout", "delayed_close_timeout",
		"request_headers_timeout", "path_with_escaped_slashes_action", "internal_address_config",
		"strip_matching_host_port", "always_set_request_id_in_response"},
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter": {"name", "typed_config", "is_optional"},
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig": {
		"upgrade_type", "enabled"},

	"envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor": {"grpc_service", "failure_mode_allow",
		"processing_mode", "message_timeout", "max_message_timeout", "metadata_options", "allow_mode_override",
		"observability_mode", "stat_prefix", "deferred_close_timeout", "route_cache_action",
		"disable_clear_route_cache", "status_on_error", "disable_immediate_response", "emit_client_span",
		"filter_metadata"},
	"envoy.extensions.filters.http.ext_proc.v3.ProcessingMode": {"request_header_mode", "response_header_mode",
		"request_body_mode", "response_body_mode", "request_trailer_mode", "response_trailer_mode"},
	"envoy.extensions.filters.http.ext_proc.v3.MetadataOptions":                    {"receiving_namespaces", "forwarding_namespaces"},
	"envoy.extensions.filters.http.ext_proc.v3.MetadataOptions.MetadataNamespaces": {"untyped"},
	"envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute":                    {"disabled", "overrides"},
	"envoy.extensions.filters.http.ext_proc.v3.ExtProcOverrides": {"processing_mode", "failure_mode_allow",
		"metadata_options", "grpc_initial_metadata"},
	"envoy.extensions.filters.http.header_mutation.v3.HeaderMutation":    {"mutations"},
	"envoy.extensions.filters.http.header_mutation.v3.Mutations":         {"request_mutations"},
	"envoy.config.common.mutation_rules.v3.HeaderMutation":               {"remove", "remove_on_match"},
	"envoy.config.common.mutation_rules.v3.HeaderMutation.RemoveOnMatch": {"key_matcher"},
	"envoy.extensions.filters.http.router.v3.Router": {"dynamic_stats", "suppress_envoy_headers",
		"start_child_span"},
	"envoy.config.core.v3.HttpProtocolOptions":  {"idle_timeout", "max_headers_count", "max_connection_duration"},
	"envoy.config.core.v3.Http1ProtocolOptions": {},
	"envoy.config.core.v3.Http2ProtocolOptions": {"max_concurrent_streams", "initial_stream_window_size",
		"initial_connection_window_size", "connection_keepalive"},

	"envoy.config.route.v3.RouteConfiguration":   {"name", "virtual_hosts", "validate_clusters"},
	"envoy.config.route.v3.VirtualHost":          {"name", "domains", "routes", "retry_policy", "typed_per_filter_config"},
	"envoy.config.route.v3.Route":                {"name", "match", "route", "direct_response", "typed_per_filter_config", "decorator"},
	"envoy.config.route.v3.DirectResponseAction": {"status", "body"},
	"envoy.config.core.v3.DataSource":            {"inline_string", "inline_bytes"},
	"envoy.config.route.v3.RouteMatch":           {"prefix", "path", "safe_regex", "headers", "case_sensitive"},
	"envoy.config.route.v3.HeaderMatcher": {"name", "string_match", "exact_match", "prefix_match",
		"present_match", "invert_match"},
	"envoy.type.matcher.v3.StringMatcher": {"exact", "prefix", "suffix", "contains", "ignore_case"},
	// RE2, which Go's regexp implements; google_re2 is Envoy's only engine.
	"envoy.type.matcher.v3.RegexMatcher": {"regex", "google_re2"},
	"envoy.config.route.v3.RouteAction": {"cluster", "timeout", "idle_timeout", "retry_policy",
		"upgrade_configs", "cluster_not_found_response_code"},
	"envoy.config.route.v3.RouteAction.UpgradeConfig": {"upgrade_type", "enabled"},
	"envoy.config.route.v3.RetryPolicy": {"retry_on", "num_retries", "per_try_timeout", "retry_back_off",
		"retriable_status_codes", "host_selection_retry_max_attempts"},
	"envoy.config.route.v3.RetryPolicy.RetryBackOff": {"base_interval", "max_interval"},
	"envoy.config.route.v3.Decorator":                {"operation", "propagate"},

	"envoy.config.cluster.v3.Cluster": {"name", "type", "connect_timeout", "load_assignment",
		"eds_cluster_config", "load_balancing_policy", "lb_policy", "typed_extension_protocol_options",
		"http2_protocol_options", "dns_lookup_family", "circuit_breakers", "upstream_connection_options",
		"common_lb_config", "per_connection_buffer_limit_bytes", "respect_dns_ttl", "dns_refresh_rate",
		"alt_stat_name", "ignore_health_on_host_removal", "metadata"},
	"envoy.config.cluster.v3.Cluster.EdsClusterConfig":   {"eds_config", "service_name"},
	"envoy.config.cluster.v3.LoadBalancingPolicy":        {"policies"},
	"envoy.config.cluster.v3.LoadBalancingPolicy.Policy": {"typed_extension_config"},
	"envoy.config.endpoint.v3.ClusterLoadAssignment":     {"cluster_name", "endpoints", "policy"},
	"envoy.config.endpoint.v3.ClusterLoadAssignment.Policy": {"overprovisioning_factor",
		"endpoint_stale_after", "weighted_priority_health"},
	"envoy.config.endpoint.v3.LocalityLbEndpoints": {"lb_endpoints", "locality", "priority",
		"load_balancing_weight"},
	"envoy.config.endpoint.v3.LbEndpoint": {"endpoint", "health_status", "metadata", "load_balancing_weight"},
	"envoy.config.endpoint.v3.Endpoint":   {"address", "hostname"},
	"envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost": {"override_host_sources",
		"fallback_policy", "selected_host_key"},
	"envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost.OverrideHostSource": {"header",
		"metadata"},
	"envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin": {"locality_lb_config"},
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {"explicit_http_config",
		"common_http_protocol_options", "upstream_http_protocol_options"},
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig": {"http_protocol_options",
		"http2_protocol_options"},
}

// opaque message types are accepted whole: they only name things, tune
// resources, or log, and none of them changes what a request sees.
var opaque = map[protoreflect.FullName]bool{
	"envoy.config.core.v3.Node":                         true,
	"envoy.config.core.v3.Locality":                     true,
	"envoy.config.core.v3.Metadata":                     true,
	"envoy.config.core.v3.RuntimeFractionalPercent":     true,
	"envoy.config.core.v3.AggregatedConfigSource":       true,
	"envoy.config.core.v3.RateLimitSettings":            true,
	"envoy.config.core.v3.KeepaliveSettings":            true,
	"envoy.config.core.v3.UpstreamHttpProtocolOptions":  true,
	"envoy.config.core.v3.TcpKeepalive":                 true,
	"envoy.config.cluster.v3.CircuitBreakers":           true,
	"envoy.config.cluster.v3.UpstreamConnectionOptions": true,
	"envoy.config.cluster.v3.Cluster.CommonLbConfig":    true,
	"envoy.config.accesslog.v3.AccessLog":               true,
	"envoy.config.bootstrap.v3.LayeredRuntime":          true,
	"envoy.config.metrics.v3.StatsConfig":               true,
	"envoy.config.metrics.v3.StatsSink":                 true,
	"envoy.config.overload.v3.OverloadManager":          true,
	"envoy.type.metadata.v3.MetadataKey":                true,
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.InternalAddressConfig": true,
	"envoy.extensions.load_balancing_policies.common.v3.LocalityLbConfig":                                     true,
	"envoy.config.core.v3.Http1ProtocolOptions.HeaderKeyFormat":                                               true,
	"envoy.type.v3.HttpStatus": true,
}

// checkUnderstood walks m and returns every populated field the stand-in
// does not understand, as dotted paths, sorted.
func checkUnderstood(m proto.Message) []string {
	var bad []string
	walkUnderstood(m.ProtoReflect(), string(m.ProtoReflect().Descriptor().Name()), &bad)
	sort.Strings(bad)
	return bad
}

func walkUnderstood(m protoreflect.Message, path string, bad *[]string) {
	d := m.Descriptor()
	name := d.FullName()
	if opaque[name] || strings.HasPrefix(string(name), "google.protobuf.") && name != "google.protobuf.Any" {
		return
	}
	if name == "google.protobuf.Any" {
		a := m.Interface().(*anypb.Any)
		inner, err := a.UnmarshalNew()
		if err != nil {
			*bad = append(*bad, fmt.Sprintf("%s: cannot decode %s: %v", path, a.GetTypeUrl(), err))
			return
		}
		walkUnderstood(inner.ProtoReflect(), path+"["+string(inner.ProtoReflect().Descriptor().FullName())+"]", bad)
		return
	}
	fields, ok := understood[name]
	if !ok {
		*bad = append(*bad, fmt.Sprintf("%s: message type %s is not supported by the stand-in", path, name))
		return
	}
	allowed := make(map[string]bool, len(fields))
	for _, f := range fields {
		allowed[f] = true
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + string(fd.Name())
		if !allowed[string(fd.Name())] {
			*bad = append(*bad, p+": field not supported by the stand-in")
			return true
		}
		switch {
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					walkUnderstood(mv.Message(), p+"["+k.String()+"]", bad)
					return true
				})
			}
		case fd.IsList():
			if fd.Kind() == protoreflect.MessageKind {
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					walkUnderstood(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i), bad)
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			walkUnderstood(v.Message(), p, bad)
		}
		return true
	})
}
