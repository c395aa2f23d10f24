package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/llmrouter/llmrouter/extproc"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/grpcx"
	"github.com/llmrouter/llmrouter/internal/httpserve"
	"github.com/llmrouter/llmrouter/scheduler"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/all" // every policy, by name
	"github.com/llmrouter/llmrouter/scheduler/server"
	"github.com/llmrouter/llmrouter/xds"
)

func init() {
	cmd := &cobra.Command{
		Use:   "all-in-one",
		Short: "Run scheduler, xDS and gateway in one process (the single-machine default)",
		Long: `Runs the scheduler (agent and gateway API on llm_scheduler.listen), the ADS server
Envoy follows (llm_scheduler.xds_listen) and the ext_proc gateway (llm_gateway.listen)
in one process; the gateway asks the scheduler in-process, so it can never be
degraded by a lost connection. One HTTP server (llm_scheduler.http_listen) serves
/metrics for all three, /healthz, /readyz and /admin.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := setup(cmd, map[string]string{
				"policy": "llm_scheduler.policy", "insecure": "llm_scheduler.insecure",
			})
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			ctx, stop := signalContext()
			defer stop()
			return runAllInOne(ctx, cfg, log, nil)
		},
	}
	f := cmd.Flags()
	f.String("policy", "", "scheduling policy (default prefix-cache)")
	f.Bool("insecure", false, "allow the scheduler API beyond loopback without a token")
	rootCmd.AddCommand(cmd)
}

// allInOneAddrs are the bound addresses, for tests binding port 0.
type allInOneAddrs struct{ API, XDS, ExtProc, HTTP string }

// runAllInOne serves every server role until ctx ends. Shutdown order: the
// xDS side first (Envoy keeps its last endpoints rather than seeing the fleet
// empty as agents disconnect), then the gateway, then the scheduler API.
func runAllInOne(ctx context.Context, cfg config.Config, log *zap.Logger, bound func(allInOneAddrs)) error {
	sc := cfg.Scheduler
	if err := grpcx.CheckExposure(sc.Listen, cfg.Token, sc.Insecure); err != nil {
		return fmt.Errorf("llm_scheduler.listen: %w", err)
	}
	metrics := httpserve.NewRegistry()
	sch, err := scheduler.New(cfg, scheduler.Deps{Log: log.Named("scheduler"), Metrics: metrics})
	if err != nil {
		return err
	}
	api, err := server.New(cfg, sch, log.Named("api"))
	if err != nil {
		return err
	}
	gw := extproc.New(extproc.OptionsFromConfig(cfg.Gateway), sch, metrics, log.Named("gateway"))
	defer gw.Close()

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
	epLn, err := listen("llm_gateway.listen", cfg.Gateway.Listen)
	if err != nil {
		return err
	}
	hs, err := httpserve.Listen(sc.HTTPListen, metrics, log.Named("http"))
	if err != nil {
		closeAll()
		return fmt.Errorf("llm_scheduler.http_listen: %w", err)
	}
	if err := grpcx.CheckExposure(hs.Addr(), cfg.Token, sc.Insecure); err == nil {
		hs.Handle("/admin/", server.AdminHandler(sch, cfg.Token))
	} else {
		log.Warn("admin endpoints disabled: no token and the HTTP port is not loopback", zap.String("http_listen", sc.HTTPListen))
	}
	xs := xds.New(cfg, log, metrics)
	defer xs.Close()
	ep := extProcServer(gw)

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
	goServe(&epWG, "ext_proc", func() error { return ep.Serve(epLn) })
	apiWG.Add(1)
	go func() { defer apiWG.Done(); sch.Run(apiCtx, scheduler.TickPeriod) }()
	goServe(&apiWG, "api", func() error { return api.Serve(apiCtx, apiLn) })
	goServe(&apiWG, "http", func() error { return hs.Serve(apiCtx) })
	hs.SetReadiness(func() error { return nil })
	hs.SetReadyDetail(gw.Status)
	log.Info("all-in-one started", zap.String("policy", sch.PolicyName()), zap.String("api", apiLn.Addr().String()),
		zap.String("xds", xdsLn.Addr().String()), zap.String("ext_proc", epLn.Addr().String()),
		zap.String("http", hs.Addr()), zap.Bool("token", cfg.Token != ""))
	if bound != nil {
		bound(allInOneAddrs{API: apiLn.Addr().String(), XDS: xdsLn.Addr().String(), ExtProc: epLn.Addr().String(), HTTP: hs.Addr()})
	}
	<-ctx.Done()
	log.Info("all-in-one stopping")
	hs.SetReadiness(func() error { return errors.New("shutting down") })
	xdsWG.Wait()
	xs.Close()
	stopped := make(chan struct{})
	go func() { ep.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(httpserve.ShutdownGrace):
		ep.Stop()
	}
	epWG.Wait()
	apiCancel()
	apiWG.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}
