package main

import (
	"context"
	"strings"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/scheduler/framework"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/all" // every plugin and policy, by name
	_ "github.com/llmrouter/llmrouter/sim/peers"                    // peer-cache-aware, peer-scorer: built-in profiles (two configuration files)
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
				"insecure": "llm_scheduler.insecure", "endpoint-picker-config": "llm_scheduler.endpoint_picker_config",
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
	f.String("policy", "", "scheduling policy or profile: "+strings.Join(framework.BuiltinProfiles(), ", ")+", or a profile of --endpoint-picker-config (default prefix-cache)")
	f.String("endpoint-picker-config", "", "an llm-d / Gateway API Inference Extension EndpointPickerConfig file; each scheduling profile becomes a policy named after it")
	f.String("listen", "", "gRPC API for agents and gateways (default 127.0.0.1:18001)")
	f.String("xds-listen", "", "ADS server for Envoy (default 127.0.0.1:18000)")
	f.String("http-listen", "", "/metrics, /healthz, /readyz, /admin (default 127.0.0.1:9090)")
	f.Bool("insecure", false, "allow listening beyond loopback without a token")
	rootCmd.AddCommand(cmd)
}

// runScheduler serves the scheduler until ctx ends (controlplane.go).
func runScheduler(ctx context.Context, cfg config.Config, log *zap.Logger, bound func(serverAddrs)) error {
	return runControlPlane(ctx, cfg, log, false, bound)
}
