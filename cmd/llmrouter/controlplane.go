package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/llmrouter/llmrouter/extproc"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/grpcx"
	"github.com/llmrouter/llmrouter/internal/httpserve"
	"github.com/llmrouter/llmrouter/scheduler"
	"github.com/llmrouter/llmrouter/scheduler/server"
	"github.com/llmrouter/llmrouter/scheduler/verify"
	"github.com/llmrouter/llmrouter/xds"
)

// serverAddrs are the bound addresses, for tests binding port 0. ExtProc is
// empty without the gateway.
type serverAddrs struct{ API, XDS, ExtProc, HTTP string }

// runControlPlane serves the scheduler (agent and gateway API, xDS, HTTP)
// and, withGateway, the ext_proc gateway over the in-process scheduler, until
// ctx ends. Shutdown order: the xDS side first — Envoy keeps its last
// endpoints when the control plane goes away, so the agent streams closing
// afterwards (which empties the registry) must never reach Envoy as an empty
// endpoint set — then the gateway, then the scheduler API and HTTP.
func runControlPlane(ctx context.Context, cfg config.Config, log *zap.Logger, withGateway bool, bound func(serverAddrs)) error {
	sc := cfg.Scheduler
	if err := grpcx.CheckExposure(sc.Listen, cfg.Token, sc.Insecure); err != nil {
		return fmt.Errorf("llm_scheduler.listen: %w", err)
	}
	metrics := httpserve.NewRegistry()
	deps := scheduler.Deps{Log: log.Named("scheduler"), Metrics: metrics}
	deps.Verify, deps.Probe = verify.ForScheduler(cfg)
	sch, err := scheduler.New(cfg, deps)
	if err != nil {
		return err
	}
	api, err := server.New(cfg, sch, log.Named("api"))
	if err != nil {
		return err
	}

	var lns []net.Listener
	closeAll := func() {
		for _, l := range lns {
			l.Close()
		}
	}
	listen := func(key, addr string) (net.Listener, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		lns = append(lns, l)
		return l, nil
	}
	apiLn, err := listen("llm_scheduler.listen", sc.Listen)
	if err != nil {
		return err
	}
	xdsLn, err := listen("llm_scheduler.xds_listen", sc.XDSListen)
	if err != nil {
		return err
	}
	var (
		gw   *extproc.Server
		ep   *grpc.Server
		epLn net.Listener
	)
	if withGateway {
		token, err := extProcToken(cfg, log)
		if err != nil {
			closeAll()
			return fmt.Errorf("llm_gateway.listen: %w", err)
		}
		if epLn, err = listen("llm_gateway.listen", cfg.Gateway.Listen); err != nil {
			return err
		}
		gw = extproc.New(extproc.OptionsFromConfig(cfg.Gateway), sch, metrics, log.Named("gateway"))
		defer gw.Close()
		ep = extProcServer(gw, token, cfg.TokenPrevious)
	}
	hs, err := httpserve.Listen(sc.HTTPListen, metrics, log.Named("http"))
	if err != nil {
		closeAll()
		return fmt.Errorf("llm_scheduler.http_listen: %w", err)
	}
	// Drain/resume change the fleet: only with the token, or where nobody
	// else can reach them.
	if err := grpcx.CheckExposure(hs.Addr(), cfg.Token, sc.Insecure); err == nil {
		hs.Handle("/admin/", server.AdminHandler(sch, cfg.Token, cfg.TokenPrevious))
	} else {
		log.Warn("admin endpoints disabled: no token and the HTTP port is not loopback", zap.String("http_listen", sc.HTTPListen))
	}
	xs := xds.New(cfg, log, metrics)
	defer xs.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	apiCtx, apiCancel := context.WithCancel(context.Background())
	defer apiCancel()
	var xdsWG, epWG, apiWG sync.WaitGroup
	errs := make(chan error, 4)
	goServe := func(wg *sync.WaitGroup, name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				errs <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	xdsWG.Add(1)
	go func() { defer xdsWG.Done(); xds.FollowRegistry(ctx, sch.Registry(), xs) }()
	goServe(&xdsWG, "xds", func() error { return xs.Serve(ctx, xdsLn) })
	if ep != nil {
		goServe(&epWG, "ext_proc", func() error { return ep.Serve(epLn) })
	}
	apiWG.Add(1)
	go func() { defer apiWG.Done(); sch.Run(apiCtx, scheduler.TickPeriod) }()
	goServe(&apiWG, "api", func() error { return api.Serve(apiCtx, apiLn) })
	goServe(&apiWG, "http", func() error { return hs.Serve(apiCtx) })
	hs.SetReadiness(func() error { return nil })
	addrs := serverAddrs{API: apiLn.Addr().String(), XDS: xdsLn.Addr().String(), HTTP: hs.Addr()}
	role := "scheduler"
	if gw != nil {
		hs.SetReadyDetail(gw.Status)
		addrs.ExtProc = epLn.Addr().String()
		role = "all-in-one"
	}
	log.Info(role+" started", zap.String("policy", sch.PolicyName()), zap.String("api", addrs.API),
		zap.String("xds", addrs.XDS), zap.String("ext_proc", addrs.ExtProc),
		zap.String("http", addrs.HTTP), zap.Bool("token", cfg.Token != ""))
	if bound != nil {
		bound(addrs)
	}
	<-ctx.Done()
	log.Info(role + " stopping")
	hs.SetReadiness(func() error { return errors.New("shutting down") })
	xdsWG.Wait()
	xs.Close()
	if ep != nil {
		grpcx.Stop(ep, httpserve.ShutdownGrace)
		epWG.Wait()
	}
	apiCancel()
	apiWG.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}
