package xds

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	gcplog "github.com/envoyproxy/go-control-plane/pkg/log"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/llmrouter/llmrouter/envoy"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/grpcx"
)

// Endpoint is one routable engine instance.
type Endpoint struct {
	// ID is the instance ID (shown as the host name in Envoy's admin output).
	ID string
	// Address is ip:port, the key override_host matches picks against.
	Address string
}

// Server is the ADS server. Create it with New, feed it with SetEndpoints
// (or FollowRegistry), serve it with Serve or Register.
type Server struct {
	log      *zap.Logger
	cluster  string
	interval time.Duration
	cds      *cachev3.LinearCache
	eds      *cachev3.LinearCache
	mux      *cachev3.MuxCache
	xds      serverv3.Server
	m        *metrics
	cb       *callbacks
	// token, when set, is demanded of every client (llm_scheduler.xds_token).
	token   string
	refused *refusals

	mu       sync.Mutex
	desired  []Endpoint
	pushed   []Endpoint
	lastPush time.Time
	timer    *time.Timer
	closed   bool
	// Until the first endpoint push, an empty set is held back until
	// holdEmptyUntil (see EmptyHold); holdTimer publishes it then.
	published      bool
	holdEmptyUntil time.Time
	holdTimer      *time.Timer
	// edsVersion mirrors the EDS cache's version counter (we are its only
	// writer), so responses can be tied to the update they carry.
	edsVersion uint64
	edsPrefix  string
}

// EmptyHold is how long a starting server keeps an empty endpoint set to
// itself. A scheduler that restarts knows no instance until its agents
// reconnect (within about a second: agent.DefaultBackoffMax); Envoy, reconnecting meanwhile,
// would take an empty set at its word and answer 503 "no healthy upstream"
// for every request, while without an assignment for the cluster it keeps
// the endpoints it has. The first non-empty set is published at once; an
// empty one only after EmptyHold (a fleet that really is empty), below
// Envoy's 15 s initial_fetch_timeout. A state-of-the-world client that
// subscribes meanwhile gets a response without the assignment, which Envoy
// counts as an empty update and keeps its hosts.
const EmptyHold = 10 * time.Second

// New builds the server: the engine cluster from cfg, no endpoint
// assignment until the first SetEndpoints (an empty set waits EmptyHold),
// metrics on reg (a private registry when nil).
func New(cfg config.Config, log *zap.Logger, reg prometheus.Registerer) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	log = log.Named("xds")
	// A per-process version prefix: an Envoy reconnecting to a restarted
	// scheduler presents versions this process never issued, and gets the
	// full state instead of being told it is current.
	instance := strconv.FormatInt(time.Now().UnixNano(), 36)
	opts := envoy.OptionsFromConfig(cfg)
	cluster := envoy.BackendCluster(opts)
	gl := gcpLogger(log)
	s := &Server{
		log:            log,
		cluster:        cfg.Scheduler.ClusterName,
		interval:       cfg.Scheduler.XDSPushInterval,
		m:              newMetrics(reg),
		edsPrefix:      "eds-" + instance + "-",
		holdEmptyUntil: time.Now().Add(EmptyHold),
		token:          cfg.Scheduler.XDSToken,
		refused:        newRefusals(),
	}
	s.cds = cachev3.NewLinearCache(resource.ClusterType,
		cachev3.WithVersionPrefix("cds-"+instance+"-"),
		cachev3.WithInitialResources(map[string]types.Resource{cluster.GetName(): cluster}),
		cachev3.WithLogger(gl))
	s.eds = cachev3.NewLinearCache(resource.EndpointType,
		cachev3.WithVersionPrefix(s.edsPrefix),
		cachev3.WithLogger(gl))
	s.mux = &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return r.GetTypeUrl() },
		Caches: map[string]cachev3.Cache{
			resource.ClusterType:  s.cds,
			resource.EndpointType: s.eds,
		},
	}
	s.cb = newCallbacks(log, s.m, s.edsPrefix)
	s.xds = serverv3.NewServer(context.Background(), &unknownTypes{mux: s.mux, log: log}, s.cb)
	s.m.endpoints.Set(0)
	return s
}

// Register adds the aggregated, cluster and endpoint discovery services
// (state of the world and delta) to gs. The plain EDS service serves an
// Envoy whose ADS belongs to another control plane. The token check is
// Serve's: gs, built by the caller, demands whatever the caller set up.
func (s *Server) Register(gs *grpc.Server) {
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(gs, s.xds)
}

// Serve serves xDS on lis until ctx ends. With llm_scheduler.xds_token every
// call must carry it ("authorization: Bearer <token>", which Envoy sends from
// its bootstrap's initial_metadata); others fail with Unauthenticated.
// Without one the port is open: the streams carry only endpoint addresses
// and are read-only, but anyone reaching the port reads the fleet, so a
// port beyond loopback draws a warning.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	opts := []grpc.ServerOption{
		// Envoy keeps one ADS stream for its lifetime; pings find dead peers.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Stop below returns once every stream handler has: a stream's
		// close (counted and logged) happens before Serve returns, not
		// into whatever runs after it.
		grpc.WaitForHandlers(true),
	}
	if s.token != "" {
		// Outermost: sees the refusals of grpcx's token check below it.
		opts = append(opts, grpc.ChainUnaryInterceptor(s.refusedUnary), grpc.ChainStreamInterceptor(s.refusedStream))
		opts = append(opts, grpcx.TokenInterceptors(s.token)...)
	} else if !loopback(lis.Addr()) {
		s.log.Warn("xds port open to anyone who reaches it: set llm_scheduler.xds_token (LLMROUTER_LLM_SCHEDULER_XDS_TOKEN) and render Envoy's bootstrap with it, or bind llm_scheduler.xds_listen to loopback",
			zap.String("address", lis.Addr().String()))
	}
	gs := grpc.NewServer(opts...)
	s.Register(gs)
	// The standard health service (exempt from the token, like on the
	// scheduler's API port): Kubernetes grpc probes and `llmrouter health`.
	grpcx.RegisterHealth(gs)
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	s.log.Info("xds serving", zap.String("address", lis.Addr().String()), zap.String("cluster", s.cluster), zap.Bool("token", s.token != ""))
	select {
	case <-ctx.Done():
		// ADS streams never end by themselves: GracefulStop would wait forever.
		gs.Stop()
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("xds server on %s: %w", lis.Addr(), err)
	}
}

// Close stops a pending coalesced push; later SetEndpoints calls are ignored.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if s.holdTimer != nil {
		s.holdTimer.Stop()
		s.holdTimer = nil
	}
}

// SetEndpoints replaces the routable set. Unchanged sets push nothing;
// changes within one push interval of the last push are coalesced into one
// push at the end of the interval, carrying the latest set. An address that
// is not ip:port is dropped with a warning (the registry refuses those).
func (s *Server) SetEndpoints(endpoints []Endpoint) {
	set := s.normalize(endpoints)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.desired = set
	if s.timer != nil {
		return // a push is due and will carry this set
	}
	wait := s.interval - time.Since(s.lastPush)
	if s.interval <= 0 || wait <= 0 {
		s.pushLocked()
		return
	}
	s.timer = time.AfterFunc(wait, s.flush)
}

// Endpoints returns the set last pushed.
func (s *Server) Endpoints() []Endpoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pushed)
}

func (s *Server) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.timer = nil
	if !s.closed {
		s.pushLocked()
	}
}

func (s *Server) flushHeld() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holdTimer = nil
	if !s.closed {
		s.pushLocked()
	}
}

func (s *Server) pushLocked() {
	if s.desired == nil || (s.published && slices.Equal(s.desired, s.pushed)) {
		return
	}
	if !s.published && len(s.desired) == 0 {
		if wait := time.Until(s.holdEmptyUntil); wait > 0 {
			if s.holdTimer == nil {
				s.holdTimer = time.AfterFunc(wait, s.flushHeld)
				s.log.Info("no instance yet: holding the empty endpoint set back so a reconnecting Envoy keeps its endpoints",
					zap.String("cluster", s.cluster), zap.Duration("hold", wait))
			}
			return
		}
	}
	if s.holdTimer != nil {
		s.holdTimer.Stop()
		s.holdTimer = nil
	}
	eps := make([]envoy.Endpoint, len(s.desired))
	for i, e := range s.desired {
		eps[i] = envoy.Endpoint{Address: e.Address, Hostname: e.ID}
	}
	cla, err := envoy.LoadAssignment(s.cluster, eps)
	if err != nil {
		// normalize admits only ip:port, so this is a bug; keep the old set.
		s.log.Error("endpoint assignment not built", zap.Error(err))
		return
	}
	start := time.Now()
	s.edsVersion++
	s.cb.updated(s.edsPrefix+strconv.FormatUint(s.edsVersion, 10), start)
	if err := s.eds.UpdateResource(s.cluster, cla); err != nil {
		s.log.Error("endpoint update not applied", zap.Error(err))
		return
	}
	added, removed := diff(s.pushed, s.desired)
	s.pushed = s.desired
	s.published = true
	s.lastPush = start
	s.m.endpoints.Set(float64(len(s.pushed)))
	s.log.Info("endpoints pushed", zap.String("cluster", s.cluster), zap.Int("endpoints", len(s.pushed)),
		zap.Int("added", added), zap.Int("removed", removed))
}

// normalize keeps valid ip:port endpoints, one per address, sorted by address.
func (s *Server) normalize(in []Endpoint) []Endpoint {
	out := make([]Endpoint, 0, len(in))
	for _, e := range in {
		ap, err := netip.ParseAddrPort(e.Address)
		if err != nil || ap.Port() == 0 {
			s.log.Warn("endpoint dropped: address is not ip:port", zap.String("id", e.ID), zap.String("address", e.Address))
			continue
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Endpoint) int {
		if a.Address != b.Address {
			if a.Address < b.Address {
				return -1
			}
			return 1
		}
		if a.ID < b.ID {
			return -1
		} else if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return slices.CompactFunc(out, func(a, b Endpoint) bool {
		if a.Address == b.Address {
			s.log.Warn("endpoint dropped: address already published", zap.String("id", b.ID), zap.String("address", b.Address), zap.String("kept", a.ID))
			return true
		}
		return false
	})
}

func diff(old, cur []Endpoint) (added, removed int) {
	was := make(map[string]bool, len(old))
	for _, e := range old {
		was[e.Address] = true
	}
	for _, e := range cur {
		if !was[e.Address] {
			added++
		}
		delete(was, e.Address)
	}
	return added, len(was)
}

// unknownTypes answers subscriptions to types we do not serve (an Envoy
// configured for LDS over our ADS, say) by never answering, instead of
// failing the whole ADS stream (MuxCache's default), which would make Envoy
// reconnect in a loop and lose CDS and EDS with it.
type unknownTypes struct {
	mux *cachev3.MuxCache
	log *zap.Logger
}

func (u *unknownTypes) known(typeURL string) bool {
	_, ok := u.mux.Caches[typeURL]
	return ok
}

func (u *unknownTypes) CreateWatch(r *cachev3.Request, sub cachev3.Subscription, ch chan cachev3.Response) (func(), error) {
	if !u.known(r.GetTypeUrl()) {
		u.log.Warn("subscription to a type this server does not serve", zap.String("type_url", r.GetTypeUrl()), zap.String("node", r.GetNode().GetId()))
		return func() {}, nil
	}
	return u.mux.CreateWatch(r, sub, ch)
}

func (u *unknownTypes) CreateDeltaWatch(r *cachev3.DeltaRequest, sub cachev3.Subscription, ch chan cachev3.DeltaResponse) (func(), error) {
	if !u.known(r.GetTypeUrl()) {
		u.log.Warn("subscription to a type this server does not serve", zap.String("type_url", r.GetTypeUrl()), zap.String("node", r.GetNode().GetId()))
		return func() {}, nil
	}
	return u.mux.CreateDeltaWatch(r, sub, ch)
}

func (u *unknownTypes) Fetch(ctx context.Context, r *cachev3.Request) (cachev3.Response, error) {
	return u.mux.Fetch(ctx, r)
}

// gcpLogger sends go-control-plane's logs to zap; its Info lines are per
// watch, so they go to debug.
func gcpLogger(l *zap.Logger) gcplog.Logger {
	s := l.Sugar()
	return gcplog.LoggerFuncs{DebugFunc: s.Debugf, InfoFunc: s.Debugf, WarnFunc: s.Warnf, ErrorFunc: s.Errorf}
}
