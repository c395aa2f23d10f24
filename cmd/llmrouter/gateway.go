package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/llmrouter/llmrouter/extproc"
	"github.com/llmrouter/llmrouter/extproc/schedclient"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/grpcx"
	"github.com/llmrouter/llmrouter/internal/httpserve"
)

func init() {
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run the gateway: the Envoy ext_proc server beside each Envoy",
		Long: `Runs the ext_proc server Envoy calls for both llmrouter filters (llm_gateway.listen):
the blocking filter gets each request's headers and buffered body and answers with
the scheduler's pick (header and envoy.lb metadata x-gateway-destination-endpoint);
the observability filter streams responses for TTFT, TPOT and token usage.

When the scheduler (llm_gateway.scheduler_address) is unreachable the gateway
answers at once without a pick, so Envoy round-robins; it notices recovery by
itself. /metrics, /healthz and /readyz are on llm_gateway.http_listen; /readyz
stays 200 in degraded mode and says so in its body.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := setup(cmd, map[string]string{
				"listen": "llm_gateway.listen", "scheduler": "llm_gateway.scheduler_address",
				"http-listen": "llm_gateway.http_listen", "insecure": "llm_gateway.insecure",
			})
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			ctx, stop := signalContext()
			defer stop()
			return runGateway(ctx, cfg, log, nil)
		},
	}
	f := cmd.Flags()
	f.String("listen", "", "ext_proc gRPC address Envoy calls (default 127.0.0.1:9002; beyond loopback the token is demanded)")
	f.String("scheduler", "", "scheduler API address host:port (default 127.0.0.1:18001)")
	f.String("http-listen", "", "/metrics, /healthz, /readyz (default 127.0.0.1:9091)")
	f.Bool("insecure", false, "allow the ext_proc port beyond loopback without a token (llm_gateway.insecure)")
	rootCmd.AddCommand(cmd)
}

// gatewayAddrs are the bound addresses, for tests binding port 0.
type gatewayAddrs struct{ ExtProc, HTTP string }

// runGateway serves the gateway over the gRPC scheduler client until ctx ends.
func runGateway(ctx context.Context, cfg config.Config, log *zap.Logger, bound func(gatewayAddrs)) error {
	token, err := extProcToken(cfg, log)
	if err != nil {
		return fmt.Errorf("llm_gateway.listen: %w", err)
	}
	metrics := httpserve.NewRegistry()
	client, err := schedclient.Dial(cfg, cfg.Gateway.SchedulerAddress, log.Named("schedclient"))
	if err != nil {
		return fmt.Errorf("llm_gateway.scheduler_address: %w", err)
	}
	defer client.Close()
	gw := extproc.New(extproc.OptionsFromConfig(cfg.Gateway), client, metrics, log.Named("gateway"))
	defer gw.Close()
	hs, err := httpserve.Listen(cfg.Gateway.HTTPListen, metrics, log.Named("http"))
	if err != nil {
		return fmt.Errorf("llm_gateway.http_listen: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Gateway.Listen)
	if err != nil {
		return fmt.Errorf("llm_gateway.listen: %w", err)
	}
	log.Info("gateway started", zap.String("ext_proc", ln.Addr().String()), zap.String("http", hs.Addr()),
		zap.String("scheduler", cfg.Gateway.SchedulerAddress))
	if bound != nil {
		bound(gatewayAddrs{ExtProc: ln.Addr().String(), HTTP: hs.Addr()})
	}
	return serveGateway(ctx, gw, []string{token, cfg.TokenPrevious}, ln, hs, log)
}

// extProcToken applies the gateway's exposure rule to llm_gateway.listen and
// returns the token Envoy must present ("" for none). On loopback only the
// Envoy beside the gateway reaches it, and nothing is demanded. Beyond
// loopback the shared token is demanded (llmrouter bootstrap renders it into
// the ext_proc filters' initial_metadata); without one the gateway refuses to
// start unless llm_gateway.insecure is set: a forged ext_proc client could
// otherwise take picks and inflate in-flight load.
func extProcToken(cfg config.Config, log *zap.Logger) (string, error) {
	listen := cfg.Gateway.Listen
	switch {
	case config.Loopback(listen):
		return "", nil
	case cfg.Token != "":
		return cfg.Token, nil
	case cfg.Gateway.Insecure:
		log.Warn("ext_proc port open to anyone who reaches it (llm_gateway.insecure): any client can take picks",
			zap.String("listen", listen))
		return "", nil
	}
	return "", fmt.Errorf("refusing to listen on %s without a token: set %s (llmrouter bootstrap then renders it into Envoy's ext_proc filters), "+
		"bind to 127.0.0.1 beside Envoy, or set llm_gateway.insecure (LLMROUTER_LLM_GATEWAY_INSECURE=true) to accept unauthenticated ext_proc clients",
		listen, grpcx.TokenEnv)
}

// extProcServer is the gRPC server Envoy's ext_proc filters call; with a
// token (extProcToken) every stream but the health service's must present
// it, others get Unauthenticated.
func extProcServer(gw *extproc.Server, token string, previous ...string) *grpc.Server {
	g := grpc.NewServer(append(extproc.GRPCServerOptions(), grpcx.TokenInterceptors(token, previous...)...)...)
	gw.Register(g)
	grpcx.RegisterHealth(g)
	return g
}

// serveGateway serves ext_proc on ln and the HTTP endpoints until ctx ends.
// In-flight streams get a grace period on shutdown; Envoy's
// failure_mode_allow lets later requests through without the gateway.
func serveGateway(ctx context.Context, gw *extproc.Server, tokens []string, ln net.Listener, hs *httpserve.Server, log *zap.Logger) error {
	g := extProcServer(gw, tokens[0], tokens[1:]...)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := g.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errs <- fmt.Errorf("ext_proc: %w", err)
			cancel()
		}
	}()
	go func() {
		defer wg.Done()
		if err := hs.Serve(ctx); err != nil {
			errs <- fmt.Errorf("http: %w", err)
			cancel()
		}
	}()
	hs.SetReadiness(func() error { return nil })
	hs.SetReadyDetail(gw.Status)
	<-ctx.Done()
	log.Info("gateway stopping")
	hs.SetReadiness(func() error { return errors.New("shutting down") })
	grpcx.Stop(g, httpserve.ShutdownGrace)
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}
