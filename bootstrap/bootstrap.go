package bootstrap

import (
	_ "embed"
	"fmt"
	"net"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/llmrouter/llmrouter/envoy"
	"github.com/llmrouter/llmrouter/internal/config"
)

// DefaultYAML is the shipped default bootstrap (bootstrap/envoy.yaml).
//
//go:embed envoy.yaml
var DefaultYAML []byte

// ExistingEnvoyYAML is the plug-in example (bootstrap/existing-envoy.yaml).
//
//go:embed existing-envoy.yaml
var ExistingEnvoyYAML []byte

// Options are the knobs of `llmrouter bootstrap`.
type Options struct {
	// Envoy shapes the listener, filters, routes and the fleet cluster.
	Envoy envoy.Options
	// XDSAddress is the scheduler's ADS server (host:port; a name is resolved by DNS).
	XDSAddress string
	// XDSToken, when set, is presented to the xDS server on every stream
	// (initial_metadata "authorization: Bearer <token>"); it must equal the
	// scheduler's llm_scheduler.xds_token. The rendered file then holds a
	// secret.
	XDSToken string
	// ExtProcAddress is the gateway's ext_proc server.
	ExtProcAddress string
	// AdminAddress is Envoy's admin interface; keep it on loopback.
	AdminAddress string
	// Delta selects incremental xDS (DELTA_GRPC) instead of state of the world.
	Delta bool
	// NodeID and NodeCluster identify this Envoy to the xDS server.
	NodeID      string
	NodeCluster string
}

// DefaultOptions are those of the shipped envoy.yaml.
func DefaultOptions() Options {
	return OptionsFromConfig(config.Default())
}

// OptionsFromConfig derives the addresses from cfg: Envoy reaches the xDS
// server and the gateway on their configured ports, on loopback when the
// configured address has no host.
func OptionsFromConfig(cfg config.Config) Options {
	eo := envoy.OptionsFromConfig(cfg)
	if !config.Loopback(cfg.Gateway.Listen) {
		// The gateway demands the shared token there (llmrouter gateway).
		eo.ExtProcToken = cfg.Token
	}
	return Options{
		Envoy:          eo,
		XDSAddress:     dialable(cfg.Scheduler.XDSListen, "18000"),
		XDSToken:       cfg.Scheduler.XDSToken,
		ExtProcAddress: dialable(cfg.Gateway.Listen, "9002"),
		AdminAddress:   "127.0.0.1:9901",
		NodeID:         "llmrouter-envoy",
		NodeCluster:    "llmrouter",
	}
}

// dialable turns a listen address (":18000", "0.0.0.0:18000") into one a
// local Envoy can dial.
func dialable(listen, defPort string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return net.JoinHostPort("127.0.0.1", defPort)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// Build assembles the bootstrap.
func Build(o Options) (*bootstrapv3.Bootstrap, error) {
	b, err := common(o, o.Envoy, envoy.XDSCluster)
	if err != nil {
		return nil, err
	}
	api := corev3.ApiConfigSource_GRPC
	if o.Delta {
		api = corev3.ApiConfigSource_DELTA_GRPC
	}
	b.DynamicResources = &bootstrapv3.Bootstrap_DynamicResources{
		AdsConfig: &corev3.ApiConfigSource{
			ApiType:                   api,
			TransportApiVersion:       corev3.ApiVersion_V3,
			GrpcServices:              []*corev3.GrpcService{envoy.XDSGrpcService(envoy.XDSCluster, o.XDSToken)},
			SetNodeOnFirstMessageOnly: true,
		},
		// The listener is static; the fleet cluster (and through it its
		// endpoints) comes over ADS.
		CdsConfig: envoy.ADSConfigSource(),
	}
	return b, nil
}

// BuildExistingEnvoy is what an Envoy with a configuration of its own needs:
// the fleet cluster, static, with its endpoints on a plain EDS stream from the
// scheduler (its ADS may belong to another control plane), the ext_proc and
// xDS clusters, and a listener showing where the two filters and the routes go.
func BuildExistingEnvoy(o Options) (*bootstrapv3.Bootstrap, error) {
	eo := o.Envoy
	eo.EDSCluster = xdsClusterName
	eo.EDSDelta = o.Delta
	eo.EDSToken = o.XDSToken
	b, err := common(o, eo, xdsClusterName)
	if err != nil {
		return nil, err
	}
	b.StaticResources.Clusters = append([]*clusterv3.Cluster{envoy.BackendCluster(eo)}, b.StaticResources.Clusters...)
	return b, nil
}

// common is what both renderings share: the node, the admin address, the
// listener (from eo), and the scheduler's xDS cluster (named xdsName) and
// the gateway's ext_proc cluster.
func common(o Options, eo envoy.Options, xdsName string) (*bootstrapv3.Bootstrap, error) {
	if !config.ValidBearerToken(eo.ExtProcToken) {
		// The value is a secret: name the rule only.
		return nil, fmt.Errorf(`token: Envoy presents it to the gateway in initial_metadata, where it must be letters, digits and - . _ ~ + / = only (a bearer token, such as the output of openssl rand -hex 32)`)
	}
	lis, err := envoy.Listener(eo)
	if err != nil {
		return nil, err
	}
	xds, err := envoy.GRPCCluster(xdsName, o.XDSAddress)
	if err != nil {
		return nil, fmt.Errorf("--xds: %w", err)
	}
	ext, err := envoy.GRPCCluster(envoy.ExtProcCluster, o.ExtProcAddress)
	if err != nil {
		return nil, fmt.Errorf("--extproc: %w", err)
	}
	admin, err := socketAddress(o.AdminAddress)
	if err != nil {
		return nil, fmt.Errorf("--admin: %w", err)
	}
	return &bootstrapv3.Bootstrap{
		Node:  &corev3.Node{Id: o.NodeID, Cluster: o.NodeCluster},
		Admin: &bootstrapv3.Admin{Address: admin},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Listeners: []*listenerv3.Listener{lis},
			Clusters:  []*clusterv3.Cluster{xds, ext},
		},
	}, nil
}

// xdsClusterName names the scheduler's cluster in an existing Envoy, apart
// from whatever xds_cluster that Envoy already has.
const xdsClusterName = "llmrouter_xds"

func socketAddress(addr string) (*corev3.Address, error) {
	host, port, err := envoy.SplitAddress(addr)
	if err != nil {
		return nil, err
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}, nil
}

const defaultHeader = `# Envoy bootstrap for llmrouter, rendered by ` + "`llmrouter bootstrap`" + ` (do not edit by hand:
# change the flags or package envoy and render again).
#   listener :8080  strip client x-llmrouter-*, x-prefiller-* headers -> ext_proc #1 (pick: request headers +
#                   buffered body) -> ext_proc #2 (observe) -> router; routes: the OpenAI API paths
#                   and the /v1/realtime WebSocket to cluster llm_backends (EDS, override_host from
#                   metadata envoy.lb/x-gateway-destination-endpoint, round robin fallback), 404 else
#   xds_cluster     the scheduler's ADS server (CDS + EDS)
#   extproc         the gateway's ext_proc server
# Requires Envoy >= 1.35 (override_host). Run: envoy -c envoy.yaml, or func-e run -c envoy.yaml
`

const existingHeader = `# Plugging llmrouter into an Envoy that already has a configuration, rendered by
# ` + "`llmrouter bootstrap --existing-envoy`" + `. Copy into your own configuration:
#   - clusters llm_backends (endpoints from llmrouter's xDS server on a plain EDS stream, so
#     your ADS may stay with another control plane), llmrouter_xds and extproc;
#   - in your HTTP connection manager: the http_filters llmrouter.strip_client_headers (first),
#     llmrouter.ext_proc.pick and llmrouter.ext_proc.observe before your router, upgrade_configs
#     websocket, and routes like those below (the /v1/realtime WebSocket route with its
#     typed_per_filter_config first, one per API path, then 404 for every other path).
# The listener here is only a complete, valid example of where those pieces go.
`

// tokenHeader is added when the rendering carries the xDS token.
const tokenHeader = `# Envoy presents llm_scheduler.xds_token to the xDS server (initial_metadata): this file holds a
# secret; give it the permissions of one.
`

// extProcTokenHeader is added when the rendering carries the shared token.
const extProcTokenHeader = `# Envoy presents the shared token (LLMROUTER_TOKEN) to the gateway, which listens beyond loopback
# (initial_metadata of both ext_proc filters): this file holds a secret; give it the permissions of one.
`

// Render is the YAML of Build(o), with a header comment.
func Render(o Options) ([]byte, error) {
	b, err := Build(o)
	if err != nil {
		return nil, err
	}
	return render(header(defaultHeader, o), b)
}

// RenderExistingEnvoy is the YAML of BuildExistingEnvoy(o), with a header comment.
func RenderExistingEnvoy(o Options) ([]byte, error) {
	b, err := BuildExistingEnvoy(o)
	if err != nil {
		return nil, err
	}
	return render(header(existingHeader, o), b)
}

func header(h string, o Options) string {
	if o.XDSToken != "" {
		h += tokenHeader
	}
	if o.Envoy.ExtProcToken != "" {
		h += extProcTokenHeader
	}
	return h
}

func render(header string, b *bootstrapv3.Bootstrap) ([]byte, error) {
	if err := envoy.Validate(b); err != nil {
		return nil, fmt.Errorf("rendered bootstrap is invalid (a bug): %w", err)
	}
	y, err := envoy.MarshalYAML(b)
	if err != nil {
		return nil, err
	}
	return append([]byte(header), y...), nil
}
