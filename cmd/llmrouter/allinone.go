package main

import (
	"context"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/llmrouter/llmrouter/internal/config"
	_ "github.com/llmrouter/llmrouter/scheduler/policy/plugins/all" // every plugin and policy, by name
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
				"policy": "llm_scheduler.policy", "insecure": "llm_scheduler.insecure", "endpoint-picker-config": "llm_scheduler.endpoint_picker_config",
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
	f.String("endpoint-picker-config", "", "an llm-d / Gateway API Inference Extension EndpointPickerConfig file; each scheduling profile becomes a policy named after it")
	f.Bool("insecure", false, "allow the scheduler API beyond loopback without a token")
	rootCmd.AddCommand(cmd)
}

// runAllInOne serves the scheduler, xDS and the gateway in one process until
// ctx ends (controlplane.go).
func runAllInOne(ctx context.Context, cfg config.Config, log *zap.Logger, bound func(serverAddrs)) error {
	return runControlPlane(ctx, cfg, log, true, bound)
}
