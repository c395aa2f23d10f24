package servers

import (
	"context"
	"errors"
	"fmt"
	"net"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/llmrouter/llmrouter/extproc"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/grpcx"
	"github.com/llmrouter/llmrouter/internal/httpserve"
	"github.com/llmrouter/llmrouter/internal/runner"
	"github.com/llmrouter/llmrouter/scheduler"
	"github.com/llmrouter/llmrouter/scheduler/server"
	"github.com/llmrouter/llmrouter/scheduler/verify"
	"github.com/llmrouter/llmrouter/xds"
)

// All-in-one's gateway answers GET /v1/models from the in-process
// scheduler's model list, as a separate gateway does over ListModels.
var _ extproc.ModelLister = (*scheduler.Scheduler)(nil)

// ControlPlaneAddrs are the bound addresses, for tests binding port 0.
// ExtProc is empty without the gateway.
type ControlPlaneAddrs struct{ API, XDS, ExtProc, HTTP string }

// ControlPlane serves the scheduler (agent and gateway API, xDS, HTTP)
// and, withGateway, the ext_proc gateway over the in-process scheduler, until
// ctx ends. Shutdown order: the xDS side first — Envoy keeps its last
// endpoints when the control plane goes away, so the agent streams closing
// afterwards (which empties the registry) must never reach Envoy as an empty
// endpoint set — then the gateway, then the scheduler API and HTTP.
func ControlPlane(ctx context.Context, cfg config.Config, log *zap.Logger, withGateway bool, bound func(ControlPlaneAddrs)) error {
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
		token, err := ExtProcToken(cfg, log)
		if err != nil {
			closeAll()
			return fmt.Errorf("llm_gateway.listen: %w", err)
		}
		if epLn, err = listen("llm_gateway.listen", cfg.Gateway.Listen); err != nil {
			return err
		}
		gw = extproc.New(extproc.OptionsFromConfig(cfg.Gateway), sch, metrics, log.Named("gateway"))
		defer gw.Close()
		ep = ExtProcServer(gw, token, cfg.TokenPrevious)
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

	var g runner.Group
	g.Stage(runner.Runner{Name: "xds", Run: func(ctx context.Context) error {
		follow := make(chan struct{})
		go func() { defer close(follow); xds.FollowRegistry(ctx, sch.Registry(), xs) }()
		err := xs.Serve(ctx, xdsLn)
		<-follow
		xs.Close()
		return stopped(err)
	}})
	if ep != nil {
		g.Stage(runner.GRPC("ext_proc", ep, epLn, httpserve.ShutdownGrace))
	}
	g.Stage(
		runner.Loop("tick", func(ctx context.Context) { sch.Run(ctx, scheduler.TickPeriod) }),
		runner.Runner{Name: "api", Run: func(ctx context.Context) error { return stopped(api.Serve(ctx, apiLn)) }},
		runner.Runner{Name: "http", Run: func(ctx context.Context) error { return stopped(hs.Serve(ctx)) }},
	)
	hs.SetReadiness(func() error { return nil })
	addrs := ControlPlaneAddrs{API: apiLn.Addr().String(), XDS: xdsLn.Addr().String(), HTTP: hs.Addr()}
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
	return g.Run(ctx, func() {
		log.Info(role + " stopping")
		hs.SetReadiness(func() error { return errors.New("shutting down") })
	})
}

// stopped treats a gRPC server's normal stop as no error.
func stopped(err error) error {
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}
