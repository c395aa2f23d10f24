package servers

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/llmrouter/llmrouter/agent"
	"github.com/llmrouter/llmrouter/agent/pdproxy"
	"github.com/llmrouter/llmrouter/internal/buildinfo"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/grpcx"
	"github.com/llmrouter/llmrouter/internal/httpserve"
)

// Agent runs the sidecar beside one engine — its scheduler stream, its
// HTTP port and, with agent.pd_proxy_listen, the pd proxy — until ctx ends.
// They run and stop together: the stream going away orphans the instance,
// the proxy finishes its requests within the shutdown grace.
func Agent(ctx context.Context, cfg config.Config, log *zap.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dial, err := grpcx.DialOptions(cfg)
	if err != nil {
		return err
	}
	reg := httpserve.NewRegistry()
	opts := agent.OptionsFromConfig(cfg, dial, buildinfo.Get().Version)
	var a *agent.Agent
	var proxy *pdproxy.Proxy
	if opts.PDProxy {
		proxy, err = pdproxy.New(pdproxy.Options{
			EngineURL: cfg.Agent.EngineURL, Engine: func() string { return a.EngineKind() },
			PrefillTimeout: cfg.Agent.PDPrefillTimeout, APIKey: cfg.Agent.PDAPIKey, Log: log, Registerer: reg,
		})
		if err != nil {
			return err
		}
		opts.OnPrefillFleet = func(peers map[string]int32) {
			proxy.SetFleet(peers)
			log.Info("prefill fleet", zap.Int("instances", len(peers)))
		}
		if _, lp, _ := net.SplitHostPort(cfg.Agent.PDProxyListen); !strings.HasSuffix(cfg.Agent.Advertise, ":"+lp) {
			log.Warn("agent.advertise's port differs from agent.pd_proxy_listen's: the advertised address must reach the pd proxy, not the engine",
				zap.String("advertise", cfg.Agent.Advertise), zap.String("pd_proxy_listen", cfg.Agent.PDProxyListen))
		}
	}
	a, err = agent.New(opts, log, reg)
	if err != nil {
		return err
	}
	hs, err := httpserve.Listen(cfg.Agent.HTTPListen, reg, log)
	if err != nil {
		return fmt.Errorf("agent.http_listen %s: %w", cfg.Agent.HTTPListen, err)
	}
	hs.SetReadiness(a.Ready)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return hs.Serve(gctx) })
	g.Go(func() error { return a.Run(gctx) })
	if proxy != nil {
		ln, err := net.Listen("tcp", cfg.Agent.PDProxyListen)
		if err != nil {
			cancel()
			_ = g.Wait()
			return fmt.Errorf("agent.pd_proxy_listen %s: %w", cfg.Agent.PDProxyListen, err)
		}
		srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
		log.Info("pd proxy listening", zap.String("addr", ln.Addr().String()), zap.String("engine_url", cfg.Agent.EngineURL))
		g.Go(func() error {
			go func() {
				<-gctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), httpserve.ShutdownGrace)
				defer cancel()
				_ = srv.Shutdown(sctx)
			}()
			if err := srv.Serve(ln); err != http.ErrServerClosed {
				return err
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil && err != context.Canceled {
		return err
	}
	return nil
}
