package extproc

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/llmrouter/llmrouter/internal/config"
)

// Header and metadata names of the endpoint-picker protocol (Gateway API
// Inference Extension) and of our own requests.
const (
	HeaderDestination = "x-gateway-destination-endpoint"
	HeaderPrefiller   = "x-prefiller-host-port"
	// HeaderPrefillerBootstrap is the prefill instance's SGLang bootstrap
	// port, beside HeaderPrefiller when its agent registered one.
	HeaderPrefillerBootstrap = "x-prefiller-bootstrap-port"
	HeaderRequestID          = "x-request-id"
	HeaderSessionID          = "x-session-id"
	HeaderPriority           = "x-llmrouter-priority"
	// HeaderModel names the model of a request without a body (WebSocket
	// upgrades, body-less calls); the query parameter model= works too.
	HeaderModel = "x-model"
	// HeaderLoRA names a LoRA adapter explicitly (else the model names it).
	HeaderLoRA = "x-lora-adapter"
	// MetadataNamespace is where override_host reads the pick
	// (metadata_options.receiving_namespaces must list it).
	MetadataNamespace = "envoy.lb"
	// GatewayNamespace carries the gateway's own metadata from filter #1 to
	// filter #2 (the bootstrap lists it in filter #1's receiving and filter
	// #2's forwarding namespaces; envoy.GatewayNamespace).
	GatewayNamespace = "llmrouter"
	// MetadataKeyRequestID is the request id in GatewayNamespace.
	MetadataKeyRequestID = "request_id"
	// MetadataKeyPickID is the stream's pick id in GatewayNamespace: the key
	// filter #2 reports the outcome under.
	MetadataKeyPickID = "pick_id"
)

// Options tune the gateway; OptionsFromConfig fills them from llm_gateway.
type Options struct {
	BlockChars     int
	MaxPrefixChars int
	// TailBlockChars and MaxHashedChars: past MaxPrefixChars the hashes
	// go on in blocks of TailBlockChars up to MaxHashedChars
	// (prompthash.Tiered). 0 takes the default; TailBlockChars < 0 hashes
	// nothing past MaxPrefixChars.
	TailBlockChars int
	MaxHashedChars int
	CharsPerToken  float64
	// PickTimeout bounds a pick that is not queued.
	PickTimeout time.Duration
	// WaitScheduleTimeout is the longest queue wait; Envoy's message timeout
	// is overridden to this plus QueueTimeoutSlack before waiting.
	WaitScheduleTimeout time.Duration
	// TrackTTL forgets requests whose response was never observed.
	TrackTTL time.Duration
	TrackMax int
	// ProbeInterval is how often a request probes a scheduler the breaker
	// considers down.
	ProbeInterval time.Duration
	// MaxObservedBody bounds how much of a non-streaming response body is kept
	// to read its usage.
	MaxObservedBody int
	// TrustedPriorityHeader is the only header a priority is read from
	// (llm_gateway.trusted_priority_header, lower case); "" reads none.
	TrustedPriorityHeader string
	// ModelsCacheTTL is how long the gateway's GET /v1/models answer is
	// reused; 0 means DefaultModelsCacheTTL.
	ModelsCacheTTL time.Duration
}

// QueueTimeoutSlack is added to wait_schedule_timeout in the
// override_message_timeout the gateway sends before a queue wait;
// max_message_timeout must be at least the sum (ARCHITECTURE §5.1).
const QueueTimeoutSlack = time.Second

// OptionsFromConfig derives Options from the llm_gateway section.
func OptionsFromConfig(g config.Gateway) Options {
	return Options{
		BlockChars:          g.BlockChars,
		MaxPrefixChars:      g.MaxPrefixChars,
		TailBlockChars:      cmp.Or(g.TailBlockChars, -1),
		MaxHashedChars:      g.MaxHashedChars,
		CharsPerToken:       g.CharsPerToken,
		PickTimeout:         g.PickTimeout,
		WaitScheduleTimeout: g.WaitScheduleTimeout,
		// Lower-cased so "" can never equal a header key.
		TrustedPriorityHeader: strings.ToLower(g.TrustedPriorityHeader),
	}
}

func (o *Options) defaults() {
	d := config.Default().Gateway
	if o.BlockChars <= 0 {
		o.BlockChars = d.BlockChars
	}
	if o.MaxPrefixChars <= 0 {
		o.MaxPrefixChars = d.MaxPrefixChars
	}
	if o.TailBlockChars == 0 {
		o.TailBlockChars = d.TailBlockChars
	}
	if o.MaxHashedChars <= 0 {
		o.MaxHashedChars = d.MaxHashedChars
	}
	if o.TailBlockChars < 0 || o.TailBlockChars%o.BlockChars != 0 || o.MaxHashedChars < o.MaxPrefixChars {
		o.TailBlockChars, o.MaxHashedChars = -1, o.MaxPrefixChars
	}
	if o.CharsPerToken <= 0 {
		o.CharsPerToken = d.CharsPerToken
	}
	if o.PickTimeout <= 0 {
		o.PickTimeout = d.PickTimeout
	}
	if o.WaitScheduleTimeout <= 0 {
		o.WaitScheduleTimeout = d.WaitScheduleTimeout
	}
	if o.TrackTTL <= 0 {
		o.TrackTTL = 10 * time.Minute
	}
	if o.TrackMax <= 0 {
		o.TrackMax = 100_000
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = 250 * time.Millisecond
	}
	if o.MaxObservedBody <= 0 {
		o.MaxObservedBody = 1 << 20
	}
	if o.ModelsCacheTTL <= 0 {
		o.ModelsCacheTTL = DefaultModelsCacheTTL
	}
}

// Server is the ext_proc server for both filters.
type Server struct {
	extprocv3.UnimplementedExternalProcessorServer

	opt     Options
	sched   Scheduler
	log     *zap.Logger
	m       *metrics
	health  *health
	track   *tracker
	rep     *reporter
	models  modelsCache
	bufPool sync.Pool
	hashes  sync.Pool

	// unauthenticated is set while the scheduler refuses this gateway's
	// token (the last pick answered Unauthenticated).
	unauthenticated atomic.Bool

	stateMu     sync.Mutex
	wasDegraded bool
	wasUnauth   bool
}

// New builds the gateway over sched, registering its metrics on reg.
func New(opt Options, sched Scheduler, reg *prometheus.Registry, log *zap.Logger) *Server {
	opt.defaults()
	s := &Server{opt: opt, sched: sched, log: log}
	s.models.ttl = opt.ModelsCacheTTL
	av, _ := sched.(Availability)
	s.health = &health{avail: av, probeInterval: opt.ProbeInterval}
	s.m = newMetrics(reg, func() float64 {
		if s.Degraded() {
			return 1
		}
		return 0
	}, func() float64 {
		if s.Unauthenticated() {
			return 1
		}
		return 0
	})
	s.track = newTracker(opt.TrackTTL, opt.TrackMax, s.m)
	s.rep = newReporter(sched, s.m, log, 4096, 2, 2*time.Second)
	s.bufPool.New = func() any { b := make([]byte, 0, 4096); return &b }
	s.hashes.New = func() any { h := make([]uint64, 0, 256); return &h }
	return s
}

// Register adds the ext_proc service to g.
func (s *Server) Register(g *grpc.Server) { extprocv3.RegisterExternalProcessorServer(g, s) }

// Degraded reports whether requests currently pass through without a pick
// because the scheduler is unreachable.
func (s *Server) Degraded() bool { return s.health.degraded() }

// Status describes the gateway's state for /readyz: the gateway serves Envoy
// correctly in degraded mode too (every request passes through to round
// robin), so degraded is reported, not turned into unreadiness — a probe
// failing on it would pull every gateway out of service exactly when the
// scheduler is down, and Envoy would then fail open without any gateway.
func (s *Server) Status() string {
	if s.Unauthenticated() {
		return "degraded: unauthenticated: the scheduler refuses this gateway's token (LLMROUTER_TOKEN), requests pass through without a pick (Envoy round robin)"
	}
	if s.Degraded() {
		return "degraded: scheduler unreachable, requests pass through without a pick (Envoy round robin)"
	}
	return "scheduler reachable"
}

// Unauthenticated reports whether the scheduler refuses this gateway's
// token: the gateway then runs degraded, but stays ready (a rotated token
// must not take every Envoy out of service).
func (s *Server) Unauthenticated() bool { return s.unauthenticated.Load() }

// Close stops the report workers.
func (s *Server) Close() { s.rep.close() }

// noteHealth logs degraded-mode transitions once each.
func (s *Server) noteHealth() {
	d, u := s.Degraded(), s.Unauthenticated()
	s.stateMu.Lock()
	changed := d != s.wasDegraded || u != s.wasUnauth
	s.wasDegraded, s.wasUnauth = d, u
	s.stateMu.Unlock()
	if !changed {
		return
	}
	switch {
	case u:
		s.log.Error("scheduler refuses the gateway's token (unauthenticated): degraded mode, requests pass through without a pick; check LLMROUTER_TOKEN")
	case d:
		s.log.Warn("scheduler unreachable: degraded mode, requests pass through without a pick")
	default:
		s.log.Info("scheduler reachable again: picks resume")
	}
}

// Process serves one ext_proc stream (one HTTP request of one filter).
func (s *Server) Process(stream extprocv3.ExternalProcessor_ProcessServer) error {
	first, err := stream.Recv()
	if err != nil {
		return ignoreEnd(err)
	}
	if first.ObservabilityMode || isResponsePhase(first) {
		return s.observe(stream, first)
	}
	return s.blocking(stream, first)
}

func isResponsePhase(m *extprocv3.ProcessingRequest) bool {
	switch m.Request.(type) {
	case *extprocv3.ProcessingRequest_ResponseHeaders, *extprocv3.ProcessingRequest_ResponseBody,
		*extprocv3.ProcessingRequest_ResponseTrailers:
		return true
	}
	return false
}

// ignoreEnd turns the normal ends of a stream (Envoy closing it, the request
// being cancelled) into a clean return.
func ignoreEnd(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
		return nil
	}
	return err
}

// headerValue reads a header value; Envoy fills raw_value, older ones value.
func headerValue(h *corev3.HeaderValue) string {
	if len(h.RawValue) > 0 {
		return string(h.RawValue)
	}
	return h.Value
}

// setHeader overwrites (or adds) a header; the value goes in raw_value, the
// only field current Envoy reads (envoy#31555).
func setHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, RawValue: []byte(v)},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// newRequestID returns a random UUIDv4-shaped id.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}

// GRPCServerOptions are the options the ext_proc gRPC server should run with:
// windows large enough that a buffered prompt of a few hundred KiB crosses in
// one flight instead of waiting on flow-control updates, a receive limit
// above Envoy's buffer limits (a larger body would fail the stream and pass
// through), unlimited concurrent streams (one per HTTP request and filter),
// keepalive that tolerates Envoy's pings, and the gateway's codec and buffer
// pool (Codec, BufferPool: a buffered body is copied once and recycled, no
// buffer is cleared).
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(Codec()),
		experimental.BufferPool(BufferPool()),
		grpc.InitialWindowSize(4 << 20),
		grpc.InitialConnWindowSize(16 << 20),
		grpc.MaxRecvMsgSize(32 << 20),
		grpc.MaxConcurrentStreams(1 << 20),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}
}
