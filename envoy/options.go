package envoy

import (
	"time"

	"github.com/llmrouter/llmrouter/internal/config"
)

// Names shared by the bootstrap, the xDS resources and the gateway.
const (
	// ExtProcCluster is the static cluster of the gateway's ext_proc server.
	ExtProcCluster = "extproc"
	// XDSCluster is the static cluster of the scheduler's ADS server.
	XDSCluster = "xds_cluster"
	// PickFilterName is ext_proc filter #1 (blocking: request headers and body).
	PickFilterName = "llmrouter.ext_proc.pick"
	// ObserveFilterName is ext_proc filter #2 (observability mode: responses).
	ObserveFilterName = "llmrouter.ext_proc.observe"
	// StripFilterName is the header_mutation filter that removes the
	// x-llmrouter-* headers clients send (StripFilter).
	StripFilterName = "llmrouter.strip_client_headers"
	// MetadataNamespace and DestinationKey locate the pick in the request's
	// dynamic metadata (Gateway API Inference Extension endpoint picker protocol).
	MetadataNamespace = "envoy.lb"
	DestinationKey    = "x-gateway-destination-endpoint"
	// RouteConfigName and VirtualHostName name the inline route table.
	RouteConfigName = "llmrouter"
	VirtualHostName = "llm"
	// ListenerName is the static data-plane listener.
	ListenerName = "llmrouter_http"
)

// Options shape the data-plane resources. The zero value is not useful; start
// from DefaultOptions or OptionsFromConfig.
type Options struct {
	// ClusterName is the EDS cluster of the engine fleet.
	ClusterName string
	// Listen is the data-plane listener address (host:port; empty host = 0.0.0.0).
	Listen string
	// UpstreamHTTP2 speaks HTTP/2 (h2c) to engines; engines speak HTTP/1.1,
	// so the default is HTTP/1.1.
	UpstreamHTTP2 bool
	// ConnectTimeout bounds connecting to an engine; short, so a dead pick
	// fails over to the next entry of the pick quickly.
	ConnectTimeout time.Duration
	// UpstreamIdleTimeout closes idle upstream connections (kept generous:
	// reconnecting costs more than an idle socket).
	UpstreamIdleTimeout time.Duration
	// StreamIdleTimeout is the longest silence on a stream (HCM and route):
	// a long prefill can keep an SSE stream quiet for minutes.
	StreamIdleTimeout time.Duration
	// RetryCount is the number of retries per request; each retry takes the
	// next entry of the pick (override_host), then round robin.
	RetryCount int
	// MessageTimeout is ext_proc's per-message timeout (short: a hung gateway
	// must not stall traffic).
	MessageTimeout time.Duration
	// WaitScheduleTimeout is how long the gateway may hold a queued request;
	// max_message_timeout is set one second above it.
	WaitScheduleTimeout time.Duration
	// MaxRequestBytes bounds a buffered request body (413 beyond it).
	MaxRequestBytes uint32
	// EDSCluster, when set, makes the fleet cluster subscribe to EDS on its
	// own gRPC stream to that static cluster instead of over ADS: for an
	// existing Envoy whose ADS belongs to another control plane.
	EDSCluster string
	// EDSDelta selects incremental xDS for that stream.
	EDSDelta bool
	// EDSToken, when set, is presented on that stream (XDSGrpcService).
	EDSToken string
	// ExtProcToken, when set, is presented by both ext_proc filters on every
	// stream (grpc_service initial_metadata "authorization: Bearer <token>"):
	// the gateway demands the shared token when it listens beyond loopback.
	ExtProcToken string
}

// DefaultOptions are the options of the shipped bootstrap.
func DefaultOptions() Options {
	return OptionsFromConfig(config.Default())
}

// OptionsFromConfig takes the keys that shape Envoy's resources from cfg.
func OptionsFromConfig(cfg config.Config) Options {
	return Options{
		ClusterName:         cfg.Scheduler.ClusterName,
		Listen:              "0.0.0.0:8080",
		ConnectTimeout:      2 * time.Second,
		UpstreamIdleTimeout: time.Hour,
		StreamIdleTimeout:   10 * time.Minute,
		RetryCount:          cfg.Gateway.RetryCount,
		MessageTimeout:      200 * time.Millisecond,
		WaitScheduleTimeout: cfg.Gateway.WaitScheduleTimeout,
		MaxRequestBytes:     16 << 20,
	}
}
