package main

import (
	"github.com/spf13/cobra"

	"github.com/llmrouter/llmrouter/internal/servers"
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
type gatewayAddrs = servers.GatewayAddrs

// runGateway, extProcToken and extProcServer: internal/servers.
var (
	runGateway    = servers.Gateway
	extProcToken  = servers.ExtProcToken
	extProcServer = servers.ExtProcServer
)
