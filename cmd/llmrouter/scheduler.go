package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

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
		Use:   "scheduler",
		Short: "Run the scheduler: registry, policies, admission queue, agent/gateway API, xDS",
		Long: `Runs the global scheduler: the live registry fed by agents, the scheduling policy,
the admission queue, the gRPC API for agents and gateways (llm_scheduler.listen),
the ADS server Envoy follows (llm_scheduler.xds_listen), and /metrics, /healthz,
/readyz and /admin/{drain,resume,instances} on llm_scheduler.http_listen.

Without a token (LLMROUTER_TOKEN) it refuses to listen beyond loopback unless
--insecure is given.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := setup(cmd, map[string]string{
				"policy": "llm_scheduler.policy", "listen": "llm_scheduler.listen",
				"xds-listen": "llm_scheduler.xds_listen", "http-listen": "llm_scheduler.http_listen",
				"insecure": "llm_scheduler.insecure",
			})
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			ctx, stop := signalContext()
			defer stop()
			return runScheduler(ctx, cfg, log, nil)
		},
	}
	f := cmd.Flags()
	f.String("policy", "", "scheduling policy: "+strings.Join(config.Policies, ", ")+" (default prefix-cache)")
	f.String("listen", "", "gRPC API for agents and gateways (default :18001)")
	f.String("xds-listen", "", "ADS server for Envoy (default :18000)")
	f.String("http-listen", "", "/metrics, /healthz, /readyz, /admin (default :9090)")
	f.Bool("insecure", false, "allow listening beyond loopback without a token")
	rootCmd.AddCommand(cmd)
}

// schedulerAddrs are the bound addresses, for tests binding port 0.
type schedulerAddrs struct{ API, XDS, HTTP string }

// runScheduler serves until ctx ends, then shuts everything down gracefully.
func runScheduler(ctx context.Context, cfg config.Config, log *zap.Logger, bound func(schedulerAddrs)) error {
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
	apiLn, err := net.Listen("tcp", sc.Listen)
	if err != nil {
		return fmt.Errorf("llm_scheduler.listen: %w", err)
	}
	xdsLn, err := net.Listen("tcp", sc.XDSListen)
	if err != nil {
		apiLn.Close()
		return fmt.Errorf("llm_scheduler.xds_listen: %w", err)
	}
	hs, err := httpserve.Listen(sc.HTTPListen, metrics, log.Named("http"))
	if err != nil {
		apiLn.Close()
		xdsLn.Close()
		return fmt.Errorf("llm_scheduler.http_listen: %w", err)
	}
	// Drain/resume change the fleet: only with the token, or where nobody
	// else can reach them.
	if err := grpcx.CheckExposure(hs.Addr(), cfg.Token, sc.Insecure); err == nil {
		hs.Handle("/admin/", server.AdminHandler(sch, cfg.Token))
	} else {
		log.Warn("admin endpoints disabled: no token and the HTTP port is not loopback", zap.String("http_listen", sc.HTTPListen))
	}
	xs := xds.New(cfg, log, metrics)
	defer xs.Close()

	// Envoy keeps its last EDS when the control plane goes away, so the xDS
	// side stops first: the agent streams closing afterwards (which empties
	// the registry) must never reach Envoy as an empty endpoint set.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	apiCtx, apiCancel := context.WithCancel(context.Background())
	defer apiCancel()
	var xdsWG, apiWG sync.WaitGroup
	errs := make(chan error, 3)
	goServe := func(wg *sync.WaitGroup, name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	xdsWG.Add(1)
	go func() { defer xdsWG.Done(); xds.FollowRegistry(ctx, sch.Registry(), xs) }()
	goServe(&xdsWG, "xds", func() error { return xs.Serve(ctx, xdsLn) })
	apiWG.Add(1)
	go func() { defer apiWG.Done(); sch.Run(apiCtx, scheduler.TickPeriod) }()
	goServe(&apiWG, "api", func() error { return api.Serve(apiCtx, apiLn) })
	goServe(&apiWG, "http", func() error { return hs.Serve(apiCtx) })
	hs.SetReadiness(func() error { return nil })
	log.Info("scheduler started", zap.String("policy", sch.PolicyName()), zap.String("api", apiLn.Addr().String()),
		zap.String("xds", xdsLn.Addr().String()), zap.String("http", hs.Addr()), zap.Bool("token", cfg.Token != ""))
	if bound != nil {
		bound(schedulerAddrs{API: apiLn.Addr().String(), XDS: xdsLn.Addr().String(), HTTP: hs.Addr()})
	}
	<-ctx.Done()
	log.Info("scheduler stopping")
	hs.SetReadiness(func() error { return errors.New("shutting down") })
	xdsWG.Wait()
	xs.Close()
	apiCancel()
	apiWG.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}
