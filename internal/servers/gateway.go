package servers

import (
	"context"
	"errors"
	"fmt"
	"net"

	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/llmrouter/llmrouter/extproc"
	"github.com/llmrouter/llmrouter/extproc/schedclient"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/grpcx"
	"github.com/llmrouter/llmrouter/internal/httpserve"
	"github.com/llmrouter/llmrouter/internal/runner"
)

// GatewayAddrs are the standalone gateway's bound addresses.
type GatewayAddrs struct{ ExtProc, HTTP string }

// runGateway serves the gateway over the gRPC scheduler client until ctx ends.
// Gateway serves the ext_proc gateway beside one Envoy, calling the scheduler
// at llm_gateway.scheduler_address, until ctx ends.
func Gateway(ctx context.Context, cfg config.Config, log *zap.Logger, bound func(GatewayAddrs)) error {
	token, err := ExtProcToken(cfg, log)
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
		bound(GatewayAddrs{ExtProc: ln.Addr().String(), HTTP: hs.Addr()})
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
// ExtProcToken is the token the ext_proc port demands: none on loopback,
// the shared token beyond it; without one, an error unless
// llm_gateway.insecure.
func ExtProcToken(cfg config.Config, log *zap.Logger) (string, error) {
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
// ExtProcServer is the gRPC server of the gateway's ext_proc port.
func ExtProcServer(gw *extproc.Server, token string, previous ...string) *grpc.Server {
	g := grpc.NewServer(append(extproc.GRPCServerOptions(), grpcx.TokenInterceptors(token, previous...)...)...)
	gw.Register(g)
	grpcx.RegisterHealth(g)
	return g
}

// serveGateway serves ext_proc on ln and the HTTP endpoints until ctx ends.
// In-flight streams get a grace period on shutdown; Envoy's
// failure_mode_allow lets later requests through without the gateway.
// serveGateway runs the ext_proc server, then stops it before HTTP: /metrics
// answers until the last stream has ended.
func serveGateway(ctx context.Context, gw *extproc.Server, tokens []string, ln net.Listener, hs *httpserve.Server, log *zap.Logger) error {
	var g runner.Group
	g.Stage(runner.GRPC("ext_proc", ExtProcServer(gw, tokens[0], tokens[1:]...), ln, httpserve.ShutdownGrace))
	g.Stage(runner.Runner{Name: "http", Run: hs.Serve})
	hs.SetReadiness(func() error { return nil })
	hs.SetReadyDetail(gw.Status)
	return g.Run(ctx, func() {
		log.Info("gateway stopping")
		hs.SetReadiness(func() error { return errors.New("shutting down") })
	})
}
