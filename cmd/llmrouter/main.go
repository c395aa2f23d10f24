// Command llmrouter is the one binary of the project: every role (scheduler,
// gateway, agent, all-in-one) and every tool (bootstrap, enginesim, bench) is a
// subcommand. Subcommands are thin wiring; the behaviour lives in the packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/llmrouter/llmrouter/internal/buildinfo"
	"github.com/llmrouter/llmrouter/internal/config"
	"github.com/llmrouter/llmrouter/internal/logging"
	"github.com/llmrouter/llmrouter/scheduler"
)

var rootCmd = &cobra.Command{
	Use:   "llmrouter",
	Short: "LLM-aware routing for fleets of inference engines behind Envoy",
	Long: `llmrouter decides which inference engine instance serves each request, using
queue depth, KV-cache fill and prefix-cache locality, and keeps Envoy's view of the
fleet live over xDS. See README.md and docs/.`,
	SilenceUsage:  true,
	SilenceErrors: true,
}

func init() {
	pf := rootCmd.PersistentFlags()
	pf.String("config", "", "configuration file (YAML or JSON)")
	pf.String("log-level", "", "log level: debug, info, warn, error (default info)")
	pf.String("log-format", "", "log format: json or console (default json)")
	// --version and `version` print the same line: the version and revision
	// set by the Makefile or Dockerfile (else Go's embedded build information)
	// and the Go version.
	rootCmd.Version = buildinfo.Get().Version
	rootCmd.SetVersionTemplate(buildinfo.Get().String() + "\n")
	rootCmd.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version, VCS revision and Go version of this build",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), buildinfo.Get().String())
		},
	})
}

// loadConfig reads the configuration for cmd: --config file, environment, the
// global log flags, then the command's own flags bound to keys.
func loadConfig(cmd *cobra.Command, bindings map[string]string) (config.Config, error) {
	file, _ := cmd.Flags().GetString("config")
	var fb []config.FlagBinding
	for flag, key := range map[string]string{"log-level": "log_level", "log-format": "log_format"} {
		if f := cmd.Flags().Lookup(flag); f != nil && f.Changed {
			fb = append(fb, config.FlagBinding{Key: key, Flag: f})
		}
	}
	for flag, key := range bindings {
		f := cmd.Flags().Lookup(flag)
		if f == nil {
			return config.Config{}, fmt.Errorf("internal: flag --%s is not defined", flag)
		}
		if f.Changed {
			fb = append(fb, config.FlagBinding{Key: key, Flag: f})
		}
	}
	cfg, err := config.Load(file, fb)
	if err != nil {
		return cfg, err
	}
	// Policy names are the scheduling framework's: checked here, for the
	// commands that run or show a scheduler, so a bad name or
	// endpoint_picker_config stops startup like any other bad key.
	switch cmd.Name() {
	case "scheduler", "all-in-one", "print", "bench":
		if err := scheduler.CheckPolicies(cfg); err != nil {
			return cfg, err
		}
	}
	return cfg, nil
}

// setup loads the configuration and builds the logger.
func setup(cmd *cobra.Command, bindings map[string]string) (config.Config, *zap.Logger, error) {
	cfg, err := loadConfig(cmd, bindings)
	if err != nil {
		return cfg, nil, err
	}
	log, err := logging.New(cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return cfg, nil, err
	}
	for _, w := range config.UnknownEnv(os.Environ()) {
		log.Warn(w)
	}
	return cfg, log, nil
}

// signalContext ends on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// exitError carries a specific exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func main() {
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "llmrouter:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}
