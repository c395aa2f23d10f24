package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/llmrouter/llmrouter/agent"
	"github.com/llmrouter/llmrouter/internal/servers"
)

func init() {
	agentCmd := &cobra.Command{
		Use:   "agent --engine-url URL --advertise IP:PORT --scheduler ADDR",
		Short: "Run the sidecar beside one inference engine: detect it, scrape it, register and report to the scheduler",
		Args:  cobra.NoArgs,
		RunE:  runAgent,
	}
	f := agentCmd.Flags()
	f.String("engine-url", "", "the engine's base URL (agent.engine_url, default http://127.0.0.1:8000)")
	f.String("advertise", "", "ip:port Envoy reaches the engine at (agent.advertise)")
	f.String("scheduler", "", "the scheduler's API host:port (agent.scheduler_address)")
	f.String("role", "", "both, prefill or decode (agent.role, default both)")
	f.String("engine", "", "engine kind, empty to detect: vllm, sglang, bladellm, trtllm, tgi, llamacpp, lmdeploy (llm_gateway.infer_backend)")
	f.String("pd-proxy", "", "decode/both instances: run the prefill/decode proxy on this host:port; --advertise is then the proxy's address (agent.pd_proxy_listen)")
	f.Int("bootstrap-port", 0, "SGLang prefill instances: the engine's KV bootstrap port, registered for decode instances (agent.bootstrap_port)")

	inspectCmd := &cobra.Command{
		Use:   "inspect --metrics-file F [--engine auto|NAME]",
		Short: "Print the unified report of a saved /metrics dump as JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			file, _ := cmd.Flags().GetString("metrics-file")
			engine, _ := cmd.Flags().GetString("engine")
			if file == "" {
				return &exitError{code: 1, err: fmt.Errorf("--metrics-file is required")}
			}
			data, err := os.ReadFile(file)
			if err != nil {
				return &exitError{code: 1, err: err}
			}
			out, err := agent.InspectJSON(data, engine)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("%s: %w", file, err)}
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	inspectCmd.Flags().String("metrics-file", "", "a saved /metrics page (Prometheus text or OpenMetrics)")
	inspectCmd.Flags().String("engine", "auto", "auto to detect, or the engine kind")
	agentCmd.AddCommand(inspectCmd)
	rootCmd.AddCommand(agentCmd)
}

func runAgent(cmd *cobra.Command, _ []string) error {
	cfg, log, err := setup(cmd, map[string]string{
		"engine-url":     "agent.engine_url",
		"advertise":      "agent.advertise",
		"scheduler":      "agent.scheduler_address",
		"role":           "agent.role",
		"engine":         "llm_gateway.infer_backend",
		"pd-proxy":       "agent.pd_proxy_listen",
		"bootstrap-port": "agent.bootstrap_port",
	})
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	ctx, stop := signalContext()
	defer stop()
	return servers.Agent(ctx, cfg, log)
}
