package standin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
)

// Notice is printed loudly at startup: nobody may mistake the stand-in for
// Envoy.
const Notice = `*****************************************************************
*  THIS IS THE llmrouter TEST STAND-IN, NOT ENVOY.               *
*  It mimics the Envoy behaviour llmrouter relies on, for tests  *
*  on machines without an Envoy binary. Never use it in          *
*  production: run real Envoy with the same bootstrap.           *
*****************************************************************`

// Options adjust a loaded bootstrap for tests.
type Options struct {
	// ListenOverride replaces the listener address (tests use 127.0.0.1:0).
	ListenOverride string
	// AdminOverride replaces the admin address ("" keeps the bootstrap's).
	AdminOverride string
	// ClusterOverrides replace static cluster endpoints by name.
	ClusterOverrides map[string]string
	Logger           *zap.Logger
}

// Server is a running stand-in.
type Server struct {
	cfg       *Config
	log       *zap.Logger
	fleet     *fleet
	ads       *adsClient
	conns     map[string]*grpc.ClientConn
	transport *http.Transport
	lis       net.Listener
	adminLis  net.Listener
	srv       *http.Server
	adminSrv  *http.Server
	ready     chan struct{}
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// New prepares a stand-in for cfg; Start runs it.
func New(cfg *Config, opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	if opts.ListenOverride != "" {
		cfg.Listener.Addr = opts.ListenOverride
	}
	if opts.AdminOverride != "" {
		cfg.Admin = opts.AdminOverride
	}
	for name, addr := range opts.ClusterOverrides {
		sc, ok := cfg.Static[name]
		if !ok {
			return nil, fmt.Errorf("cluster override %q: no static cluster of that name (have %s)", name, strings.Join(sortedKeys(keysOf(cfg.Static)), ", "))
		}
		sc.Addr = addr
	}
	s := &Server{cfg: cfg, log: log, fleet: newFleet(), conns: map[string]*grpc.ClientConn{}, ready: make(chan struct{})}
	s.transport = &http.Transport{
		DialContext:         s.dialUpstream,
		DisableCompression:  true, // never touch the engine's bytes
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     time.Hour,
		ForceAttemptHTTP2:   false,
	}
	return s, nil
}

type dialTimeoutKey struct{}

// connectError marks a failure to connect, which retry_on connect-failure
// (and 5xx, gateway-error, reset) retries.
type connectError struct{ err error }

func (e *connectError) Error() string { return "connection failure: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

func (s *Server) dialUpstream(ctx context.Context, network, addr string) (net.Conn, error) {
	timeout, _ := ctx.Value(dialTimeoutKey{}).(time.Duration)
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, &connectError{err}
	}
	return c, nil
}

func (s *Server) grpcConn(cluster string) (*grpc.ClientConn, error) {
	if c, ok := s.conns[cluster]; ok {
		return c, nil
	}
	sc := s.cfg.Static[cluster]
	// Envoy connects on demand for each new stream; a short reconnect
	// backoff keeps a restarted gateway or scheduler reachable at once.
	c, err := grpc.NewClient("passthrough:///"+sc.Addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: sc.ConnectTimeout,
		}))
	if err != nil {
		return nil, fmt.Errorf("cluster %s (%s): %w", cluster, sc.Addr, err)
	}
	s.conns[cluster] = c
	return c, nil
}

// Start binds the listener and admin, connects to ADS and serves until
// Close. It returns once the addresses are bound.
func (s *Server) Start(ctx context.Context) error {
	s.log.Warn("test stand-in starting: this is NOT Envoy", zap.String("bootstrap", s.cfg.Path))
	for _, f := range s.cfg.Listener.Filters {
		if _, err := s.grpcConn(f.Cluster); err != nil {
			return err
		}
		s.log.Info("ext_proc filter", zap.String("name", f.Name), zap.String("cluster", f.Cluster),
			zap.String("address", s.cfg.Static[f.Cluster].Addr), zap.Bool("observability_mode", f.Observability),
			zap.Bool("failure_mode_allow", f.FailureModeAllow), zap.Duration("message_timeout", f.MessageTimeout),
			zap.Duration("max_message_timeout", f.MaxMessageTimeout), zap.Strings("receiving_namespaces", f.Receiving),
			zap.String("request_body_mode", f.Mode.RequestBody.String()), zap.String("response_body_mode", f.Mode.ResponseBody.String()))
	}
	ctx, cancel := context.WithCancel(ctx)
	s.ctx, s.cancel = ctx, cancel
	lis, err := net.Listen("tcp", s.cfg.Listener.Addr)
	if err != nil {
		cancel()
		return fmt.Errorf("listener %s: %w", s.cfg.Listener.Addr, err)
	}
	s.lis = lis
	if s.cfg.Admin != "" {
		if s.adminLis, err = net.Listen("tcp", s.cfg.Admin); err != nil {
			cancel()
			lis.Close()
			return fmt.Errorf("admin %s: %w", s.cfg.Admin, err)
		}
	}
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: time.Minute, ErrorLog: zap.NewStdLog(s.log.Named("http"))}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.srv.Serve(lis)
	}()
	if s.adminLis != nil {
		s.adminSrv = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = s.adminSrv.Serve(s.adminLis)
		}()
	}
	if ads := s.cfg.ADS; ads != nil {
		conn, err := s.grpcConn(ads.Cluster)
		if err != nil {
			s.Close()
			return err
		}
		s.ads = &adsClient{cfg: ads, node: s.cfg.Node, conn: conn, fleet: s.fleet, log: s.log.Named("ads")}
		s.log.Info("ADS", zap.String("cluster", ads.Cluster), zap.String("address", s.cfg.Static[ads.Cluster].Addr), zap.Bool("delta", ads.Delta))
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.ads.run(ctx)
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.awaitInit(ctx)
	}()
	s.log.Info("test stand-in listening", zap.String("address", s.Addr()), zap.String("admin", s.AdminAddr()))
	return nil
}

// awaitInit mirrors Envoy's initialization: traffic is served once CDS and
// the clusters' first EDS arrived, or initial_fetch_timeout passed. (Envoy
// does not even bind its listeners before that; the stand-in binds at once
// so tests know the port, and holds requests instead.)
func (s *Server) awaitInit(ctx context.Context) {
	defer close(s.ready)
	if s.cfg.ADS == nil || !s.cfg.ADS.CDS {
		return
	}
	deadline := time.Now().Add(s.cfg.ADS.InitialFetchTimeout)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !s.fleet.ready() {
		if time.Now().After(deadline) {
			s.log.Warn("initial fetch timeout: serving without a complete xDS configuration")
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	s.log.Info("initialized from xDS")
}

// Ready is closed once the stand-in serves traffic.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Addr is the bound listener address.
func (s *Server) Addr() string {
	if s.lis == nil {
		return ""
	}
	return s.lis.Addr().String()
}

// AdminAddr is the bound admin address, "" without admin.
func (s *Server) AdminAddr() string {
	if s.adminLis == nil {
		return ""
	}
	return s.adminLis.Addr().String()
}

// Endpoints returns the current EDS hosts of a cluster, sorted.
func (s *Server) Endpoints(cluster string) []Endpoint {
	_, es := s.fleet.cluster(cluster)
	if es == nil {
		return nil
	}
	out := append([]Endpoint(nil), es.list...)
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out
}

// XDSCounts reports ACKs and NACKs sent.
func (s *Server) XDSCounts() (acks, nacks int64) {
	if s.ads == nil {
		return 0, 0
	}
	return s.ads.acks.Load(), s.ads.nacks.Load()
}

// Close stops everything the stand-in started.
func (s *Server) Close() error {
	if s.cancel != nil {
		s.cancel()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var errs []error
	if s.srv != nil {
		if err := s.srv.Shutdown(ctx); err != nil {
			errs = append(errs, s.srv.Close())
		}
	}
	if s.adminSrv != nil {
		_ = s.adminSrv.Close()
	}
	s.wg.Wait()
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.transport.CloseIdleConnections()
	return errors.Join(errs...)
}

func (s *Server) ctxOrBackground() context.Context {
	if s.ctx == nil {
		return context.Background()
	}
	return s.ctx
}
