package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmrouter/llmrouter/bootstrap"
	"github.com/llmrouter/llmrouter/envoy"
	"github.com/llmrouter/llmrouter/internal/config"
)

func init() {
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Print an Envoy bootstrap for llmrouter (YAML)",
		Long: `Prints the Envoy bootstrap: a listener with both ext_proc filters and the routes,
admin on loopback, the xDS and ext_proc clusters, and ADS for the engine cluster.
With --existing-envoy it prints what to add to an Envoy that has a configuration
of its own. With llm_scheduler.xds_token set (LLMROUTER_LLM_SCHEDULER_XDS_TOKEN),
Envoy presents it to the xDS server on every stream, and the output holds that
secret. Likewise the shared token (LLMROUTER_TOKEN) when the gateway is beyond
loopback (llm_gateway.listen, or --extproc): the gateway demands it there. "bootstrap validate FILE..." checks Envoy YAML or JSON files.`,
		Args: cobra.NoArgs,
		RunE: runBootstrap,
	}
	f := cmd.Flags()
	f.String("xds", "", "the scheduler's xDS address Envoy dials (default: 127.0.0.1 and llm_scheduler.xds_listen's port)")
	f.String("extproc", "", "the gateway's ext_proc address Envoy dials (default: 127.0.0.1 and llm_gateway.listen's port)")
	f.String("listen", "0.0.0.0:8080", "Envoy's data-plane listener")
	f.String("admin", "127.0.0.1:9901", "Envoy's admin address (keep it on loopback)")
	f.Bool("delta", false, "use incremental xDS (DELTA_GRPC) instead of state of the world")
	f.String("node-id", "llmrouter-envoy", "node id Envoy presents to the xDS server")
	f.String("node-cluster", "llmrouter", "node cluster Envoy presents to the xDS server")
	f.Bool("upstream-http2", false, "speak HTTP/2 (h2c) to engines instead of HTTP/1.1")
	f.Bool("existing-envoy", false, "print the pieces to add to an existing Envoy configuration instead")
	f.Int("retry-count", 0, "retries per request over the pick's fallbacks (llm_gateway.retry_count)")
	f.Duration("wait-schedule-timeout", 0, "longest queue wait; max_message_timeout is 1s more (llm_gateway.wait_schedule_timeout)")

	validate := &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check Envoy bootstrap files (YAML or JSON) against Envoy's API; names the failing field",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			failed := 0
			for _, file := range args {
				if _, err := envoy.LoadBootstrapFile(file); err != nil {
					failed++
					fmt.Fprintln(cmd.ErrOrStderr(), err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", file)
			}
			if failed > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d of %d files invalid", failed, len(args))}
			}
			return nil
		},
	}
	cmd.AddCommand(validate)
	rootCmd.AddCommand(cmd)
}

func runBootstrap(cmd *cobra.Command, _ []string) error {
	cfg, err := loadConfig(cmd, map[string]string{
		"retry-count":           "llm_gateway.retry_count",
		"wait-schedule-timeout": "llm_gateway.wait_schedule_timeout",
	})
	if err != nil {
		return err
	}
	o := bootstrap.OptionsFromConfig(cfg)
	f := cmd.Flags()
	str := func(name string, dst *string) {
		if v, _ := f.GetString(name); v != "" {
			*dst = v
		}
	}
	str("xds", &o.XDSAddress)
	str("extproc", &o.ExtProcAddress)
	if !config.Loopback(o.ExtProcAddress) {
		// A gateway Envoy reaches beyond loopback listens beyond it, where it
		// demands the shared token.
		o.Envoy.ExtProcToken = cfg.Token
	}
	str("listen", &o.Envoy.Listen)
	str("admin", &o.AdminAddress)
	str("node-id", &o.NodeID)
	str("node-cluster", &o.NodeCluster)
	o.Delta, _ = f.GetBool("delta")
	o.Envoy.UpstreamHTTP2, _ = f.GetBool("upstream-http2")
	if o.Envoy.WaitScheduleTimeout < 0 {
		o.Envoy.WaitScheduleTimeout = time.Duration(0)
	}
	render := bootstrap.Render
	if existing, _ := f.GetBool("existing-envoy"); existing {
		render = bootstrap.RenderExistingEnvoy
	}
	out, err := render(o)
	if err != nil {
		return err
	}
	_, err = cmd.OutOrStdout().Write(out)
	return err
}
