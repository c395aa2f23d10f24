// Package httpserve is the one HTTP server every role runs beside its main
// work: Prometheus /metrics from the process's own registry, /healthz (the
// process is alive) and /readyz (the role says it can serve), with graceful
// shutdown.
package httpserve

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/llmrouter/llmrouter/internal/buildinfo"
)

// ShutdownGrace bounds graceful shutdown of every server a role runs.
const ShutdownGrace = 5 * time.Second

// NewRegistry returns a Prometheus registry for one process with the Go and
// process collectors and llmrouter_build_info. Each process (and each test)
// gets its own, so nothing registers into a global.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildinfo.Collector())
	return r
}

// Readiness is a role's answer to /readyz: nil when ready, else why not.
type Readiness func() error

// Server serves the observability endpoints.
type Server struct {
	ln    net.Listener
	srv   *http.Server
	mux   *http.ServeMux
	log   *zap.Logger
	mu    sync.Mutex
	ready Readiness
	// detail, when set, adds a line to a ready /readyz answer (a role that is
	// ready but working in a reduced mode says so there).
	detail func() string
}

// Listen binds addr (":0" picks a port) and prepares the endpoints. Ready may
// be nil (never ready until SetReadiness).
func Listen(addr string, reg *prometheus.Registry, log *zap.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, mux: http.NewServeMux(), log: log}
	s.mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	s.mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	s.mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		ready := s.ready
		s.mu.Unlock()
		err := errors.New("starting")
		if ready != nil {
			err = ready()
		}
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: " + err.Error() + "\n"))
			return
		}
		s.mu.Lock()
		detail := s.detail
		s.mu.Unlock()
		if detail != nil {
			if d := detail(); d != "" {
				_, _ = w.Write([]byte("ready: " + d + "\n"))
				return
			}
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	s.srv = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// SetReadiness installs the role's readiness check.
func (s *Server) SetReadiness(r Readiness) {
	s.mu.Lock()
	s.ready = r
	s.mu.Unlock()
}

// SetReadyDetail installs a one-line description added to a ready /readyz
// answer ("ready: <detail>"); the status stays 200.
func (s *Server) SetReadyDetail(d func() string) {
	s.mu.Lock()
	s.detail = d
	s.mu.Unlock()
}

// Handle adds a role-specific endpoint (debug pages and the like).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx ends, then shuts down within ShutdownGrace.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	s.log.Info("http listening", zap.String("addr", s.Addr()))
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		// Requests still running after the grace period are cut off: a
		// stuck client must not keep the process alive.
		_ = s.srv.Close()
		return err
	}
	return nil
}
