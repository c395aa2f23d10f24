package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/llmrouter/llmrouter/agent"
	"github.com/llmrouter/llmrouter/agent/pdproxy"
	"github.com/llmrouter/llmrouter/internal/buildinfo"
	"github.com/llmrouter/llmrouter/internal/grpcx"
	"github.com/llmrouter/llmrouter/internal/httpserve"
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
	dial, err := grpcx.DialOptions(cfg)
	if err != nil {
		return err
	}
	reg := httpserve.NewRegistry()
	opts := agent.OptionsFromConfig(cfg, dial, buildinfo.Get().Version)
	var a *agent.Agent
	var proxy *pdproxy.Proxy
	if opts.PDProxy {
		proxy, err = pdproxy.New(pdproxy.Options{
			EngineURL: cfg.Agent.EngineURL, Engine: func() string { return a.EngineKind() },
			PrefillTimeout: cfg.Agent.PDPrefillTimeout, APIKey: cfg.Agent.PDAPIKey, Log: log, Registerer: reg,
		})
		if err != nil {
			return err
		}
		opts.OnPrefillFleet = func(peers map[string]int32) {
			proxy.SetFleet(peers)
			log.Info("prefill fleet", zap.Int("instances", len(peers)))
		}
		if _, lp, _ := net.SplitHostPort(cfg.Agent.PDProxyListen); !strings.HasSuffix(cfg.Agent.Advertise, ":"+lp) {
			log.Warn("agent.advertise's port differs from agent.pd_proxy_listen's: the advertised address must reach the pd proxy, not the engine",
				zap.String("advertise", cfg.Agent.Advertise), zap.String("pd_proxy_listen", cfg.Agent.PDProxyListen))
		}
	}
	a, err = agent.New(opts, log, reg)
	if err != nil {
		return err
	}
	hs, err := httpserve.Listen(cfg.Agent.HTTPListen, reg, log)
	if err != nil {
		return fmt.Errorf("agent.http_listen %s: %w", cfg.Agent.HTTPListen, err)
	}
	hs.SetReadiness(a.Ready)

	ctx, stop := signalContext()
	defer stop()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return hs.Serve(gctx) })
	g.Go(func() error { return a.Run(gctx) })
	if proxy != nil {
		ln, err := net.Listen("tcp", cfg.Agent.PDProxyListen)
		if err != nil {
			stop()
			_ = g.Wait()
			return fmt.Errorf("agent.pd_proxy_listen %s: %w", cfg.Agent.PDProxyListen, err)
		}
		srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
		log.Info("pd proxy listening", zap.String("addr", ln.Addr().String()), zap.String("engine_url", cfg.Agent.EngineURL))
		g.Go(func() error {
			go func() {
				<-gctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), httpserve.ShutdownGrace)
				defer cancel()
				_ = srv.Shutdown(sctx)
			}()
			if err := srv.Serve(ln); err != http.ErrServerClosed {
				return err
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil && err != context.Canceled {
		return err
	}
	return nil
}
